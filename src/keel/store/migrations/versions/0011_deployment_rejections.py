"""Deployment traffic counts refusals: ``deployment_stats.rejected``.

A version's 4xx answers (a request it could not take) were counted as requests but not as
errors, so a canary that refused most of its traffic (a column the new version needs that
clients do not send) held ``error_rate<=0.01`` and was promoted. The controller now compares a
canary's rejection rate with the primary's over the same interval
(:func:`keel.registry.deployments.rejects_more`); rows written before this revision count 0.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``rejected`` (0 for the rows already stored)."""
    with op.batch_alter_table("deployment_stats") as batch:
        batch.add_column(sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop ``rejected``."""
    with op.batch_alter_table("deployment_stats") as batch:
        batch.drop_column("rejected")
