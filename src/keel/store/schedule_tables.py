"""Value objects and row queries for the scheduling tables: schedules, ticks, leases, events.

Each query takes a connection already in a transaction; :class:`keel.store.schedules.ScheduleStore`
owns the transactions and the public API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from keel.store.tables import audit_log, events, schedule_ticks, scheduler_leases, schedules

__all__ = [
    "CATCHUP",
    "EVENT_KINDS",
    "REGISTRY_ACTIONS",
    "Catchup",
    "Event",
    "EventKind",
    "Lease",
    "Schedule",
    "ScheduleKind",
    "Tick",
    "TickStatus",
    "audit_rows_after",
    "event_rows_after",
    "newest_audit_id",
    "newest_event_id",
]

ScheduleKind = Literal["cron", "every", "event"]
EventKind = Literal["new_data", "registry", "alert"]
Catchup = Literal["none", "latest", "all"]
TickStatus = Literal["running", "succeeded", "failed", "cancelled", "skipped"]
Trigger = Literal["schedule", "event"]

EVENT_KINDS: tuple[str, ...] = ("new_data", "registry", "alert")
CATCHUP: tuple[str, ...] = ("none", "latest", "all")
REGISTRY_ACTIONS: tuple[str, ...] = ("register", "set_alias", "delete_alias", "promote", "rollback")
"""The audit-log actions a ``registry`` schedule triggers on: a new version, an alias move
(``promote`` and ``rollback`` are the registry's moves; an approval that applies is a
``promote``)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule: when the pipeline runs, and where its evaluation stands.

    Attributes:
        kind: ``cron`` (``cron`` in ``timezone``), ``every`` (``every_seconds``, aligned to the
            Unix epoch) or ``event`` (``event``: new_data, registry or alert).
        event_filter: For registry and alert events, the model they must be about (None: any).
        catchup: What a scheduler that was down does with the ticks it missed: ``none`` skips
            them, ``latest`` runs the newest once, ``all`` runs each in order.
        last_tick_at: The newest tick accounted for (ran or skipped); time schedules only.
        cursor: What an event schedule last saw (fingerprints, newest event or audit id).
        revision: Bumped by every change; the leader advances a schedule with a compare-and-set.
    """

    name: str
    kind: ScheduleKind
    cron: str | None
    every_seconds: int | None
    event: EventKind | None
    event_filter: str | None
    timezone: str
    catchup: Catchup
    paused: bool
    created_at: datetime
    updated_at: datetime
    last_tick_at: datetime | None
    cursor: dict[str, Any] | None
    revision: int

    @property
    def trigger(self) -> Trigger:
        """What runs it triggers record: ``schedule`` (time) or ``event``."""
        return "event" if self.kind == "event" else "schedule"

    def describe(self) -> str:
        """One line: ``cron '0 3 * * *' (UTC)``, ``every 2s``, ``on registry (model churn)``."""
        if self.kind == "cron":
            return f"cron '{self.cron}' ({self.timezone})"
        if self.kind == "every":
            return f"every {format_seconds(self.every_seconds or 0)}"
        only = f" (model {self.event_filter})" if self.event_filter else ""
        return f"on {self.event}{only}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "trigger": self.describe(),
            "cron": self.cron,
            "every_seconds": self.every_seconds,
            "event": self.event,
            "model": self.event_filter,
            "timezone": self.timezone,
            "catchup": self.catchup,
            "paused": self.paused,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "last_tick_at": _iso(self.last_tick_at),
        }


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick a scheduler claimed: when it was due, why, and how its pipeline run went.

    ``missed`` counts the earlier ticks this one stands for (catch-up ``latest``, or the ticks a
    ``skipped`` row records). ``overhead_ms`` is the time from the tick being due to the
    pipeline starting, the scheduler's own cost.
    """

    id: int
    schedule: str
    tick_at: datetime
    trigger: str
    reason: str
    status: TickStatus
    owner: str
    missed: int
    claimed_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    overhead_ms: float | None
    pipeline_run_id: str | None
    summary: dict[str, Any] | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""
        return {
            "id": self.id,
            "schedule": self.schedule,
            "tick_at": self.tick_at.isoformat(),
            "trigger": self.trigger,
            "reason": self.reason,
            "status": self.status,
            "owner": self.owner,
            "missed": self.missed,
            "claimed_at": self.claimed_at.isoformat(),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "overhead_ms": self.overhead_ms,
            "pipeline_run_id": self.pipeline_run_id,
            "summary": self.summary,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Lease:
    """The scheduler's leader lease: who holds it and until when.

    ``generation`` grows by one whenever the owner changes; a tick is only claimed by the
    owner of the current generation while its lease is unexpired (a fencing token).
    """

    name: str
    owner: str
    generation: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime

    def alive(self, now: datetime) -> bool:
        """Whether the lease is held at ``now``."""
        return self.expires_at > now

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""
        return {
            "name": self.name,
            "owner": self.owner,
            "generation": self.generation,
            "acquired_at": self.acquired_at.isoformat(),
            "renewed_at": self.renewed_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened that schedules may trigger on (``kind`` ``alert``, ...)."""

    id: int
    kind: str
    subject: str
    payload: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "payload": self.payload,
            "created_at": self.created_at.isoformat(),
        }


def format_seconds(seconds: int) -> str:
    """``90`` -> ``90s``, ``300`` -> ``5m``, ``7200`` -> ``2h``, ``86400`` -> ``1d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def schedule_from_row(row: Mapping[Any, Any]) -> Schedule:
    """A :class:`Schedule` from a ``schedules`` row."""
    return Schedule(
        name=row["name"],
        kind=row["kind"],
        cron=row["cron"],
        every_seconds=row["every_seconds"],
        event=row["event"],
        event_filter=row["event_filter"],
        timezone=row["timezone"],
        catchup=row["catchup"],
        paused=bool(row["paused"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_tick_at=row["last_tick_at"],
        cursor=row["cursor"],
        revision=row["revision"],
    )


def tick_from_row(row: Mapping[Any, Any]) -> Tick:
    """A :class:`Tick` from a ``schedule_ticks`` row."""
    return Tick(**{column.name: row[column.name] for column in schedule_ticks.columns})


def lease_from_row(row: Mapping[Any, Any]) -> Lease:
    """A :class:`Lease` from a ``scheduler_leases`` row."""
    return Lease(**{column.name: row[column.name] for column in scheduler_leases.columns})


def event_from_row(row: Mapping[Any, Any]) -> Event:
    """An :class:`Event` from an ``events`` row."""
    return Event(**{column.name: row[column.name] for column in events.columns})


def select_schedule(name: str) -> sa.Select[Any]:
    """The query for one schedule's row."""
    return sa.select(schedules).where(schedules.c.name == name)


def newest_event_id(conn: sa.Connection, kind: str, subject: str | None) -> int:
    """The id of the newest event of ``kind`` (about ``subject`` when given); 0 when none."""
    query = sa.select(events.c.id).where(events.c.kind == kind)
    if subject is not None:
        query = query.where(events.c.subject == subject)
    found = conn.scalar(query.order_by(events.c.id.desc()).limit(1))
    return int(found or 0)


def event_rows_after(
    conn: sa.Connection, kind: str, subject: str | None, after: int, limit: int
) -> list[Event]:
    """Events of ``kind`` with an id above ``after``, oldest first, at most ``limit``."""
    query = sa.select(events).where(events.c.kind == kind, events.c.id > after)
    if subject is not None:
        query = query.where(events.c.subject == subject)
    rows = conn.execute(query.order_by(events.c.id).limit(limit)).mappings()
    return [event_from_row(row) for row in rows]


def newest_audit_id(conn: sa.Connection, actions: Sequence[str], target: str | None) -> int:
    """The id of the newest audit-log row with one of ``actions``; 0 when none."""
    query = sa.select(audit_log.c.id).where(audit_log.c.action.in_(actions))
    if target is not None:
        query = query.where(audit_log.c.target == target)
    found = conn.scalar(query.order_by(audit_log.c.id.desc()).limit(1))
    return int(found or 0)


def audit_rows_after(
    conn: sa.Connection, actions: Sequence[str], target: str | None, after: int, limit: int
) -> list[dict[str, Any]]:
    """Audit-log rows with one of ``actions`` and an id above ``after``, oldest first."""
    query = sa.select(audit_log).where(audit_log.c.action.in_(actions), audit_log.c.id > after)
    if target is not None:
        query = query.where(audit_log.c.target == target)
    rows = conn.execute(query.order_by(audit_log.c.id).limit(limit)).mappings()
    return [dict(row) for row in rows]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
