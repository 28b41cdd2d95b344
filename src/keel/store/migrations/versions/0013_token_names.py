"""A revoked API token's name can be given to a new token.

Token names were unique over every row, revoked ones included, so after ``keel tokens revoke
ci`` no token could be called ``ci`` again (the revoked row is kept for the audit trail). The
name is now unique among tokens that are not revoked only: a partial unique index
(``WHERE revoked_at IS NULL``, which SQLite and PostgreSQL both take) replaces the constraint.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("revoked_at IS NULL")


def upgrade() -> None:
    """Replace ``uq_api_tokens_name`` by the partial unique index ``ix_api_tokens_name``."""
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint("uq_api_tokens_name", type_="unique")
    op.create_index(
        "ix_api_tokens_name",
        "api_tokens",
        ["name"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    """Names unique over every row again (fails while two rows share a name)."""
    op.drop_index("ix_api_tokens_name", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        batch.create_unique_constraint("uq_api_tokens_name", ["name"])
