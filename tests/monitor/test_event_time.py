"""Event-time windows (``monitor.time_column``) and calendar months (``1mo``): windows cut by
the rows' own dates, parsed vectorised, with unparseable times counted; the same windows from
JSON Lines and from compacted Parquet; month panes merged from stored hourly sketches."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from keel.errors import ConfigError
from keel.monitor.compact import LoggedVersions, compact_log
from keel.monitor.eventtime import event_times
from keel.monitor.report import MonitorSettings, monitor_log
from keel.monitor.sketches import stored_counts
from keel.monitor.window import LogFilter, parse_window

from .conftest import DAY, T0, Writer

MONTHS = ("2024-01-15", "2024-02-29", "2024-03-31T23:59:59Z")


def test_event_times_parse_dates_times_zones_and_numbers() -> None:
    text = pa.array(["2024-02-29", "2024-02-29T10:30:00", "2024-02-29 10:30:00",
                     "2024-02-29T12:30:00+02:00", "2024-02-29T10:30:00Z", " 2024/02/29 ",
                     "29.02.2024", "", None, "2024-02-30"])  # fmt: skip
    found = event_times(text)
    midnight = 1_709_164_800.0  # 2024-02-29T00:00:00Z
    assert found[0] == midnight and found[5] == midnight
    assert (found[1:5] == midnight + 10.5 * 3600).all()
    assert np.isnan(found[6:]).all()  # unknown format, empty, null, no such day
    assert event_times(pa.array([midnight, None, np.inf])).tolist()[0] == midnight
    assert np.isnan(event_times(pa.array([midnight, None, np.inf]))[1:]).all()
    assert event_times(pa.array([1, 2], pa.date32())).tolist() == [86_400.0, 172_800.0]


def test_calendar_month_windows() -> None:
    spec = parse_window("1mo")
    assert (spec.kind, spec.describe()) == ("months", "1mo")
    times = event_times(pa.array([*MONTHS, "2024-12-31T23:59:59", "2025-01-01"]))
    panes = spec.pane_of(times, 0)
    assert np.diff(panes).tolist() == [1, 1, 9, 1]
    assert spec.bounds(int(panes[1])) == ("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")
    assert spec.bounds(int(panes[3])) == ("2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z")
    quarter = parse_window("3mo", "1mo")
    assert (quarter.describe(), quarter.panes) == ("3mo every 1mo", 3)
    assert quarter.bounds(int(panes[0])) == ("2024-01-01T00:00:00Z", "2024-04-01T00:00:00Z")
    assert parse_window("1m").kind == "time"  # minutes stay minutes
    for bad, step in (("0mo", None), ("2mo", "1d"), ("3mo", "2mo")):
        with pytest.raises(ConfigError, match=r"monitor\.window"):
            parse_window(bad, step)


def _dated(rows: list[dict[str, Any]], days: list[str]) -> list[dict[str, Any]]:
    return [{**r, "event_date": days[i % len(days)]} for i, r in enumerate(rows)]


def _windows(report: Any) -> list[tuple[str, str, int]]:
    return [(w["start"], w["end"], w["rows"]) for w in report.to_dict()["windows"]]


def test_event_time_windows_from_json_lines_and_parquet(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    rows = _dated(adult_rows[:3000], [*MONTHS, "not a date"])  # served within one hour
    root = write_log(rows, start=T0, gap=1)
    settings = MonitorSettings(window=parse_window("1mo"), time_column="event_date", min_rows=50)
    by_event = monitor_log(adult_reference, root, settings=settings)
    assert by_event.window == "1mo by event_date"
    assert _windows(by_event) == [
        ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", 750),
        ("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 750),
        ("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z", 750),
    ]
    assert by_event.overall.rows == 2250
    assert any("750 of 3000 logged rows have no event_date" in n for n in by_event.notes)
    by_request = monitor_log(adult_reference, root, settings=replace(settings, time_column=None))
    assert [w[2] for w in _windows(by_request)] == [3000]  # all in November 2023

    # compacted into Parquet (the column kept in the part): the same windows, rows read again
    for path in root.rglob("*.jsonl"):
        os.utime(path, (T0 + 3 * DAY, T0 + 3 * DAY))
    versions = LoggedVersions({"1": adult_reference})
    versions.types["event_date"] = pa.string()
    done = compact_log(root / "adult", lambda: versions, now=T0 + 30 * DAY)
    assert done.rows == 3000 and not list(root.rglob("*.jsonl"))
    again = monitor_log(adult_reference, root, settings=settings)
    assert _windows(again) == _windows(by_event)
    assert again.to_dict()["windows"] == by_event.to_dict()["windows"]
    assert again.notes == by_event.notes

    # request-time months come from the stored hourly sketches, without reading a part
    months = parse_window("1mo")
    stored = stored_counts(adult_reference, root, LogFilter(), months)
    assert len(stored.parts) == 1 and sum(p.rows for p in stored.panes.values()) == 3000
    assert _windows(monitor_log(adult_reference, root, settings=replace(
        settings, time_column=None))) == _windows(by_request)  # fmt: skip


def test_a_time_column_the_log_lacks_is_a_clear_error(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = write_log(adult_rows[:200])
    settings = MonitorSettings(window=parse_window("1mo"), time_column="dteday")
    with pytest.raises(ConfigError, match=r"monitor\.time_column: .* no column 'dteday'") as err:
        monitor_log(adult_reference, root, settings=settings)
    assert err.value.field == "monitor.time_column"
    empty = monitor_log(adult_reference, Path(root).parent / "nothing", settings=settings)
    assert empty.overall.rows == 0  # nothing logged: nothing to complain about


def test_the_server_keeps_the_time_column_in_the_logged_row() -> None:
    from keel.validate.coerce import Coercer

    coercer = Coercer.from_types({"temp": "float"})
    coercer.ignore(["dteday", "cnt"])
    row = {"temp": 0.3, "dteday": "2012-01-01", "cnt": 5}
    coercer.row(row)
    assert row == {"temp": 0.3}  # ignored fields are not logged
    coercer.keep(["dteday", "unknown"])
    assert coercer.kept == {"dteday"}  # only a column of the training data
    row = {"temp": 0.3, "dteday": "2012-01-01", "cnt": 5}
    _, findings = coercer.row(row)
    assert row == {"temp": 0.3, "dteday": "2012-01-01"}
    assert [f.field for f in findings] == ["cnt"]  # no "ignored" warning for the time column
