"""Feedback: delayed ground-truth labels joined to logged predictions by request id or key.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# as the earlier migrations: a migration does not import the live table definitions
_TS = sa.DateTime(timezone=True)

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``feedback``."""
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("instance", sa.Integer(), nullable=False),
        sa.Column("key", sa.JSON(), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=True),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("replaced_by", sa.Integer(), nullable=True),
        sa.Column("live_request", sa.String(200), nullable=True),
        sa.Column("live_key", sa.String(64), nullable=True),
        sa.CheckConstraint("status IN ('accepted', 'replaced')", name="ck_feedback_status"),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint(
            "model_name",
            "live_request",
            "instance",
            name="uq_feedback_model_name_live_request_instance",
        ),
        sa.UniqueConstraint("model_name", "live_key", name="uq_feedback_model_name_live_key"),
    )
    op.create_index("ix_feedback_model_name_status", "feedback", ["model_name", "status"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_feedback_model_name_status", table_name="feedback")
    op.drop_table("feedback")
