"""Initial schema: runs, artifacts, lineage, models, model_versions, aliases, audit_log.

Revision ID: 0001
Revises: None
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of the first schema."""
    _create_runs_and_artifacts()
    _create_registry()
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_target", "audit_log", ["target"])


def _create_runs_and_artifacts() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cache_key", sa.String(128), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("code_version", sa.String(200), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("cpu_seconds", sa.Float(), nullable=True),
        sa.Column("peak_memory_mb", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cached')", name="ck_runs_status"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_step", "runs", ["step"])
    op.create_index("ix_runs_cache_key", "runs", ["cache_key"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_table(
        "artifacts",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_artifacts"),
    )
    op.create_index("ix_artifacts_kind", "artifacts", ["kind"])
    # The primary key (run_id, direction, name) also serves lookups by run_id.
    op.create_table(
        "lineage",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(6), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.CheckConstraint("direction IN ('input', 'output')", name="ck_lineage_direction"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_lineage_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "direction", "name", name="pk_lineage"),
    )
    op.create_index("ix_lineage_sha256", "lineage", ["sha256"])


def _create_registry() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_models"),
    )
    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("package_sha256", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["name"], ["models.name"], name="fk_model_versions_name_models", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_model_versions_run_id_runs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("name", "version", name="pk_model_versions"),
    )
    op.create_table(
        "aliases",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["name", "version"],
            ["model_versions.name", "model_versions.version"],
            name="fk_aliases_version_model_versions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name", "alias", name="pk_aliases"),
    )


def downgrade() -> None:
    """Drop every table of the first schema."""
    for table in ("aliases", "model_versions", "models", "lineage", "artifacts", "audit_log"):
        op.drop_table(table)
    op.drop_table("runs")
