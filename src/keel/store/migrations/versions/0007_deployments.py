"""Deployments: how a model name's traffic is split across versions (primary, canary, shadow,
A/B arms), their step history and the servers' per-interval traffic statistics.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# as the earlier migrations: a migration does not import the live table definitions
_TS = sa.DateTime(timezone=True)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the deployments, their events and their traffic statistics."""
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("active_name", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("bad_intervals", sa.Integer(), nullable=False),
        sa.Column("step_started_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("active_name", name="uq_deployments_active_name"),
        sa.CheckConstraint("kind IN ('canary', 'shadow', 'ab')", name="ck_deployments_kind"),
        sa.CheckConstraint(
            "status IN ('active', 'promoted', 'rolled_back', 'aborted')",
            name="ck_deployments_status",
        ),
    )
    op.create_index(
        "ix_deployments_model_name_created_at", "deployments", ["model_name", "created_at"]
    )
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_events"),
    )
    op.create_index(
        "ix_deployment_events_deployment_id_id", "deployment_events", ["deployment_id", "id"]
    )
    op.create_table(
        "deployment_stats",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("server", sa.String(200), nullable=False),
        sa.Column("deployment_id", sa.String(32), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("bucket", _TS, nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("compared", sa.Integer(), nullable=False),
        sa.Column("disagreed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_stats"),
    )
    op.create_index(
        "ix_deployment_stats_deployment_id_bucket",
        "deployment_stats",
        ["deployment_id", "bucket"],
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_deployment_stats_deployment_id_bucket", table_name="deployment_stats")
    op.drop_table("deployment_stats")
    op.drop_index("ix_deployment_events_deployment_id_id", table_name="deployment_events")
    op.drop_table("deployment_events")
    op.drop_index("ix_deployments_model_name_created_at", table_name="deployments")
    op.drop_table("deployments")
