"""When time schedules tick: 5-field cron expressions in a time zone, and fixed periods.

Cron expressions are evaluated by `cronsim <https://pypi.org/project/cronsim/>`_, which follows
Debian's cron (day-of-month/day-of-week rules, daylight-saving transitions). ``every`` schedules
tick at whole multiples of their period since the Unix epoch, so every scheduler process
computes the same tick times. Tick times are UTC.

Example:
    >>> from datetime import datetime, UTC
    >>> check_cron("0 3 * * *")
    '0 3 * * *'
    >>> ticks_after(Timing("cron", "0 3 * * *"), datetime(2026, 1, 1, tzinfo=UTC), limit=1)
    [datetime.datetime(2026, 1, 1, 3, 0, tzinfo=datetime.timezone.utc)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from keel.errors import ConfigError

__all__ = [
    "Plan",
    "Timing",
    "check_cron",
    "check_timezone",
    "count_ticks",
    "latest_tick",
    "parse_every",
    "plan_ticks",
    "ticks_after",
]

MAX_COUNT = 10_000
"""Ticks counted one by one at most (a cron missed for longer is reported as this many)."""
ALL_BATCH = 100
"""Missed ticks one evaluation runs under catch-up ``all``; the next evaluation runs more."""
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_HELP = (
    "Expected 5 fields, minute hour day-of-month month day-of-week, e.g. '0 3 * * *' "
    "(03:00 every day) or '*/15 * * * *' (every 15 minutes), or one of " + ", ".join(_ALIASES)
)
_EVERY = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Timing:
    """A time schedule's trigger: ``("cron", expression, zone)`` or ``("every", seconds)``."""

    kind: Literal["cron", "every"]
    cron: str | None = None
    timezone: str = "UTC"
    every_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a time schedule's evaluation does now.

    Attributes:
        run: Ticks to run, oldest first, each with how many missed ticks it stands for.
        skip: The newest tick let go under the catch-up policy and how many more it stands for.
        next_due: The first tick after the ones planned (None: the expression never fires).
    """

    run: tuple[tuple[datetime, int], ...]
    skip: tuple[datetime, int] | None
    next_due: datetime | None


def check_cron(expression: str, timezone: str = "UTC") -> str:
    """The expression, stripped, if it is a valid 5-field cron that fires at least once.

    Raises:
        ConfigError: The expression is malformed (the message names it and the bad field) or
            never fires, or the time zone is unknown.
    """
    text = " ".join(expression.split())
    zone = check_timezone(timezone)
    cron = _ALIASES.get(text.lower(), text)
    if len(cron.split()) != 5:
        msg = f"invalid cron expression {expression!r}: {len(cron.split())} fields. {_CRON_HELP}"
        raise ConfigError(msg, field="cron")
    try:
        first = next(iter(CronSim(cron, datetime.now(UTC).astimezone(zone))), None)
    except CronSimError as exc:
        msg = f"invalid cron expression {expression!r}: {exc}. {_CRON_HELP}"
        raise ConfigError(msg, field="cron") from exc
    if first is None:
        msg = f"cron expression {expression!r} never fires (no matching date in 50 years)"
        raise ConfigError(msg, field="cron")
    return text


def check_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Berlin``, ...).

    Raises:
        ConfigError: No such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = (
            f"unknown time zone {name!r}: use an IANA name such as 'UTC', 'Europe/Berlin' or "
            "'America/New_York'"
        )
        raise ConfigError(msg, field="timezone") from exc


def parse_every(text: str) -> int:
    """A period in whole seconds from ``30s``, ``5m``, ``2h``, ``1d`` (or bare seconds).

    Raises:
        ConfigError: Not a positive whole number with an optional unit s, m, h or d.
    """
    found = _EVERY.fullmatch(text)
    seconds = int(found.group(1)) * _UNITS[found.group(2)] if found else 0
    if seconds <= 0:
        msg = (
            f"invalid period {text!r} for --every: use a positive whole number with a unit, "
            "e.g. 30s, 5m, 2h or 1d"
        )
        raise ConfigError(msg, field="every")
    return seconds


def ticks_after(timing: Timing, after: datetime, *, until: datetime | None = None,
                limit: int = ALL_BATCH) -> list[datetime]:  # fmt: skip
    """Tick times strictly after ``after`` (and at or before ``until``), oldest first, at most
    ``limit``."""
    found: list[datetime] = []
    if timing.kind == "every":
        period = _period(timing)
        index = _index(after, period) + 1
        while len(found) < limit:
            tick = _EPOCH + timedelta(seconds=index * period)
            if until is not None and tick > until:
                break
            found.append(tick)
            index += 1
        return found
    for local in _cron_iter(timing, after):
        tick = local.astimezone(UTC)
        if (until is not None and tick > until) or len(found) >= limit:
            break
        found.append(tick)
    return found


def latest_tick(timing: Timing, until: datetime) -> datetime | None:
    """The newest tick at or before ``until``; None when there is none in 50 years."""
    if timing.kind == "every":
        period = _period(timing)
        return _EPOCH + timedelta(seconds=_index(until, period) * period)
    zone = _zone(timing.timezone)
    # reverse iteration from a time with microseconds includes the whole second itself
    start = until.astimezone(zone).replace(microsecond=max(until.microsecond, 1))
    tick = next(iter(CronSim(_cron(timing), start, reverse=True)), None)
    return None if tick is None else tick.astimezone(UTC)


def count_ticks(timing: Timing, after: datetime, until: datetime) -> int:
    """How many ticks fall in (``after``, ``until``]; a cron counts at most :data:`MAX_COUNT`."""
    if until <= after:
        return 0
    if timing.kind == "every":
        period = _period(timing)
        return max(0, _index(until, period) - _index(after, period))
    return len(ticks_after(timing, after, until=until, limit=MAX_COUNT))


def plan_ticks(
    timing: Timing, catchup: str, last_tick_at: datetime, now: datetime, *, grace: float
) -> Plan:
    """Which ticks in (``last_tick_at``, ``now``] to run or skip, by catch-up policy.

    ``none`` runs only a tick at most ``grace`` seconds late (the newest, standing for any
    other on-time ones) and skips the rest; ``latest`` runs the newest once, standing for the
    others; ``all`` runs each in order, :data:`ALL_BATCH` per evaluation.
    """
    due = count_ticks(timing, last_tick_at, now)
    if due == 0:
        upcoming = ticks_after(timing, max(last_tick_at, now), limit=1)
        return Plan((), None, upcoming[0] if upcoming else None)
    if catchup == "all":
        missed = ticks_after(timing, last_tick_at, until=now, limit=ALL_BATCH)
        nxt = ticks_after(timing, missed[-1], limit=1)
        return Plan(tuple((tick, 0) for tick in missed), None, nxt[0] if nxt else None)
    newest = latest_tick(timing, now)
    assert newest is not None  # due > 0
    nxt = ticks_after(timing, now, limit=1)
    following = nxt[0] if nxt else None
    if catchup == "latest":
        return Plan(((newest, due - 1),), None, following)
    cutoff = now - timedelta(seconds=grace)
    on_time = count_ticks(timing, max(last_tick_at, cutoff), now)
    late = due - on_time
    skip = None
    if late:
        newest_late = latest_tick(timing, cutoff) if on_time else newest
        assert newest_late is not None
        skip = (newest_late, late - 1)
    run = ((newest, on_time - 1),) if on_time else ()
    return Plan(run, skip, following)


def _cron_iter(timing: Timing, after: datetime) -> CronSim:
    return CronSim(_cron(timing), after.astimezone(_zone(timing.timezone)))


def _zone(name: str) -> tzinfo:
    # cronsim skips its daylight-saving handling only for datetime's own UTC
    return UTC if name == "UTC" else ZoneInfo(name)


def _cron(timing: Timing) -> str:
    assert timing.cron is not None
    return _ALIASES.get(timing.cron.lower(), timing.cron)


def _period(timing: Timing) -> int:
    assert timing.every_seconds is not None and timing.every_seconds > 0
    return timing.every_seconds


def _index(moment: datetime, period: int) -> int:
    """The number of whole periods from the epoch to ``moment`` (floor)."""
    delta = moment - _EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros // (period * 1_000_000)
