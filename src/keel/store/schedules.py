"""The schedule store: schedules, their ticks, the scheduler's leader lease, and events.

Several ``keel scheduler`` processes may share one metadata database (SQLite or PostgreSQL);
at most one leads at a time. Leadership is a row in ``scheduler_leases`` taken and renewed by
compare-and-set ``UPDATE`` on its expiry time, so it needs nothing but the database. A tick is
claimed in one transaction that checks the lease (owner, generation, unexpired), advances the
schedule by compare-and-set on its revision and inserts the tick, whose (schedule, tick_at) is
unique: even a leader that lost its lease without knowing cannot run a tick twice.

Example:
    >>> store = ScheduleStore("sqlite:///:memory:")
    >>> store.add_schedule("nightly", kind="cron", cron="0 3 * * *").describe()
    "cron '0 3 * * *' (UTC)"
    >>> store.acquire_lease("host:1", seconds=15).generation
    1
    >>> store.close()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.store import schedule_tables as q
from keel.store.database import Database
from keel.store.schedule_tables import Event, Lease, Schedule, Tick, TickStatus
from keel.store.tables import events, schedule_ticks, scheduler_leases, schedules, utc_now

__all__ = ["LEADER_LEASE", "ScheduleStore"]

LEADER_LEASE = "scheduler"
"""The name of the lease the leading ``keel scheduler`` holds."""
_NAME_LENGTH = 100
_ERROR_LENGTH = 4000


class ScheduleStore:
    """Schedules, ticks, the leader lease and events in the metadata database.

    Args:
        url: The metadata database's SQLAlchemy URL (migrated on open, as ``MetadataStore``).
    """

    def __init__(self, url: str) -> None:
        self._db = Database(url)

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return self._db.display_url

    @property
    def database(self) -> Database:
        """The open metadata database (webhook delivery shares it)."""
        return self._db

    def __enter__(self) -> ScheduleStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connections."""
        self._db.close()

    # -- schedules ---------------------------------------------------------------------------

    def add_schedule(
        self,
        name: str,
        *,
        kind: q.ScheduleKind,
        cron: str | None = None,
        every_seconds: int | None = None,
        event: q.EventKind | None = None,
        event_filter: str | None = None,
        timezone: str = "UTC",
        catchup: q.Catchup = "latest",
        cursor: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Schedule:
        """Store a new schedule; its first tick is the first one after ``now``.

        The trigger itself (cron syntax, time zone) is checked by :mod:`keel.pipeline.cron`
        before it gets here.

        Raises:
            ConfigError: The name is empty or too long, or ``catchup`` is unknown.
            ConflictError: A schedule with this name exists.
        """
        _check_name(name)
        if catchup not in q.CATCHUP:
            msg = f"unknown catch-up policy {catchup!r}; expected one of {', '.join(q.CATCHUP)}"
            raise ConfigError(msg, field="catchup")
        now = now or utc_now()
        values = {
            "name": name,
            "kind": kind,
            "cron": cron,
            "every_seconds": every_seconds,
            "event": event,
            "event_filter": event_filter,
            "timezone": timezone,
            "catchup": catchup,
            "paused": False,
            "created_at": now,
            "updated_at": now,
            "last_tick_at": now if kind != "event" else None,
            "cursor": dict(cursor) if cursor is not None else None,
            "revision": 1,
        }
        try:
            with self._db.write() as conn:
                conn.execute(sa.insert(schedules).values(**values))
        except sa.exc.IntegrityError as exc:
            msg = (
                f"a schedule named {name!r} exists already. Remove it first "
                f"(keel schedule remove {name}) or choose another name."
            )
            raise ConflictError(msg, field="name") from exc
        return q.schedule_from_row(values)

    def get_schedule(self, name: str) -> Schedule:
        """One schedule. NotFoundError (listing the names there are) when there is none."""
        with self._db.read() as conn:
            row = conn.execute(q.select_schedule(name)).mappings().first()
            if row is None:
                names = list(conn.scalars(sa.select(schedules.c.name).order_by("name")))
        if row is None:
            known = ", ".join(names) if names else "none yet (add one with keel schedule add)"
            msg = f"no schedule named {name!r}; schedules: {known}"
            raise NotFoundError(msg, field="name")
        return q.schedule_from_row(row)

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(schedules).order_by(schedules.c.name)).mappings()
            return [q.schedule_from_row(row) for row in rows]

    def set_paused(self, name: str, paused: bool, *, now: datetime | None = None) -> Schedule:
        """Pause or resume a schedule. Resuming a time schedule starts from ``now``: ticks that
        fell in the pause are not caught up (events seen in it trigger once).

        Raises:
            NotFoundError: There is no such schedule.
        """
        now = now or utc_now()
        changes: dict[str, Any] = {"paused": paused, "updated_at": now}
        current = self.get_schedule(name)
        if not paused and current.paused and current.kind != "event":
            changes["last_tick_at"] = now
        with self._db.write() as conn:
            conn.execute(
                sa.update(schedules)
                .where(schedules.c.name == name)
                .values(revision=schedules.c.revision + 1, **changes)
            )
        return self.get_schedule(name)

    def remove_schedule(self, name: str) -> None:
        """Delete a schedule (its ticks stay, as history). NotFoundError when there is none."""
        with self._db.write() as conn:
            deleted = conn.execute(sa.delete(schedules).where(schedules.c.name == name))
        if deleted.rowcount == 0:
            self.get_schedule(name)  # raises NotFoundError listing the names

    # -- the leader lease --------------------------------------------------------------------

    def acquire_lease(
        self, owner: str, *, seconds: float, now: datetime | None = None
    ) -> Lease | None:
        """Take the leader lease if it is free or expired (or already ``owner``'s).

        Returns:
            The lease now held, or None while another owner's lease is unexpired.
        """
        now = now or utc_now()
        try:
            taken = self._take_lease(owner, now, now + timedelta(seconds=seconds))
        except sa.exc.IntegrityError:
            return None  # another process created the lease row first
        return self.get_lease() if taken else None

    def _take_lease(self, owner: str, now: datetime, expires: datetime) -> bool:
        taken = scheduler_leases.c.owner != owner
        with self._db.write() as conn:
            done = conn.execute(
                sa.update(scheduler_leases)
                .where(
                    scheduler_leases.c.name == LEADER_LEASE,
                    sa.or_(scheduler_leases.c.expires_at <= now, ~taken),
                )
                .values(
                    owner=owner,
                    # a new owner is a new generation; the same owner keeps its own
                    generation=scheduler_leases.c.generation + sa.case((taken, 1), else_=0),
                    acquired_at=sa.case((taken, now), else_=scheduler_leases.c.acquired_at),
                    renewed_at=now,
                    expires_at=expires,
                )
            )
            if done.rowcount == 0:
                exists = conn.scalar(
                    sa.select(scheduler_leases.c.name).where(
                        scheduler_leases.c.name == LEADER_LEASE
                    )
                )
                if exists is not None:
                    return False
                conn.execute(
                    sa.insert(scheduler_leases).values(
                        name=LEADER_LEASE,
                        owner=owner,
                        generation=1,
                        acquired_at=now,
                        renewed_at=now,
                        expires_at=expires,
                    )
                )
        return True

    def renew_lease(
        self, owner: str, generation: int, *, seconds: float, now: datetime | None = None
    ) -> Lease | None:
        """Extend ``owner``'s unexpired lease of ``generation``; None when it was lost."""
        now = now or utc_now()
        with self._db.write() as conn:
            done = conn.execute(
                sa.update(scheduler_leases)
                .where(*_held(owner, generation, now))
                .values(renewed_at=now, expires_at=now + timedelta(seconds=seconds))
            )
        return self.get_lease() if done.rowcount == 1 else None

    def release_lease(self, owner: str, *, now: datetime | None = None) -> bool:
        """Give up ``owner``'s lease at once, so a follower takes over without waiting."""
        now = now or utc_now()
        with self._db.write() as conn:
            done = conn.execute(
                sa.update(scheduler_leases)
                .where(scheduler_leases.c.name == LEADER_LEASE, scheduler_leases.c.owner == owner)
                .values(expires_at=now, renewed_at=now)
            )
        return done.rowcount == 1

    def get_lease(self) -> Lease | None:
        """The leader lease as stored (check :meth:`Lease.alive`), or None if never taken."""
        query = sa.select(scheduler_leases).where(scheduler_leases.c.name == LEADER_LEASE)
        with self._db.read() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else q.lease_from_row(row)

    # -- ticks -------------------------------------------------------------------------------

    def claim_tick(
        self,
        schedule: Schedule,
        tick_at: datetime,
        *,
        owner: str,
        generation: int,
        reason: str,
        missed: int = 0,
        status: TickStatus = "running",
        cursor: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Tick | None:
        """Record a tick and advance its schedule, in one transaction, if nobody else did.

        The schedule moves to ``last_tick_at=tick_at`` (time schedules) or ``cursor`` (event
        schedules). ``status="skipped"`` records ticks let go under the catch-up policy.

        Returns:
            The tick, or None when ``owner`` no longer holds lease ``generation``, the schedule
            changed since it was read (paused, removed, advanced), or the tick exists already.
        """
        now = now or utc_now()
        advance: dict[str, Any] = {"revision": schedule.revision + 1}
        if schedule.kind == "event":
            advance["cursor"] = dict(cursor or {})
        else:
            advance["last_tick_at"] = tick_at
        values = {
            "schedule": schedule.name,
            "tick_at": tick_at,
            "trigger": schedule.trigger,
            "reason": reason,
            "status": status,
            "owner": owner,
            "missed": missed,
            "claimed_at": now,
            "ended_at": now if status == "skipped" else None,
        }
        try:
            with self._db.write() as conn:
                if not _holds_lease(conn, owner, generation, now):
                    return None
                moved = conn.execute(
                    sa.update(schedules)
                    .where(
                        schedules.c.name == schedule.name,
                        schedules.c.revision == schedule.revision,
                        schedules.c.paused.is_(False),
                    )
                    .values(**advance)
                )
                if moved.rowcount != 1:
                    return None
                tick_id = conn.execute(
                    sa.insert(schedule_ticks).values(**values)
                ).inserted_primary_key
        except sa.exc.IntegrityError:
            if self._tick_exists(schedule.name, tick_at):
                return None
            raise
        assert tick_id is not None
        unset = {"started_at": None, "overhead_ms": None, "pipeline_run_id": None}
        return q.tick_from_row({"id": int(tick_id[0]), **values, **unset, "summary": None,
                                "error": None})  # fmt: skip

    def advance_cursor(
        self,
        schedule: Schedule,
        cursor: Mapping[str, Any],
        *,
        owner: str,
        generation: int,
        now: datetime | None = None,
    ) -> bool:
        """Move an event schedule's cursor without a tick (a first look, or events a run it
        triggered caused); False when the lease or the schedule changed."""
        now = now or utc_now()
        with self._db.write() as conn:
            if not _holds_lease(conn, owner, generation, now):
                return False
            moved = conn.execute(
                sa.update(schedules)
                .where(
                    schedules.c.name == schedule.name,
                    schedules.c.revision == schedule.revision,
                )
                .values(cursor=dict(cursor), revision=schedule.revision + 1)
            )
        return moved.rowcount == 1

    def finish_tick(
        self,
        tick_id: int,
        *,
        status: TickStatus,
        started_at: datetime | None = None,
        overhead_ms: float | None = None,
        pipeline_run_id: str | None = None,
        summary: Mapping[str, Any] | None = None,
        error: str | None = None,
        now: datetime | None = None,
    ) -> Tick:
        """Record how a claimed tick's run ended."""
        with self._db.write() as conn:
            conn.execute(
                sa.update(schedule_ticks)
                .where(schedule_ticks.c.id == tick_id)
                .values(
                    status=status,
                    started_at=started_at,
                    ended_at=now or utc_now(),
                    overhead_ms=overhead_ms,
                    pipeline_run_id=pipeline_run_id,
                    summary=dict(summary) if summary is not None else None,
                    error=error[:_ERROR_LENGTH] if error else None,
                )
            )
        return self.get_tick(tick_id)

    def fail_orphaned_ticks(self, owner: str, *, now: datetime | None = None) -> int:
        """Mark ``running`` ticks of other owners failed: the leader calls this on taking over,
        when any such tick's scheduler died (its lease expired) mid-run. Returns how many."""
        with self._db.write() as conn:
            done = conn.execute(
                sa.update(schedule_ticks)
                .where(schedule_ticks.c.status == "running", schedule_ticks.c.owner != owner)
                .values(
                    status="failed",
                    ended_at=now or utc_now(),
                    error=(
                        "the scheduler running this tick stopped (its leader lease expired) "
                        "before the run finished"
                    ),
                )
            )
        return int(done.rowcount)

    def get_tick(self, tick_id: int) -> Tick:
        """One tick by id. NotFoundError when there is none."""
        with self._db.read() as conn:
            row = (
                conn.execute(sa.select(schedule_ticks).where(schedule_ticks.c.id == tick_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no schedule tick {tick_id}", field="tick")
        return q.tick_from_row(row)

    def list_ticks(self, schedule: str | None = None, *, limit: int = 50) -> list[Tick]:
        """The newest ticks (of one schedule), newest first."""
        query = sa.select(schedule_ticks).order_by(schedule_ticks.c.id.desc()).limit(limit)
        if schedule is not None:
            query = query.where(schedule_ticks.c.schedule == schedule)
        with self._db.read() as conn:
            return [q.tick_from_row(row) for row in conn.execute(query).mappings()]

    def _tick_exists(self, schedule: str, tick_at: datetime) -> bool:
        query = sa.select(schedule_ticks.c.id).where(
            schedule_ticks.c.schedule == schedule, schedule_ticks.c.tick_at == tick_at
        )
        with self._db.read() as conn:
            return conn.scalar(query) is not None

    # -- events ------------------------------------------------------------------------------

    def record_event(
        self, kind: str, subject: str, payload: Mapping[str, Any] | None = None
    ) -> Event:
        """Append an event (monitoring records ``alert`` events about a model here)."""
        created, data = utc_now(), dict(payload or {})
        insert = sa.insert(events).values(
            kind=kind, subject=subject, payload=data, created_at=created
        )
        with self._db.write() as conn:
            key = conn.execute(insert).inserted_primary_key
        assert key is not None
        return Event(int(key[0]), kind, subject, data, created)

    def newest_event_id(self, kind: str, subject: str | None = None) -> int:
        """The newest event id of ``kind`` (about ``subject``); 0 when there is none."""
        with self._db.read() as conn:
            return q.newest_event_id(conn, kind, subject)

    def events_after(
        self, kind: str, after: int, *, subject: str | None = None, limit: int = 20
    ) -> list[Event]:
        """Events of ``kind`` newer than id ``after``, oldest first."""
        with self._db.read() as conn:
            return q.event_rows_after(conn, kind, subject, after, limit)

    def newest_registry_change(self, model: str | None = None) -> int:
        """The audit-log id of the newest registration or alias move (of ``model``); 0 if none."""
        with self._db.read() as conn:
            return q.newest_audit_id(conn, q.REGISTRY_ACTIONS, model)

    def registry_changes_after(
        self, after: int, *, model: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Registrations and alias moves (audit-log rows) newer than id ``after``, oldest first."""
        with self._db.read() as conn:
            return q.audit_rows_after(conn, q.REGISTRY_ACTIONS, model, after, limit)


def _held(owner: str, generation: int, now: datetime) -> Sequence[sa.ColumnElement[bool]]:
    return (
        scheduler_leases.c.name == LEADER_LEASE,
        scheduler_leases.c.owner == owner,
        scheduler_leases.c.generation == generation,
        scheduler_leases.c.expires_at > now,
    )


def _holds_lease(conn: sa.Connection, owner: str, generation: int, now: datetime) -> bool:
    # FOR UPDATE: on PostgreSQL a follower's takeover waits until this claim commits.
    query = sa.select(scheduler_leases.c.name).where(*_held(owner, generation, now))
    return conn.scalar(query.with_for_update()) is not None


def _check_name(name: str) -> None:
    if not name or len(name) > _NAME_LENGTH or name != name.strip():
        msg = (
            f"invalid schedule name {name!r}: use 1-{_NAME_LENGTH} characters without "
            "leading or trailing spaces"
        )
        raise ConfigError(msg, field="name")
