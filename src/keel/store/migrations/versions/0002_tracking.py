"""Experiment tracking: run params, metrics, metric history, tags, environments, durations.

Adds columns to ``runs`` with plain ``ALTER TABLE ... ADD COLUMN`` (no table rebuild, so an
existing SQLite database keeps its rows and its lineage), replaces the step and started_at
indexes by covering (step, started_at, id), (status, started_at, id) and (started_at, id), and
creates the narrow fact tables whose (key, value, run_id) indexes keep filtering and sorting by
a metric fast at 100,000 runs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_KEY = 250
_VALUE = 500


def upgrade() -> None:
    """Add the tracking columns, indexes and tables."""
    op.add_column("runs", sa.Column("duration_seconds", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("environment_id", sa.String(64), nullable=True))
    op.add_column("runs", sa.Column("summary", sa.JSON(), nullable=True))
    # Covering (they end in id): "newest runs [of a step | with a status]" never reads the table.
    op.drop_index("ix_runs_step", table_name="runs")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.create_index("ix_runs_started_at_id", "runs", ["started_at", "id"])
    op.create_index("ix_runs_step_started_at_id", "runs", ["step", "started_at", "id"])
    op.create_index("ix_runs_status_started_at_id", "runs", ["status", "started_at", "id"])
    op.create_table(
        "environments",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("captured_at", _TS, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_environments"),
    )
    _create_fact_table(
        "run_params",
        sa.Column("value", sa.String(_VALUE), nullable=False),
        sa.Column("number", sa.Float(), nullable=True),
    )
    op.create_index("ix_run_params_key_number_run_id", "run_params", ["key", "number", "run_id"])
    op.create_index("ix_run_params_key_value_run_id", "run_params", ["key", "value", "run_id"])
    _create_fact_table("run_metrics", sa.Column("value", sa.Float(), nullable=True))
    op.create_index("ix_run_metrics_key_value_run_id", "run_metrics", ["key", "value", "run_id"])
    _create_fact_table(
        "run_metric_history",
        sa.Column("iteration", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        primary_key=("run_id", "key", "iteration"),
    )
    _create_fact_table("run_tags", sa.Column("value", sa.String(_VALUE), nullable=False))
    op.create_index("ix_run_tags_key_value_run_id", "run_tags", ["key", "value", "run_id"])


def _create_fact_table(
    name: str, *columns: sa.Column[object], primary_key: tuple[str, ...] = ("run_id", "key")
) -> None:
    op.create_table(
        name,
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(_KEY), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=f"fk_{name}_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(*primary_key, name=f"pk_{name}"),
        # Clustered on (run_id, key): a probe by primary key reads one b-tree, not two.
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    """Drop the tracking tables, indexes and columns."""
    for table in ("run_tags", "run_metric_history", "run_metrics", "run_params", "environments"):
        op.drop_table(table)
    for index in ("ix_runs_status_started_at_id", "ix_runs_step_started_at_id",
                  "ix_runs_started_at_id"):  # fmt: skip
        op.drop_index(index, table_name="runs")
    op.create_index("ix_runs_step", "runs", ["step"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("summary")
        batch.drop_column("environment_id")
        batch.drop_column("duration_seconds")
