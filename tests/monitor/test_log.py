"""Monitoring the prediction log: windows by time and rows, version and role filters, streaming
in blocks, and the cases that must never give a false verdict (1 row, none of the model's
columns, mixed JSON types, a torn line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel.errors import ConfigError, DataValidationError
from keel.monitor import window as window_module
from keel.monitor.report import MonitorSettings, monitor_log
from keel.monitor.window import LogFilter, parse_window

from .conftest import DAY, T0, Writer


def settings(window: str | None = None, step: str | None = None, **kw: Any) -> MonitorSettings:
    return MonitorSettings(window=parse_window(window, step), **kw)


def shifted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "age": r["age"] + 20, "occupation": "Sales"} for r in rows]


def test_daily_windows_find_the_drifted_day(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    write_log(adult_rows[:3000], start=T0, gap=20)
    write_log(adult_rows[3000:6000], start=T0 + DAY, gap=20)
    root = write_log(shifted(adult_rows[6000:9000]), start=T0 + 2 * DAY, gap=20)
    report = monitor_log(adult_reference, root, settings=settings("1d"))
    assert [w.rows for w in report.windows] == [3000, 3000, 3000]
    assert [w.start[:10] for w in report.windows] == ["2023-11-15", "2023-11-16", "2023-11-17"]
    assert [w.verdict for w in report.windows] == ["stable", "stable", "drift"]
    assert set(report.windows[2].drifted) == {"age", "occupation"}
    assert report.latest == "drift"
    age = {c.column: c for c in report.windows[2].columns}["age"]
    assert age.test == "chi2" and age.p_adjusted is not None and age.p_adjusted < 1e-10
    assert age.wasserstein is not None and age.wasserstein > 1.0  # 20 years ~ 1.5 std
    occupation = {c.column: c for c in report.windows[2].columns}["occupation"]
    assert occupation.test == "g" and occupation.cramers_v is not None
    assert report.overall.rows == 9000
    assert report.overall.prediction is not None  # predicted labels vs the training target
    body = report.to_dict()
    assert body["rows"] == 9000 and body["latest_verdict"] == "drift"
    assert len(body["windows"]) == 3 and body["performance"]["method"] == "cbpe"


def test_row_and_sliding_windows(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = write_log(adult_rows[:2500], start=T0, gap=60)
    rows = monitor_log(adult_reference, root, settings=settings("1000rows"))
    assert [w.rows for w in rows.windows] == [1000, 1000, 500]
    assert [w.start for w in rows.windows] == ["0", "1000", "2000"]
    sliding = monitor_log(adult_reference, root, settings=settings("2000rows", "500rows"))
    assert [w.rows for w in sliding.windows] == [2000, 2000]  # start at 0 and 500 rows
    hours = monitor_log(adult_reference, root, settings=settings("1h", "30m"))
    assert sum(w.rows for w in hours.windows) > 2500  # windows overlap
    assert all(w.rows <= 600 for w in hours.windows)  # 10 rows a minute


def test_version_and_role_select_rows(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    write_log(adult_rows[:300], version="1", role=None)  # no role: the primary
    write_log(adult_rows[300:500], version="2", role="canary", name="2-test.jsonl")
    root = write_log(adult_rows[500:600], version="1", role="shadow", name="3-test.jsonl")
    total = monitor_log(adult_reference, root)
    assert total.overall.rows == 600 and total.versions == ("1", "2")
    one = monitor_log(adult_reference, root, select=LogFilter(version="1"))
    assert one.overall.rows == 400
    primary = monitor_log(adult_reference, root, select=LogFilter(version="1", role="primary"))
    assert primary.overall.rows == 300
    canary = monitor_log(adult_reference, root, select=LogFilter(role="canary"))
    assert canary.overall.rows == 200 and canary.versions == ("2",)
    since = monitor_log(adult_reference, root, select=LogFilter(since=T0 + 10, until=T0 + 20))
    assert since.overall.rows == 2 * 10 * 10  # requests 10..19 of the two longer files


def test_one_row_is_not_enough_data(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = write_log(adult_rows[:1], probabilities=np.array([0.9]))
    report = monitor_log(adult_reference, root, settings=settings("1d"))
    assert report.overall.verdict == "not_enough_data" == report.latest
    assert {c.verdict for c in report.overall.columns} == {"not_enough_data"}
    assert report.overall.performance is None  # no estimate from one row
    assert any("not enough data" in note for note in report.notes)


def test_an_empty_log_is_not_enough_data(adult_reference: Any, tmp_path: Path) -> None:
    report = monitor_log(adult_reference, tmp_path / "nothing")
    assert report.overall.rows == 0 and report.overall.verdict == "not_enough_data"
    assert "no logged predictions" in report.notes[0]


def test_none_of_the_model_columns_is_a_clear_error(
    adult_reference: Any, write_log: Writer
) -> None:
    root = write_log([{"x": i, "y": "a"} for i in range(200)])
    with pytest.raises(DataValidationError, match="none of the model's input columns"):
        monitor_log(adult_reference, root)


def test_some_missing_columns_are_named_not_called_stable(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    rows = [{k: v for k, v in r.items() if k != "race"} for r in adult_rows[:500]]
    report = monitor_log(adult_reference, write_log(rows))
    assert report.missing_columns == ("race",)
    assert "race" not in {c.column for c in report.overall.columns}
    assert any("race" in note for note in report.notes)


def test_mixed_types_are_read_as_serving_reads_them(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer, tmp_path: Path
) -> None:
    rows = adult_rows[:2000]
    clean = monitor_log(adult_reference, write_log(rows, name="a.jsonl"))
    mixed = [
        {**r, "age": str(r["age"]) if i % 2 else r["age"]} for i, r in enumerate(rows)
    ]  # some clients send numbers as text
    mixed[5]["hours-per-week"] = "lots"  # and one value does not convert
    other = tmp_path / "other"
    other.mkdir()
    root = write_log(mixed, name="b.jsonl", model="mixed")
    reference = type(adult_reference)(**{**adult_reference.__dict__, "name": "mixed"})
    report = monitor_log(reference, root)
    assert report.overall.rows == 2000
    by = {c.column: c for c in report.overall.columns}
    before = {c.column: c for c in clean.overall.columns}
    assert by["age"].psi == pytest.approx(before["age"].psi)
    assert by["hours-per-week"].invalid == 1
    assert report.overall.verdict == clean.overall.verdict == "stable"
    assert any("do not convert" in note for note in report.notes)


def test_a_torn_last_line_is_skipped(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = write_log(adult_rows[:500])
    (path,) = list(root.glob("adult/*/*.jsonl"))
    with path.open("ab") as handle:
        handle.write(b'{"request_id": "torn", "time": 1.0, "inp')
    assert monitor_log(adult_reference, root).overall.rows == 500


def test_blocks_stream_with_the_same_result(
    adult_reference: Any,
    adult_rows: list[dict[str, Any]],
    write_log: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = write_log(adult_rows[:3000], start=T0, gap=30)
    whole = monitor_log(adult_reference, root, settings=settings("6h")).to_dict()
    blocks: list[int] = []
    read = window_module._rows

    def counted(table: Any, *args: Any) -> Any:
        blocks.append(table.num_rows)
        return read(table, *args)

    monkeypatch.setattr(window_module, "BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(window_module, "WHOLE_FILE_BYTES", 0)  # streamed from the file
    monkeypatch.setattr(window_module, "_rows", counted)
    streamed = monitor_log(adult_reference, root, settings=settings("6h")).to_dict()
    assert len(blocks) > 5 and sum(blocks) == 300  # requests, a block at a time
    assert streamed == whole


@pytest.mark.parametrize(
    ("window", "step", "problem"),
    [("2x", None, "not a window"), ("1d", "1000rows", "same kind"), ("1d", "7h", "divide"),
     ("0d", None, "not a window"), (None, "1h", "needs a window")],
)  # fmt: skip
def test_bad_windows_name_the_field(window: str | None, step: str | None, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        parse_window(window, step, field="--window")
    assert info.value.field == "--window"


def test_window_text_round_trips() -> None:
    assert parse_window("1d").describe() == "1d"
    assert parse_window("24h").describe() == "1d"
    assert parse_window("7d", "1d").describe() == "7d every 1d"
    assert parse_window("500rows").describe() == "500rows"
    assert parse_window(None).describe() == "all"
