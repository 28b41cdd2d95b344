"""Pipeline runs: one row per `keel run` with its trigger, status and each step's outcome.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# as the earlier migrations: a migration does not import the live table definitions
_TS = sa.DateTime(timezone=True)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``pipeline_runs``."""
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner_host", sa.String(255), nullable=True),
        sa.Column("owner_pid", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name="ck_pipeline_runs_status"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_pipeline_runs"),
    )
    op.create_index("ix_pipeline_runs_started_at_id", "pipeline_runs", ["started_at", "id"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_pipeline_runs_started_at_id", table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
