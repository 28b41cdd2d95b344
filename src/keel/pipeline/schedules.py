"""Defining schedules: check a trigger given on the command line (or from Python) and store it.

Example:
    >>> add_schedule(store, root, "nightly", cron="0 3 * * *")          # doctest: +SKIP
    >>> add_schedule(store, root, "fresh", on="new_data")               # doctest: +SKIP
    >>> add_schedule(store, root, "retrain", on="alert", model="churn")  # doctest: +SKIP
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import cast

from keel.errors import ConfigError
from keel.pipeline.cron import Timing, check_cron, check_timezone, parse_every, ticks_after
from keel.pipeline.triggers import check_event, observe_event
from keel.store.schedule_tables import CATCHUP, Catchup, EventKind, Schedule
from keel.store.schedules import ScheduleStore
from keel.store.tables import utc_now

__all__ = ["add_schedule", "next_due"]


def add_schedule(
    store: ScheduleStore,
    root: Path,
    name: str,
    *,
    cron: str | None = None,
    every: str | None = None,
    on: str | None = None,
    timezone: str | None = None,
    catchup: str | None = None,
    model: str | None = None,
) -> Schedule:
    """Store a schedule with exactly one trigger: ``cron``, ``every`` or ``on``.

    Args:
        store: The project's schedule store.
        root: The project directory (``on="new_data"`` records what its sources hold now).
        name: The schedule's name.
        cron: A 5-field cron expression, in ``timezone`` (default UTC).
        every: A fixed period such as ``30s``, ``5m``, ``1h`` (ticks aligned to the epoch).
        on: ``new_data``, ``registry`` or ``alert``.
        timezone: The IANA zone a ``cron`` expression is read in.
        catchup: ``none``, ``latest`` (default) or ``all``: what happens to ticks missed while
            no scheduler ran. Time schedules only.
        model: For ``registry`` and ``alert``: only events about this model.

    Raises:
        ConfigError: No trigger or more than one, a malformed cron, period, zone, event or
            catch-up policy (each message names the value), or an option that does not apply.
        ConflictError: A schedule with this name exists.
    """
    given = [flag for flag, value in (("--cron", cron), ("--every", every), ("--on", on))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        msg = f"give exactly one trigger: --cron EXPRESSION, --every PERIOD or --on EVENT{got}"
        raise ConfigError(msg, field="trigger")
    if catchup is not None and catchup not in CATCHUP:
        msg = f"unknown catch-up policy {catchup!r} for --catchup; expected none, latest or all"
        raise ConfigError(msg, field="catchup")
    if timezone is not None and cron is None:
        raise ConfigError("--timezone applies to --cron schedules only", field="timezone")
    if on is None and model is not None:
        raise ConfigError("--model applies to --on registry and --on alert only", field="model")
    policy = cast(Catchup, catchup or "latest")
    if cron is not None:
        zone = timezone or "UTC"
        expression = check_cron(cron, zone)
        return store.add_schedule(name, kind="cron", cron=expression, timezone=zone, catchup=policy)
    if every is not None:
        seconds = parse_every(every)
        return store.add_schedule(name, kind="every", every_seconds=seconds, catchup=policy)
    assert on is not None
    if catchup is not None:
        msg = "--catchup applies to --cron and --every: events seen while down trigger one run"
        raise ConfigError(msg, field="catchup")
    check_event(on, model, root)
    event = cast(EventKind, on)
    baseline = observe_event(event, model, root, store, None).cursor
    return store.add_schedule(
        name, kind="event", event=event, event_filter=model, cursor=baseline, catchup="latest"
    )


def next_due(schedule: Schedule, now: datetime | None = None) -> datetime | None:
    """When a time schedule ticks next (None for event schedules and paused ones)."""
    if schedule.kind == "event" or schedule.paused:
        return None
    check_timezone(schedule.timezone)
    timing = Timing(schedule.kind, schedule.cron, schedule.timezone, schedule.every_seconds)
    after = max(schedule.last_tick_at or schedule.created_at, now or utc_now())
    found = ticks_after(timing, after, limit=1)
    return found[0] if found else None
