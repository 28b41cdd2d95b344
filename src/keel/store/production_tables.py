"""The metadata tables of models in production: deployments and alerts.

Deployments split a model name's traffic across versions (canary, shadow, A/B), with their
decisions and per-server traffic; alerts are the firings of monitoring's rules, their deliveries
and how far monitoring has checked each log. They are defined on the one
:data:`keel.store.tables.schema` (which imports this module, so the metadata is whole whoever
imports it); the Alembic migrations create them, and a test checks that both agree.
"""

from __future__ import annotations

import sqlalchemy as sa

from keel.store.tables import UtcDateTime, schema

__all__ = [
    "alert_deliveries",
    "alerts",
    "deployment_events",
    "deployment_stats",
    "deployments",
    "monitor_checkpoints",
]

# --- Deployments (issue 16): how a model name's traffic is split across versions -------------
# One row per deployment (canary, shadow, A/B). ``active_name`` holds the model name while the
# deployment is active and NULL after: its unique constraint allows one active deployment per
# model name on every database (NULLs never collide).
deployments = sa.Table(
    "deployments",
    schema,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("active_name", sa.String(200), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # {"primary", "arms": [{version, role, weight}], "steps", "interval_s", "checks",
    #  "failures", "min_requests", "sticky_key"}
    sa.Column("spec", sa.JSON(), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
    sa.Column("bad_intervals", sa.Integer(), nullable=False),
    sa.Column("step_started_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.UniqueConstraint("active_name"),
    sa.CheckConstraint("kind IN ('canary', 'shadow', 'ab')", name="kind"),
    sa.CheckConstraint("status IN ('active', 'promoted', 'rolled_back', 'aborted')", name="status"),
    sa.Index("ix_deployments_model_name_created_at", "model_name", "created_at"),
)

# Append-only history of each deployment's decisions, with the measured values behind them.
deployment_events = sa.Table(
    "deployment_events",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("deployment_id", sa.String(32), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    sa.Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),
)

# Traffic per server, deployment, version, role and interval bucket; ``latency`` is a list of
# counts over fixed log-spaced buckets, so percentiles merge across servers by adding counts.
deployment_stats = sa.Table(
    "deployment_stats",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("server", sa.String(200), nullable=False),
    sa.Column("deployment_id", sa.String(32), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("bucket", UtcDateTime(), nullable=False),
    sa.Column("requests", sa.Integer(), nullable=False),
    sa.Column("errors", sa.Integer(), nullable=False),
    sa.Column("latency", sa.JSON(), nullable=False),
    # shadow only: answers compared with the primary's, and how many differed
    sa.Column("compared", sa.Integer(), nullable=False),
    sa.Column("disagreed", sa.Integer(), nullable=False),
    # 4xx answers: requests this version refused (migration 0011; a canary's against the primary's)
    sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("ix_deployment_stats_deployment_id_bucket", "deployment_id", "bucket"),
)

# --- Alerts (issue 17): alert rules' firings, their deliveries, and what monitoring checked ---
# One row per alert: ``dedup_key`` (rule, model, version, role, window span) is unique, so a
# second `keel monitor run` over the same windows never stores an alert twice. ``observed_at``
# is the span's last request time: cooldown is measured in the log's time.
alerts = sa.Table(
    "alerts",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(64), nullable=False, unique=True),
    sa.Column("rule", sa.String(100), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("condition", sa.Text(), nullable=False),
    sa.Column("window_start", sa.String(40), nullable=False),
    sa.Column("window_end", sa.String(40), nullable=False),
    sa.Column("observed_at", UtcDateTime(), nullable=True),
    sa.Column("value", sa.Float(), nullable=True),
    sa.Column("threshold", sa.Float(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    # {"quantity", "op", "windows": [{start, end, rows, value, feature, ...}]}
    sa.Column("evidence", sa.JSON(), nullable=False),
    sa.Column("fired_at", UtcDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_by", sa.String(200), nullable=True),
    sa.Column("status_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name="status"),
    sa.CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
    sa.Index("ix_alerts_model_id", "model", "id"),
    sa.Index("ix_alerts_status_id", "status", "id"),
    sa.Index("ix_alerts_rule_model_observed_at", "rule", "model", "observed_at"),
)

# One row per (alert, sink): log, webhook (signed POST) or command, retried with backoff.
alert_deliveries = sa.Table(
    "alert_deliveries",
    schema,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "alert_id", sa.Integer(), sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("sink", sa.String(16), nullable=False),
    sa.Column("target", sa.Text(), nullable=False),
    # the sink's settings (url, secret_env, argv, attempts, backoff, timeout)
    sa.Column("spec", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("delivered_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("sink IN ('log', 'webhook', 'command')", name="sink"),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    sa.Index("ix_alert_deliveries_alert_id", "alert_id"),
    sa.Index("ix_alert_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# Per model, version, role and window size: up to where `keel monitor run` has checked the log
# (seconds since the epoch for time windows, rows for row windows).
monitor_checkpoints = sa.Table(
    "monitor_checkpoints",
    schema,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("window", sa.String(40), primary_key=True),
    sa.Column("checked_until", sa.Float(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)
