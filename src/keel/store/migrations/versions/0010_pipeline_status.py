"""Pipeline status: 'cancelled' and 'cancel_requested' become real statuses of pipeline runs.

Until now a cancelled pipeline run was stored ``failed`` with an error starting ``cancelled: ``
and a run asked to stop stayed ``running`` with the error ``cancel requested``; a cancelled step
run was ``failed`` with such an error. This widens the CHECK constraints and rewrites those rows
to the statuses they meant (:mod:`keel.store.pipeline_runs` still reads the old form).

- ``pipeline_runs`` (nothing references it): Alembic batch mode, which on SQLite recreates the
  table with the new constraint and copies the rows.
- ``runs``: ``lineage``, ``run_params``, ``run_metrics``, ``run_metric_history``, ``run_tags``
  (``ON DELETE CASCADE``) and ``model_versions`` (``SET NULL``) reference it. Recreating it on
  SQLite drops the old table, and with ``PRAGMA foreign_keys=ON`` (Keel's connections; the
  pragma cannot be switched off inside the migration's transaction) that drop deletes every
  run's lineage and facts. So on SQLite the constraint's text is rewritten in place, SQLite's
  documented procedure for a constraint change that every existing row satisfies
  (https://sqlite.org/lang_altertable.html, "otheralter"); on PostgreSQL it is dropped and
  created again.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_RUNS_OLD = "status IN ('running', 'succeeded', 'failed', 'cached')"
_RUNS_NEW = "status IN ('running', 'succeeded', 'failed', 'cached', 'cancelled')"
_PIPELINE_OLD = "status IN ('running', 'succeeded', 'failed')"
_PIPELINE_NEW = "status IN ('running', 'cancel_requested', 'succeeded', 'failed', 'cancelled')"
#: How the old form spelled them (see keel.store.pipeline_runs).
_CANCELLED_PREFIX = "cancelled: "
_CANCEL_REQUESTED = "cancel requested"


def upgrade() -> None:
    """Widen both constraints, then give the old rows their real status."""
    _pipeline_check(_PIPELINE_NEW)
    _runs_check(_RUNS_OLD, _RUNS_NEW)
    pipeline = sa.table(
        "pipeline_runs", sa.column("status", sa.String), sa.column("error", sa.Text)
    )
    runs = sa.table("runs", sa.column("status", sa.String), sa.column("error", sa.Text))
    n = len(_CANCELLED_PREFIX)
    op.execute(
        pipeline.update()
        .where(pipeline.c.status == "failed", pipeline.c.error.startswith(_CANCELLED_PREFIX))
        .values(status="cancelled", error=sa.func.substr(pipeline.c.error, n + 1))
    )
    op.execute(
        pipeline.update()
        .where(pipeline.c.status == "running", pipeline.c.error == _CANCEL_REQUESTED)
        .values(status="cancel_requested", error=None)
    )
    op.execute(
        runs.update()
        .where(
            runs.c.status == "failed",
            sa.or_(
                runs.c.error.startswith(_CANCELLED_PREFIX),
                runs.c.error == "cancelled (interrupted)",
            ),
        )
        .values(status="cancelled")
    )


def downgrade() -> None:
    """Write the new statuses in the old form, then narrow the constraints again."""
    pipeline = sa.table(
        "pipeline_runs", sa.column("status", sa.String), sa.column("error", sa.Text)
    )
    runs = sa.table("runs", sa.column("status", sa.String), sa.column("error", sa.Text))
    op.execute(
        pipeline.update()
        .where(pipeline.c.status == "cancelled")
        .values(
            status="failed",
            error=sa.literal(_CANCELLED_PREFIX) + sa.func.coalesce(pipeline.c.error, "cancelled"),
        )
    )
    op.execute(
        pipeline.update()
        .where(pipeline.c.status == "cancel_requested")
        .values(status="running", error=_CANCEL_REQUESTED)
    )
    op.execute(
        runs.update()
        .where(runs.c.status == "cancelled")
        .values(
            status="failed",
            error=sa.case(
                (runs.c.error.startswith("cancelled"), runs.c.error),
                else_=sa.literal(_CANCELLED_PREFIX) + sa.func.coalesce(runs.c.error, "cancelled"),
            ),
        )
    )
    _runs_check(_RUNS_NEW, _RUNS_OLD)
    _pipeline_check(_PIPELINE_OLD)


def _pipeline_check(condition: str) -> None:
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.drop_constraint("ck_pipeline_runs_status", type_="check")
        batch.create_check_constraint("ck_pipeline_runs_status", condition)


def _runs_check(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint("ck_runs_status", "runs", type_="check")
        op.create_check_constraint("ck_runs_status", "runs", new)
        return
    found = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
    ).scalar_one()
    if found.count(old) != 1:
        msg = f"the runs table's status check is not {old!r} as migration 0001 made it: {found}"
        raise RuntimeError(msg)
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'runs'",
            (found.replace(old, new),),
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = bind.exec_driver_sql("PRAGMA quick_check").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"the runs table's new schema does not check out: {problems}")
