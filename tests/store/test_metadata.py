"""MetadataStore: the public contract over SQLite and PostgreSQL, plus opening and migrating."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from keel.errors import BackendError, ConfigError
from keel.store import MetadataStore
from keel.store.database import HEAD_REVISION, MIGRATIONS_DIR, SQLITE_BUSY_TIMEOUT_MS
from keel.store.tables import schema
from keel.testing import MetadataStoreContract, check_metadata_store, postgres_schema

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")


class TestSqliteMetadataStore(MetadataStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[MetadataStore]:
        with MetadataStore(f"sqlite:///{tmp_path}/.keel/keel.db") as store:
            yield store


@pytest.mark.postgres
@pytest.mark.skipif(
    POSTGRES_URL is None, reason="set KEEL_TEST_POSTGRES_URL to run against PostgreSQL"
)
class TestPostgresMetadataStore(MetadataStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[MetadataStore]:
        with _postgres_schema() as url, MetadataStore(url) as store:
            yield store


def test_contract_runs_without_pytest(tmp_path: Path) -> None:
    dbs = iter(range(100))
    check_metadata_store(lambda: MetadataStore(f"sqlite:///{tmp_path}/{next(dbs)}.db"))


def test_in_memory_sqlite_works() -> None:
    with MetadataStore("sqlite://") as store:
        run = store.start_run("ingest", cache_key="k", config_hash="c", code_version="v")
        assert store.get_run(run.id).step == "ingest"


def test_migrations_match_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keel.db"
    MetadataStore(url).close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), schema)
    finally:
        engine.dispose()
    assert diff == []


def test_head_revision_constant_is_the_alembic_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_reopening_at_head_skips_alembic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/keel.db"
    MetadataStore(url).close()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("alembic ran on a database already at head")

    monkeypatch.setattr("alembic.command.upgrade", refuse)
    with MetadataStore(url) as store:
        assert store.list_runs() == []


def test_database_from_a_newer_keel_is_a_config_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keel.db"
    MetadataStore(url).close()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match="'9999', which this Keel does not know"):
        MetadataStore(url)


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store, store._db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS


@pytest.mark.parametrize("attempt", range(8))  # the race was 1 in ~30 fresh files
def test_concurrent_first_open(tmp_path: Path, attempt: int) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            MetadataStore(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_unreachable_database_is_a_backend_error_with_masked_password() -> None:
    url = "postgresql+psycopg://keel:s3cret@127.0.0.1:1/keel?connect_timeout=2"
    with pytest.raises(BackendError) as caught:
        MetadataStore(url)
    message = str(caught.value)
    assert "s3cret" not in message and "***" in message and "127.0.0.1:1" in message
    assert "reachable" in message


def test_plain_postgresql_url_means_psycopg() -> None:
    with pytest.raises(BackendError, match=r"postgresql\+psycopg://"):
        MetadataStore("postgresql://keel@127.0.0.1:1/keel?connect_timeout=2")


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchdb://x"):
        MetadataStore("nosuchdb://x")
    with pytest.raises(ConfigError, match="not a SQLAlchemy URL"):
        MetadataStore("not a url")


def test_non_json_values_are_config_errors(tmp_path: Path) -> None:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        with pytest.raises(ConfigError, match="params"):
            store.start_run(
                "s", cache_key="k", config_hash="c", code_version="v", params={"f": {1}}
            )
        version = store.register_model_version(
            "m", package_sha256="a" * 64, run_id=None, metrics={"auc": float("nan"), "n": 3}
        )
        assert store.get_model_version("m", version.version).metrics == {"auc": None, "n": 3}


def test_bad_names_are_config_errors(tmp_path: Path) -> None:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        with pytest.raises(ConfigError, match="model name"):
            store.register_model_version("a@b", package_sha256="a" * 64, run_id=None, metrics={})
        with pytest.raises(ConfigError, match="sha256"):
            store.register_model_version("m", package_sha256="abc", run_id=None, metrics={})
        run = store.start_run("s", cache_key="k", config_hash="c", code_version="v")
        with pytest.raises(ConfigError, match="status"):
            store.finish_run(run.id, status="done")  # type: ignore[arg-type]


def _postgres_schema() -> contextlib.AbstractContextManager[str]:
    assert POSTGRES_URL is not None
    return postgres_schema(POSTGRES_URL)


def _database_at_0001(url: str) -> None:
    """A database as Keel 0.1 left it: schema 0001, one finished run with lineage, one running."""
    from alembic import command

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            runs = "INSERT INTO runs (id, step, status, cache_key, config_hash, code_version, "
            runs += "started_at, ended_at, params) VALUES (:id, 'train', :status, 'k', 'c', 'v', "
            runs += "'2026-01-01 10:00:00', NULL, '{}')"
            conn.execute(sa.text(runs), [{"id": "a" * 32, "status": "succeeded"},
                                         {"id": "b" * 32, "status": "running"}])  # fmt: skip
            conn.execute(sa.text("INSERT INTO lineage VALUES (:r, 'output', 'model', :s)"),
                         {"r": "a" * 32, "s": "c" * 64})  # fmt: skip
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    if POSTGRES_URL is None:
        pytest.skip("set KEEL_TEST_POSTGRES_URL to run against PostgreSQL")
    with _postgres_schema() as url:
        yield url


def test_upgrade_from_0001_keeps_runs_and_lineage(old_url: str) -> None:
    url = old_url
    _database_at_0001(url)
    with MetadataStore(url) as store:
        old = store.get_run("a" * 32)
        assert (old.status, old.outputs) == ("succeeded", {"model": "c" * 64})
        assert store.lineage("c" * 64)[0].run_id == old.id
        tracked = store.get_tracked_run("bbbbbb")
        assert tracked.environment is None and tracked.metrics == {}
        done = store.finish_run(
            "b" * 32, status="succeeded", facts={"metrics": {"auc": 0.9}, "tags": {"t": "x"}}
        )
        assert done.status == "succeeded"
        from keel.store.tracking_tables import Condition

        found = store.search_runs([Condition("metrics", "auc", ">=", 0.9)])
        assert [t.run.id for t in found] == ["b" * 32]
        assert found[0].duration_seconds is not None and found[0].duration_seconds > 0
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
                HEAD_REVISION
            )
            diff = compare_metadata(MigrationContext.configure(conn), schema)
    finally:
        engine.dispose()
    assert diff == []
