"""Scheduling: schedules, their ticks, the scheduler's leader lease, and an events table.

``schedule_ticks`` has a unique (schedule, tick_at): two scheduler processes can never both
record, and so run, one tick. ``events`` is where monitoring writes alerts that schedules
trigger on.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the scheduling tables."""
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("every_seconds", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(16), nullable=True),
        sa.Column("event_filter", sa.String(300), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("catchup", sa.String(8), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("last_tick_at", _TS, nullable=True),
        sa.Column("cursor", sa.JSON(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('cron', 'every', 'event')", name="ck_schedules_kind"),
        sa.CheckConstraint("catchup IN ('none', 'latest', 'all')", name="ck_schedules_catchup"),
        sa.PrimaryKeyConstraint("name", name="pk_schedules"),
    )
    op.create_table(
        "schedule_ticks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("schedule", sa.String(100), nullable=False),
        sa.Column("tick_at", _TS, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("claimed_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("overhead_ms", sa.Float(), nullable=True),
        sa.Column("pipeline_run_id", sa.String(64), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cancelled', 'skipped')",
            name="ck_schedule_ticks_status",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_ticks"),
        sa.UniqueConstraint("schedule", "tick_at", name="uq_schedule_ticks_schedule_tick_at"),
    )
    op.create_index("ix_schedule_ticks_status", "schedule_ticks", ["status"])
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("acquired_at", _TS, nullable=False),
        sa.Column("renewed_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_scheduler_leases"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_kind_id", "events", ["kind", "id"])


def downgrade() -> None:
    """Drop the scheduling tables."""
    op.drop_index("ix_events_kind_id", table_name="events")
    op.drop_table("events")
    op.drop_table("scheduler_leases")
    op.drop_index("ix_schedule_ticks_status", table_name="schedule_ticks")
    op.drop_table("schedule_ticks")
    op.drop_table("schedules")
