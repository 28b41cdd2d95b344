"""The metadata schema as SQLAlchemy Core tables, used to build queries (the tables of models
in production, deployments and alerts, are :mod:`keel.store.production_tables`).

The database itself is created by the Alembic migrations in ``store/migrations``; a test checks
that the migrated schema and these tables agree, so change both together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "alias_history",
    "aliases",
    "api_tokens",
    "artifacts",
    "audit_log",
    "environments",
    "events",
    "feedback",
    "lineage",
    "model_versions",
    "models",
    "pipeline_runs",
    "promotion_decisions",
    "promotion_requests",
    "run_metric_history",
    "run_metrics",
    "run_params",
    "run_tags",
    "runs",
    "schedule_ticks",
    "scheduler_leases",
    "schedules",
    "schema",
    "utc_now",
    "webhook_deliveries",
]

KEY_LENGTH = 250
"""Longest param, metric or tag name."""
VALUE_LENGTH = 500
"""Longest stored param or tag text; longer values are cut (the run's facts keep them whole)."""

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps.

    SQLite has no time zones, so values are stored there as naive UTC and tagged on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # A naive datetime is taken to be UTC already: Keel never produces local times.
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


schema = sa.MetaData(naming_convention=NAMING_CONVENTION)

runs = sa.Table(
    "runs",
    schema,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cache_key", sa.String(128), nullable=False, index=True),
    sa.Column("config_hash", sa.String(128), nullable=False),
    sa.Column("code_version", sa.String(200), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("cpu_seconds", sa.Float(), nullable=True),
    sa.Column("peak_memory_mb", sa.Float(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("params", sa.JSON(), nullable=False),
    sa.Column("duration_seconds", sa.Float(), nullable=True),
    # The run's flat params, metrics and tags (as in the fact tables), read in one go to list.
    sa.Column("summary", sa.JSON(), nullable=True),
    # No foreign key: adding one to an existing SQLite table means rebuilding it.
    sa.Column("environment_id", sa.String(64), nullable=True),
    # Who runs a running run, and until when its lease holds: see keel.store.leases.
    sa.Column("owner_host", sa.String(255), nullable=True),
    sa.Column("owner_pid", sa.Integer(), nullable=True),
    # Seconds since boot with the boot's id (migration 0012); epoch seconds in older rows.
    sa.Column("owner_started_at", sa.Float(), nullable=True),
    sa.Column("owner_boot_id", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
    # 'cancelled' since migration 0010 (a step stopped by `keel runs cancel` or Ctrl-C)
    sa.CheckConstraint(
        "status IN ('running', 'succeeded', 'failed', 'cached', 'cancelled')", name="status"
    ),
    # "newest runs (of a step / with a status)" walk one of these and stop after LIMIT rows;
    # ending in id makes them covering, so the walk never reads the table itself.
    sa.Index("ix_runs_started_at_id", "started_at", "id"),
    sa.Index("ix_runs_step_started_at_id", "step", "started_at", "id"),
    sa.Index("ix_runs_status_started_at_id", "status", "started_at", "id"),
)

artifacts = sa.Table(
    "artifacts",
    schema,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(100), nullable=False, index=True),
    sa.Column("uri", sa.Text(), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("metadata", sa.JSON(), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
)

# No foreign key to artifacts: a run may name an output that was never recorded, which is
# exactly what find_cached_run must notice.
lineage = sa.Table(
    "lineage",
    schema,
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("direction", sa.String(6), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.CheckConstraint("direction IN ('input', 'output')", name="direction"),
)

models = sa.Table(
    "models",
    schema,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    # The highest version ever registered: a deleted version's number is never given again.
    sa.Column("last_version", sa.Integer(), nullable=True),
)

model_versions = sa.Table(
    "model_versions",
    schema,
    sa.Column(
        "name",
        sa.String(200),
        sa.ForeignKey("models.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("package_sha256", sa.String(64), nullable=False),
    sa.Column(
        "run_id",
        sa.String(32),
        sa.ForeignKey("runs.id", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("metrics", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # An archived version keeps its package and history but cannot take an alias.
    sa.Column("archived_at", UtcDateTime(), nullable=True),
    sa.Column("archived_by", sa.String(200), nullable=True),
)

aliases = sa.Table(
    "aliases",
    schema,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(
        ["name", "version"],
        ["model_versions.name", "model_versions.version"],
        name="fk_aliases_version_model_versions",
        ondelete="CASCADE",
    ),
)

audit_log = sa.Table(
    "audit_log",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    # Filters walk (column, id) newest first and stop after LIMIT rows.
    sa.Index("ix_audit_log_actor_id", "actor", "id"),
    sa.Index("ix_audit_log_action_id", "action", "id"),
    sa.Index("ix_audit_log_target_id", "target", "id"),
    sa.Index("ix_audit_log_at_id", "at", "id"),
)
"""Append-only: migration 0006 adds triggers (SQLite and PostgreSQL) that refuse UPDATE and
DELETE on it."""

# Every move of an alias, newest last: what rollback reads to find the previous holder.
alias_history = sa.Table(
    "alias_history",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("version", sa.Integer(), nullable=True),  # None: the alias was removed
    sa.Column("previous_version", sa.Integer(), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Index("ix_alias_history_name_alias_id", "name", "alias", "id"),
)

# A promotion to an alias that needs approvals waits here until enough people approve it.
promotion_requests = sa.Table(
    "promotion_requests",
    schema,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("from_version", sa.Integer(), nullable=True),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("required_approvals", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("decided_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'applied', 'rejected', 'cancelled')", name="status"),
    sa.Index("ix_promotion_requests_status_created_at", "status", "created_at"),
    sa.Index("ix_promotion_requests_name_alias", "name", "alias"),
)

promotion_decisions = sa.Table(
    "promotion_decisions",
    schema,
    sa.Column(
        "request_id",
        sa.String(32),
        sa.ForeignKey("promotion_requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("actor", sa.String(200), primary_key=True),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.CheckConstraint("decision IN ('approve', 'reject')", name="decision"),
)

# One row per (event, webhook): what keel.registry.webhooks.deliver_pending sends and retries.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Integer(), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("secret_env", sa.String(200), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("delivered_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    sa.Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# API tokens for the server: only the sha256 of each secret is kept.
api_tokens = sa.Table(
    "api_tokens",
    schema,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
    # a name is unique among live tokens: a revoked one (kept for the audit) frees its name
    sa.Index(
        "ix_api_tokens_name",
        "name",
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    ),
)


# Environments are shared by many runs (same interpreter, packages, commit): stored once,
# addressed by the sha256 of their canonical JSON.
environments = sa.Table(
    "environments",
    schema,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("captured_at", UtcDateTime(), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
)


def _run_fk() -> sa.Column[str]:
    return sa.Column(
        "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )


# One narrow table per kind of fact, so a filter or sort on one key is an index range scan:
# (key, value, run_id) is covering, and walking it in order answers "sort by metric, limit N".
# On SQLite they are WITHOUT ROWID: a probe by (run_id, key) reads one b-tree, not two.
run_params = sa.Table(
    "run_params",
    schema,
    _run_fk(),
    sa.Column("key", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.String(VALUE_LENGTH), nullable=False),
    sa.Column("number", sa.Float(), nullable=True),
    sa.Index("ix_run_params_key_number_run_id", "key", "number", "run_id"),
    sa.Index("ix_run_params_key_value_run_id", "key", "value", "run_id"),
    sqlite_with_rowid=False,
)

run_metrics = sa.Table(
    "run_metrics",
    schema,
    _run_fk(),
    sa.Column("key", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.Float(), nullable=True),
    sa.Index("ix_run_metrics_key_value_run_id", "key", "value", "run_id"),
    sqlite_with_rowid=False,
)

run_metric_history = sa.Table(
    "run_metric_history",
    schema,
    _run_fk(),
    sa.Column("key", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("iteration", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("value", sa.Float(), nullable=True),
    sqlite_with_rowid=False,
)

run_tags = sa.Table(
    "run_tags",
    schema,
    _run_fk(),
    sa.Column("key", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.String(VALUE_LENGTH), nullable=False),
    sa.Index("ix_run_tags_key_value_run_id", "key", "value", "run_id"),
    sqlite_with_rowid=False,
)


# -- scheduling (store/schedule_tables.py queries these) --------------------------------------

schedules = sa.Table(
    "schedules",
    schema,
    sa.Column("name", sa.String(100), primary_key=True),
    # cron: a 5-field expression in `timezone`; every: a fixed period; event: a trigger below
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("every_seconds", sa.Integer(), nullable=True),
    sa.Column("event", sa.String(16), nullable=True),
    # registry and alert events: only those about this model (null: any)
    sa.Column("event_filter", sa.String(300), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("catchup", sa.String(8), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # Time schedules: the newest tick accounted for (run or skipped); events: what was seen.
    sa.Column("last_tick_at", UtcDateTime(), nullable=True),
    sa.Column("cursor", sa.JSON(), nullable=True),
    # Bumped by every change, so the leader advances a schedule with a compare-and-set.
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.CheckConstraint("kind IN ('cron', 'every', 'event')", name="kind"),
    sa.CheckConstraint("catchup IN ('none', 'latest', 'all')", name="catchup"),
)

# One row per tick a scheduler claimed; the unique (schedule, tick_at) is what makes two
# schedulers unable to run one tick twice, whatever their leases say.
schedule_ticks = sa.Table(
    "schedule_ticks",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    # No foreign key: a removed schedule's history stays.
    sa.Column("schedule", sa.String(100), nullable=False),
    sa.Column("tick_at", UtcDateTime(), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("missed", sa.Integer(), nullable=False),
    sa.Column("claimed_at", UtcDateTime(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("overhead_ms", sa.Float(), nullable=True),
    sa.Column("pipeline_run_id", sa.String(64), nullable=True),
    sa.Column("summary", sa.JSON(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.UniqueConstraint("schedule", "tick_at"),
    sa.CheckConstraint(
        "status IN ('running', 'succeeded', 'failed', 'cancelled', 'skipped')", name="status"
    ),
    sa.Index("ix_schedule_ticks_status", "status"),
)

# One row per lease (one today: "scheduler"): whoever holds an unexpired row is the leader.
scheduler_leases = sa.Table(
    "scheduler_leases",
    schema,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    # +1 on every change of owner: a fencing token a stale leader's writes are checked against
    sa.Column("generation", sa.Integer(), nullable=False),
    sa.Column("acquired_at", UtcDateTime(), nullable=False),
    sa.Column("renewed_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)

# Things that happened that a schedule may trigger on: monitoring writes kind 'alert'.
events = sa.Table(
    "events",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_events_kind_id", "kind", "id"),
)

# One row per `keel run` (or scheduled run): its trigger, status and each step's outcome.
pipeline_runs = sa.Table(
    "pipeline_runs",
    schema,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("config_hash", sa.String(128), nullable=False),
    sa.Column("trigger", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    # [{step, run_id, status, cache, seconds, cpu_seconds, peak_rss_mb}] in execution order
    sa.Column("steps", sa.JSON(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("owner_host", sa.String(255), nullable=True),
    sa.Column("owner_pid", sa.Integer(), nullable=True),
    sa.Column("owner_started_at", sa.Float(), nullable=True),  # as runs' (migration 0012)
    sa.Column("owner_boot_id", sa.String(64), nullable=True),
    # 'cancel_requested' and 'cancelled' since migration 0010
    sa.CheckConstraint(
        "status IN ('running', 'cancel_requested', 'succeeded', 'failed', 'cancelled')",
        name="status",
    ),
    sa.Index("ix_pipeline_runs_started_at_id", "started_at", "id"),
)

# --- Feedback (issue 17): delayed ground-truth labels, joined to logged predictions -----------
# One row per label received. A label names its prediction by request id (and the instance's
# position in that request) or by key columns (``key``, hashed in ``key_hash``). A replaced label
# stays, with status 'replaced' and the id of the one that replaced it. ``live_request`` and
# ``live_key`` hold the request id / key hash while the label is the accepted one and NULL once
# replaced: their unique constraints allow one live label per prediction on every database
# (NULLs never collide).
feedback = sa.Table(
    "feedback",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("request_id", sa.String(200), nullable=True),
    sa.Column("instance", sa.Integer(), nullable=False),
    sa.Column("key", sa.JSON(), nullable=True),
    sa.Column("key_hash", sa.String(64), nullable=True),
    sa.Column("label", sa.JSON(), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("replaced_by", sa.Integer(), nullable=True),
    sa.Column("live_request", sa.String(200), nullable=True),
    sa.Column("live_key", sa.String(64), nullable=True),
    sa.CheckConstraint("status IN ('accepted', 'replaced')", name="status"),
    sa.UniqueConstraint("model_name", "live_request", "instance"),
    sa.UniqueConstraint("model_name", "live_key"),
    sa.Index("ix_feedback_model_name_status", "model_name", "status"),
)


# Deployments and alerts are defined beside (keel.store.production_tables) on this same schema;
# importing it registers them, so `schema` holds every table whoever imports this module.
from keel.store import production_tables as _production_tables  # noqa: E402, F401
