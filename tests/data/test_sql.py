"""SQL sources against a real SQLite file (and PostgreSQL when KEEL_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.config import IncrementalConfig, SourceConfig, load_config
from keel.data import ingest, read_snapshot, read_source
from keel.data.sources import source_identity
from keel.errors import DataValidationError

from .conftest import Stores


def _fill(engine: sa.Engine, table: str, start: int, stop: int) -> None:
    rows = [
        {"id": i, "city": " Oslo " if i % 2 else "?", "note": None if i < 150 else f"n{i}"}
        for i in range(start, stop)
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {table} (id, city, note) VALUES (:id, :city, :note)"), rows
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database URL and the name of an empty events table in it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'source.db'}"
    else:
        url = os.environ.get("KEEL_TEST_POSTGRES_URL", "")
        if not url:
            pytest.skip("set KEEL_TEST_POSTGRES_URL to test PostgreSQL sources")
    table = f"events_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER, city TEXT, note TEXT)"))
    try:
        yield url, table
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        engine.dispose()


def test_sql_source_in_chunks(database: tuple[str, str], tmp_path: Path, stores: Stores) -> None:
    url, table = database
    engine = sa.create_engine(url)
    _fill(engine, table, 0, 250)
    engine.dispose()
    query = f"SELECT id, city, note FROM {table} ORDER BY id"
    source = SourceConfig(format="sql", url=url, query=query, chunk_size=100, na_values=["?"])
    result = ingest(source, tmp_path, stores)
    data = read_snapshot(stores.artifacts, result.snapshot.sha256)
    assert data.num_rows == 250 and data.column("id").to_pylist() == list(range(250))
    assert data.column("city").to_pylist()[:3] == [None, "Oslo", None]
    # all-null in the first chunks, text later: the types unify instead of failing
    assert data.column("note").null_count == 150 and data.column("note").to_pylist()[-1] == "n249"
    assert result.snapshot.metadata["source"] == source_identity(source)
    read = read_source(source, tmp_path)
    assert read.equals(data.cast(read.schema))  # DuckDB marks null-free Parquet columns required


def test_sql_incremental_pushes_the_watermark_down(
    database: tuple[str, str], tmp_path: Path, stores: Stores
) -> None:
    url, table = database
    engine = sa.create_engine(url)
    _fill(engine, table, 0, 10)
    query = f"SELECT id, city FROM {table}"
    source = SourceConfig(
        format="sql", url=url, query=query, incremental=IncrementalConfig(column="id")
    )
    first = ingest(source, tmp_path, stores)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE id < 5"))
    _fill(engine, table, 10, 13)
    engine.dispose()
    second = ingest(source, tmp_path, stores)
    assert (second.rows, second.new_rows) == (13, 3)
    assert second.snapshot.metadata["parent"] == first.snapshot.sha256
    ids = read_snapshot(stores.artifacts, second.snapshot.sha256).column("id").to_pylist()
    assert ids == list(range(13))


def test_identity_hides_the_password() -> None:
    source = SourceConfig(format="sql", url="postgresql://u:secret@db/x", query="SELECT 1")
    identity = source_identity(source)
    assert identity.startswith("sql:postgresql://u:***@db/x#") and "secret" not in identity


def test_failing_query_is_a_data_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    source = SourceConfig(format="sql", url=url, query="SELECT * FROM missing_table")
    with pytest.raises(DataValidationError, match="the query failed: no such table"):
        read_source(source, tmp_path)


def test_sql_source_from_keel_yaml_with_env_url(
    tmp_path: Path, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'src.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER, label TEXT)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 'yes'), (2, 'no')"))
    engine.dispose()
    monkeypatch.setenv("KEEL_TEST_SOURCE_DB", f"sqlite:///{tmp_path / 'src.db'}")
    (tmp_path / "keel.yaml").write_text(
        "project: p\n"
        "data:\n"
        "  train: {format: sql, url: '${KEEL_TEST_SOURCE_DB}', query: 'SELECT * FROM t'}\n"
        "  target: label\n"
        "model: {name: p}\n"
    )
    config = load_config(tmp_path, env="")
    result = ingest(config.data.train, tmp_path, stores)
    assert read_snapshot(stores.artifacts, result.snapshot).to_pylist() == [
        {"id": 1, "label": "yes"},
        {"id": 2, "label": "no"},
    ]


def test_sql_incremental_counts_new_null_watermark_rows(
    database: tuple[str, str], tmp_path: Path, stores: Stores
) -> None:
    url, table = database
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (id, city) VALUES (1, 'a'), (NULL, 'b')"))
    source = SourceConfig(
        format="sql",
        url=url,
        query=f"SELECT id, city FROM {table}",
        incremental=IncrementalConfig(column="id"),
    )
    first = ingest(source, tmp_path, stores)
    assert (first.rows, first.snapshot.metadata["watermark_nulls"]) == (2, 1)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (id, city) VALUES (2, 'c'), (NULL, 'd')"))
    engine.dispose()
    second = ingest(source, tmp_path, stores)
    assert (second.rows, second.new_rows, second.skipped_null_watermark) == (3, 1, 1)
    assert second.snapshot.metadata["watermark_nulls"] == 2 and len(second.warnings) == 1
