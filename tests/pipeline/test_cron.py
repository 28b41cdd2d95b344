"""Tick times of cron and fixed-period schedules, and the catch-up plans made from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keel.errors import ConfigError
from keel.pipeline.cron import (
    Timing,
    check_cron,
    check_timezone,
    count_ticks,
    latest_tick,
    parse_every,
    plan_ticks,
    ticks_after,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
EVERY_10S = Timing("every", every_seconds=10)
HOURLY = Timing("cron", "0 * * * *")


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("61 * * * *", "minute"),
        ("0 3 * *", "4 fields"),
        ("0 3 * * * *", "6 fields"),
        ("every day", "2 fields"),
        ("0 25 * * *", "hour"),
        ("", "0 fields"),
    ],
)
def test_a_bad_cron_names_the_expression_and_the_fix(expression: str, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_cron(expression)
    assert repr(expression) in info.value.message
    assert names in info.value.message.lower()
    assert "'0 3 * * *'" in info.value.message
    assert info.value.exit_code == 2


def test_a_cron_that_never_fires_is_refused() -> None:
    with pytest.raises(ConfigError, match="Bad day-of-month"):
        check_cron("0 0 30 2 *")
    # the 1st or 21st of a month that is also its last Monday: never
    with pytest.raises(ConfigError, match="'\\* \\* \\*/20 \\* 1L' never fires"):
        check_cron("* * */20 * 1L")


def test_aliases_and_spacing() -> None:
    assert check_cron("  0   3 * * 1-5 ") == "0 3 * * 1-5"
    assert check_cron("@daily") == "@daily"
    assert ticks_after(Timing("cron", "@hourly"), T0, limit=2) == [
        T0 + timedelta(hours=1), T0 + timedelta(hours=2),
    ]  # fmt: skip


def test_unknown_time_zone() -> None:
    with pytest.raises(ConfigError, match="'Mars/Olympus'"):
        check_timezone("Mars/Olympus")
    with pytest.raises(ConfigError, match="time zone"):
        check_cron("0 3 * * *", "Mars/Olympus")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200),
                                               ("1d", 86400), ("45", 45), (" 2s ", 2)])  # fmt: skip
def test_periods(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1s", "2x", "1.5s", "", "s"])
def test_bad_periods_name_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid period {text!r}"):
        parse_every(text)


def test_cron_ticks_are_strictly_after_and_in_utc() -> None:
    assert ticks_after(HOURLY, T0, limit=2) == [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert ticks_after(HOURLY, T0 + timedelta(microseconds=1), limit=1) == [T0 + timedelta(hours=1)]
    assert ticks_after(HOURLY, T0, until=T0 + timedelta(hours=1, minutes=59)) == [
        T0 + timedelta(hours=1)
    ]


def test_cron_in_a_time_zone_follows_daylight_saving() -> None:
    nightly = Timing("cron", "0 3 * * *", timezone="Europe/Berlin")
    # Berlin moves from UTC+1 to UTC+2 on 2026-03-29
    ticks = ticks_after(nightly, datetime(2026, 3, 27, tzinfo=UTC), limit=3)
    assert [t.hour for t in ticks] == [2, 2, 1]
    assert all(t.tzinfo is UTC for t in ticks)


def test_every_ticks_are_aligned_to_the_epoch() -> None:
    start = T0 + timedelta(seconds=3, microseconds=5)
    assert ticks_after(EVERY_10S, start, limit=2) == [
        T0 + timedelta(seconds=10), T0 + timedelta(seconds=20),
    ]  # fmt: skip
    assert latest_tick(EVERY_10S, T0 + timedelta(seconds=19)) == T0 + timedelta(seconds=10)
    assert latest_tick(EVERY_10S, T0 + timedelta(seconds=20)) == T0 + timedelta(seconds=20)
    assert count_ticks(EVERY_10S, T0, T0 + timedelta(seconds=65)) == 6


def test_latest_cron_tick_includes_the_moment_itself() -> None:
    assert latest_tick(HOURLY, T0 + timedelta(hours=2)) == T0 + timedelta(hours=2)
    assert latest_tick(HOURLY, T0 + timedelta(hours=2, seconds=-1)) == T0 + timedelta(hours=1)
    assert count_ticks(HOURLY, T0, T0 + timedelta(hours=3)) == 3


def _plan(catchup: str, timing: Timing = EVERY_10S, seconds: float = 65, grace: float = 15.0):
    return plan_ticks(timing, catchup, T0, T0 + timedelta(seconds=seconds), grace=grace)


def test_nothing_due_gives_the_next_tick() -> None:
    plan = _plan("latest", seconds=5)
    assert plan.run == () and plan.skip is None
    assert plan.next_due == T0 + timedelta(seconds=10)


def test_catchup_all_runs_every_missed_tick_in_order() -> None:
    plan = _plan("all")
    assert plan.run == tuple((T0 + timedelta(seconds=s), 0) for s in (10, 20, 30, 40, 50, 60))
    assert plan.skip is None and plan.next_due == T0 + timedelta(seconds=70)


def test_catchup_latest_runs_the_newest_once_standing_for_the_rest() -> None:
    plan = _plan("latest")
    assert plan.run == ((T0 + timedelta(seconds=60), 5),)
    assert plan.skip is None and plan.next_due == T0 + timedelta(seconds=70)


def test_catchup_none_runs_only_an_on_time_tick_and_records_the_skipped() -> None:
    plan = _plan("none")  # grace 15 s: only the tick at 60 s is on time at 65 s
    assert plan.run == ((T0 + timedelta(seconds=60), 0),)
    assert plan.skip == (T0 + timedelta(seconds=50), 4)
    late = _plan("none", seconds=79, grace=5)  # the newest tick (70 s) is 9 s late
    assert late.run == () and late.skip == (T0 + timedelta(seconds=70), 6)


def test_a_long_cron_outage_is_counted() -> None:
    plan = _plan("latest", HOURLY, seconds=5 * 3600 + 30)
    assert plan.run == ((T0 + timedelta(hours=5), 4),)
