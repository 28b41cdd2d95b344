"""Run owners are told apart by their boot and their start in clock ticks since boot.

A run's owner was recorded as host, pid and the process's start time in seconds since the
epoch, which the system derives from its boot time, and the boot time moves whenever the clock
is stepped (NTP, a virtual machine resumed from a snapshot). A live owner could then look like
a later process that reused its pid, and the reaper marked a running run failed. The start is
now recorded as seconds since boot (the kernel's clock ticks, which never move) with the boot's
id (``/proc/sys/kernel/random/boot_id``); pipeline runs record their owner the same way.
Rows written before this revision keep the old epoch start and the old rule.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``runs.owner_boot_id`` and ``pipeline_runs.owner_started_at``/``owner_boot_id``."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner_boot_id", sa.String(64), nullable=True))
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.add_column(sa.Column("owner_started_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("owner_boot_id", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop the columns again."""
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.drop_column("owner_boot_id")
        batch.drop_column("owner_started_at")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("owner_boot_id")
