"""Migration 0010: 'cancelled' and 'cancel_requested' as real statuses of pipeline and step runs.

A database at 0009 holding rows in the old form (a cancelled pipeline run stored ``failed`` with
a ``cancelled: `` error, a cancel request stored ``running`` + ``cancel requested``, a cancelled
step run stored ``failed``) is opened by Keel (foreign keys on): the rows get their real status,
the runs' lineage and facts survive the constraint change, and the new constraints still refuse
an unknown status. Downgrading writes the old form back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from keel.store import MetadataStore
from keel.store import pipeline_runs as records
from keel.store.database import MIGRATIONS_DIR
from keel.testing import postgres_schema

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")
A, B, C = "a" * 32, "b" * 32, "c" * 32
RUN = "INSERT INTO runs (id, step, status, cache_key, config_hash, code_version, started_at, "
RUN += "params, error) VALUES (:id, 'hold', :status, 'k', 'c', 'v', '2026-01-01 10:00:00', '{}', "
RUN += ":error)"
PIPELINE = "INSERT INTO pipeline_runs (id, config_hash, trigger, status, started_at, steps, error) "
PIPELINE += "VALUES (:id, 'h', 'manual', :status, '2026-01-01 10:00:00', '[]', :error)"


def _alembic(conn: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = conn
    return cfg


def _database_at_0009(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic(conn), "0009")
            conn.execute(sa.text(RUN), [
                {"id": A, "status": "succeeded", "error": None},
                {"id": B, "status": "failed", "error": "cancelled: step run b stopped"},
                {"id": C, "status": "failed", "error": "ValueError('boom')"},
            ])  # fmt: skip
            conn.execute(sa.text("INSERT INTO lineage VALUES (:r, 'output', 'model', :s)"),
                         {"r": A, "s": "d" * 64})  # fmt: skip
            conn.execute(sa.text("INSERT INTO run_params VALUES (:r, 'lr', '0.1', 0.1)"), {"r": A})
            conn.execute(sa.text(PIPELINE), [
                {"id": A, "status": "failed",
                 "error": "cancelled: cancelled with keel runs cancel"},
                {"id": B, "status": "running", "error": "cancel requested"},
                {"id": C, "status": "failed", "error": "step 'train' failed"},
            ])  # fmt: skip
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    if POSTGRES_URL is None:
        pytest.skip("set KEEL_TEST_POSTGRES_URL to run against PostgreSQL")
    with postgres_schema(POSTGRES_URL) as schema_url:
        yield schema_url


def _stored(conn: sa.Connection, table: str) -> dict[str, tuple[str, str | None]]:
    rows = conn.execute(sa.text(f"SELECT id, status, error FROM {table}")).all()
    return {row.id: (row.status, row.error) for row in rows}


def test_upgrade_gives_old_rows_their_status_and_keeps_lineage(url: str) -> None:
    _database_at_0009(url)
    with MetadataStore(url) as store:  # migrates to head, foreign keys on
        assert store.lineage("d" * 64)[0].run_id == A, "the runs' lineage survived"
        assert store.get_run(B).status == "cancelled"
        assert store.get_run(C).status == "failed"
        database = store.database
        assert records.get(database, A).status == "cancelled"
        assert records.get(database, A).error == "cancelled with keel runs cancel"
        assert records.get(database, B).status == "cancel_requested"
        assert records.get(database, B).error is None
        assert records.get(database, C).status == "failed"
        with database.read() as conn:
            assert _stored(conn, "pipeline_runs")[A] == (
                "cancelled", "cancelled with keel runs cancel"
            )  # fmt: skip
            assert _stored(conn, "runs")[B][0] == "cancelled"
            facts = conn.execute(sa.text("SELECT count(*) FROM run_params")).scalar()
            assert facts == 1, "the runs' facts survived"
        records.start(database, "e" * 32, config_hash="h", trigger="manual", reason=None)
        assert records.request_cancel(database, "e" * 32).status == "cancel_requested"
        records.finish(database, "e" * 32, status="cancelled", steps=[], error="Ctrl-C")
        assert (records.get(database, "e" * 32).status, records.get(database, "e" * 32).error) == (
            "cancelled", "Ctrl-C"
        )  # fmt: skip
        for row in (RUN, PIPELINE):
            with pytest.raises(sa.exc.IntegrityError), database.write() as conn:
                conn.execute(sa.text(row), {"id": "f" * 32, "status": "bogus", "error": None})


def test_downgrade_writes_the_old_form_back(url: str) -> None:
    _database_at_0009(url)
    MetadataStore(url).close()  # to head
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(_alembic(conn), "0009")
        with engine.connect() as conn:
            pipeline, runs = _stored(conn, "pipeline_runs"), _stored(conn, "runs")
            assert pipeline[A] == ("failed", "cancelled: cancelled with keel runs cancel")
            assert pipeline[B] == ("running", "cancel requested")
            assert runs[B] == ("failed", "cancelled: step run b stopped")
            assert conn.execute(sa.text("SELECT count(*) FROM lineage")).scalar() == 1
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text(PIPELINE), {"id": "f" * 32, "status": "cancelled", "error": None})
    finally:
        engine.dispose()
