"""The alert store: alerts with their evidence, their deliveries per sink, and checkpoints.

:meth:`AlertStore.record` writes an alert, one ``alert_deliveries`` row per sink and an ``alert``
event (``events``, subject = the model's name: what ``keel schedule add --on alert`` watches) in
one transaction, or nothing when an alert with the same de-duplication key exists. Status
changes (acknowledge, resolve) keep who made them and go to the append-only audit log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from keel.errors import ConfigError, NotFoundError
from keel.store.database import Database
from keel.store.production_tables import alert_deliveries, alerts, monitor_checkpoints
from keel.store.tables import audit_log, events, utc_now

__all__ = ["ALERT_STATUSES", "Alert", "AlertDelivery", "AlertStore", "NewAlert"]

ALERT_STATUSES = ("open", "acknowledged", "resolved")
AlertStatus = Literal["open", "acknowledged", "resolved"]
_ERROR_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to store (what :mod:`keel.monitor.alerts` found)."""

    dedup_key: str
    rule: str
    model: str
    version: str
    role: str | None
    severity: str
    condition: str
    window_start: str
    window_end: str
    observed_at: datetime | None
    value: float | None
    threshold: float
    message: str
    evidence: Mapping[str, Any]
    # (sink kind, target, spec) per sink
    sinks: Sequence[tuple[str, str, Mapping[str, Any]]] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Alert:
    """A stored alert."""

    id: int
    rule: str
    model: str
    version: str
    role: str | None
    severity: str
    condition: str
    window_start: str
    window_end: str
    observed_at: datetime | None
    value: float | None
    threshold: float
    message: str
    evidence: Mapping[str, Any]
    fired_at: datetime
    status: str
    status_by: str | None
    status_at: datetime | None
    dedup_key: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "rule": self.rule,
            "model": self.model,
            "version": self.version,
            "role": self.role,
            "severity": self.severity,
            "condition": self.condition,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "observed_at": _iso(self.observed_at),
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
            "evidence": dict(self.evidence),
            "fired_at": _iso(self.fired_at),
            "status": self.status,
            "status_by": self.status_by,
            "status_at": _iso(self.status_at),
        }


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    """One alert's delivery to one sink and where it stands."""

    id: int
    alert_id: int
    sink: str
    target: str
    spec: Mapping[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_status_code: int | None
    delivered_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the spec's secret is only an environment variable's name)."""
        return {
            "id": self.id,
            "alert_id": self.alert_id,
            "sink": self.sink,
            "target": self.target,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "last_error": self.last_error,
            "last_status_code": self.last_status_code,
            "delivered_at": _iso(self.delivered_at),
        }


class AlertStore:
    """Alerts, deliveries and monitoring checkpoints in the metadata database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- alerts ------------------------------------------------------------------------------

    def record(self, new: NewAlert, *, now: datetime | None = None) -> Alert | None:
        """Store ``new`` with its deliveries and its ``alert`` event; None if a duplicate."""
        when = now or utc_now()
        values = {
            "dedup_key": new.dedup_key,
            "rule": new.rule,
            "model": new.model,
            "version": new.version,
            "role": new.role,
            "severity": new.severity,
            "condition": new.condition,
            "window_start": new.window_start,
            "window_end": new.window_end,
            "observed_at": new.observed_at,
            "value": new.value,
            "threshold": new.threshold,
            "message": new.message,
            "evidence": dict(new.evidence),
            "fired_at": when,
            "status": "open",
            "status_by": None,
            "status_at": None,
        }
        if self.exists(new.dedup_key):
            return None
        try:
            with self._db.write() as conn:
                key = conn.execute(sa.insert(alerts).values(**values)).inserted_primary_key
                assert key is not None
                alert_id = int(key[0])
                for kind, target, spec in new.sinks:
                    conn.execute(
                        sa.insert(alert_deliveries).values(
                            alert_id=alert_id, sink=kind, target=target, spec=dict(spec),
                            status="pending", attempts=0, next_attempt_at=when,
                            created_at=when,
                        )
                    )  # fmt: skip
                payload = {
                    "rule": new.rule,
                    "message": new.message,
                    "alert_id": alert_id,
                    "severity": new.severity,
                    "version": new.version,
                    "role": new.role,
                    "window_start": new.window_start,
                    "window_end": new.window_end,
                    "value": new.value,
                    "threshold": new.threshold,
                }
                conn.execute(
                    sa.insert(events).values(
                        kind="alert", subject=new.model, payload=payload, created_at=when
                    )
                )
        except sa.exc.IntegrityError:  # another monitor stored it first
            return None
        return _alert({**values, "id": alert_id})

    def exists(self, dedup_key: str) -> bool:
        """Whether an alert with this de-duplication key is stored."""
        with self._db.read() as conn:
            query = sa.select(alerts.c.id).where(alerts.c.dedup_key == dedup_key)
            return conn.scalar(query) is not None

    def last_observed(
        self, rule: str, model: str, version: str, role: str | None
    ) -> datetime | None:
        """When (in the log's time) the newest alert of this rule on this model was observed."""
        query = sa.select(sa.func.max(alerts.c.observed_at)).where(
            alerts.c.rule == rule,
            alerts.c.model == model,
            alerts.c.version == version,
            alerts.c.role.is_(None) if role is None else alerts.c.role == role,
        )
        with self._db.read() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            return None
        # max() bypasses the column type on SQLite: read it back through it
        return _as_utc(value)

    def get(self, alert_id: int) -> Alert:
        """One alert. NotFoundError when there is none."""
        with self._db.read() as conn:
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        if row is None:
            msg = f"no alert with id {alert_id}; list them with keel alerts list"
            raise NotFoundError(msg, field="id")
        return _alert(row)

    def list_alerts(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        rule: str | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Alerts newest first, filtered by model, status and rule.

        Raises:
            ConfigError: An unknown status.
        """
        query = sa.select(alerts)
        if model is not None:
            query = query.where(alerts.c.model == model)
        if status is not None:
            _check_status(status)
            query = query.where(alerts.c.status == status)
        if rule is not None:
            query = query.where(alerts.c.rule == rule)
        query = query.order_by(alerts.c.id.desc()).limit(max(1, min(limit, 10_000)))
        with self._db.read() as conn:
            return [_alert(row) for row in conn.execute(query).mappings()]

    def set_status(self, alert_id: int, status: str, *, actor: str) -> Alert:
        """Acknowledge or resolve an alert, recording who did (also in the audit log).

        Raises:
            ConfigError: An unknown status.
            NotFoundError: No such alert.
        """
        _check_status(status)
        before = self.get(alert_id)
        now = utc_now()
        with self._db.write() as conn:
            conn.execute(
                sa.update(alerts)
                .where(alerts.c.id == alert_id)
                .values(status=status, status_by=actor, status_at=now)
            )
            conn.execute(
                sa.insert(audit_log).values(
                    at=now,
                    actor=actor,
                    action=f"alert_{status}" if status != "acknowledged" else "alert_ack",
                    target=before.model,
                    details={"alert_id": alert_id, "rule": before.rule, "from": before.status},
                )
            )
        return self.get(alert_id)

    # -- deliveries --------------------------------------------------------------------------

    def deliveries(self, alert_id: int | None = None, *, limit: int = 100) -> list[AlertDelivery]:
        """Deliveries of one alert (or all, newest first)."""
        query = sa.select(alert_deliveries)
        if alert_id is not None:
            query = query.where(alert_deliveries.c.alert_id == alert_id)
        query = query.order_by(alert_deliveries.c.id.desc()).limit(limit)
        with self._db.read() as conn:
            return [_delivery(row) for row in conn.execute(query).mappings()]

    def due(self, now: datetime, *, limit: int = 50) -> list[AlertDelivery]:
        """Pending deliveries whose next attempt is due, oldest first."""
        query = (
            sa.select(alert_deliveries)
            .where(alert_deliveries.c.status == "pending")
            .where(alert_deliveries.c.next_attempt_at <= now)
            .order_by(alert_deliveries.c.id)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [_delivery(row) for row in conn.execute(query).mappings()]

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (None: none is pending)."""
        query = sa.select(sa.func.min(alert_deliveries.c.next_attempt_at)).where(
            alert_deliveries.c.status == "pending"
        )
        with self._db.read() as conn:
            value = conn.execute(query).scalar()
        return None if value is None else _as_utc(value)

    def attempted(
        self,
        delivery: AlertDelivery,
        *,
        status: str,
        error: str | None,
        code: int | None,
        next_attempt_at: datetime,
    ) -> bool:
        """Store one attempt's outcome; False when another process attempted it meanwhile."""
        values: dict[str, Any] = {
            "attempts": delivery.attempts + 1,
            "status": status,
            "last_error": None if error is None else error[:_ERROR_LENGTH],
            "last_status_code": code,
            "next_attempt_at": next_attempt_at,
        }
        if status == "delivered":
            values["delivered_at"] = utc_now()
        with self._db.write() as conn:
            done = conn.execute(
                sa.update(alert_deliveries)
                .where(
                    alert_deliveries.c.id == delivery.id,
                    alert_deliveries.c.attempts == delivery.attempts,
                )
                .values(**values)
            )
        return bool(done.rowcount)

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, model: str, version: str, role: str, window: str) -> float | None:
        """Up to where ``keel monitor run`` checked this log (None: never)."""
        query = sa.select(monitor_checkpoints.c.checked_until).where(
            monitor_checkpoints.c.model == model,
            monitor_checkpoints.c.version == version,
            monitor_checkpoints.c.role == role,
            monitor_checkpoints.c.window == window,
        )
        with self._db.read() as conn:
            value = conn.scalar(query)
        return None if value is None else float(value)

    def set_checkpoint(
        self, model: str, version: str, role: str, window: str, checked_until: float
    ) -> None:
        """Move the checkpoint forward (never back)."""
        key = {"model": model, "version": version, "role": role, "window": window}
        now = utc_now()
        with self._db.write() as conn:
            where = [monitor_checkpoints.c[k] == v for k, v in key.items()]
            current = conn.scalar(sa.select(monitor_checkpoints.c.checked_until).where(*where))
            if current is None:
                conn.execute(
                    sa.insert(monitor_checkpoints).values(
                        **key, checked_until=checked_until, updated_at=now
                    )
                )
            elif checked_until > float(current):
                conn.execute(
                    sa.update(monitor_checkpoints)
                    .where(*where)
                    .values(checked_until=checked_until, updated_at=now)
                )


def _check_status(status: str) -> None:
    if status not in ALERT_STATUSES:
        msg = f"unknown alert status {status!r}; expected one of {', '.join(ALERT_STATUSES)}"
        raise ConfigError(msg, field="status")


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _alert(row: Mapping[Any, Any]) -> Alert:
    return Alert(**{name: row[name] for name in Alert.__dataclass_fields__})


def _delivery(row: Mapping[Any, Any]) -> AlertDelivery:
    return AlertDelivery(**{name: row[name] for name in AlertDelivery.__dataclass_fields__})
