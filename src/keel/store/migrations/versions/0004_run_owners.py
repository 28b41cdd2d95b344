"""Run owners and leases: who runs a running run, so a killed one can be marked failed.

Adds the owning process (host, pid, process start time) and the lease expiry to ``runs`` with
plain ``ALTER TABLE ... ADD COLUMN`` (no table rebuild). Runs recorded before have no owner.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the owner and lease columns."""
    op.add_column("runs", sa.Column("owner_host", sa.String(255), nullable=True))
    op.add_column("runs", sa.Column("owner_pid", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("owner_started_at", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner_started_at")
        batch.drop_column("owner_pid")
        batch.drop_column("owner_host")
