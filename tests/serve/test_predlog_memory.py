"""A queued prediction-log line costs about its own size, whatever its encoder allocated."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from keel.serve.predlog import PredictionLog, read_prediction_log
from tests.serve.conftest import ROW


def test_a_queued_line_holds_its_own_size_not_the_encoders_buffer(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_queue=10_000)  # no writer started: lines stay queued
    log.append("warm", "adult", "1", [ROW], ["<=50K"], [0.1])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(1000):
            log.append(f"r{index:06d}", "adult", "1", [ROW], ["<=50K"], [0.1],
                       pipeline_hash="abc")  # fmt: skip
        held = (tracemalloc.get_traced_memory()[0] - before) / 1000
    finally:
        tracemalloc.stop()
    ((_, chunks),) = log._files.values()
    line = chunks[-1]  # a batch of one request: its line
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and len(chunks) == 1001
    # the line, its queue entry and the deque's share: orjson's own buffer is 8 KB
    assert held < len(line) + 300, (held, len(line))
    assert log.flush() == 1001
    records = list(read_prediction_log(tmp_path, "adult"))
    assert [r["request_id"] for r in records[:2]] == ["warm", "r000000"]
    assert len(records) == 1001 and records[-1]["feature_pipeline"] == "abc"
    data = next(tmp_path.glob("adult/*/*.jsonl")).read_bytes()
    assert data.count(b"\n") == 1001 and data.endswith(b"}\n")


def test_many_batches_are_written_whole_and_in_order(tmp_path: Path) -> None:
    """More chunks than one writev takes (1024), batches of several requests."""
    log = PredictionLog(tmp_path, max_queue=100_000)
    for batch in range(1500):
        requests = [(f"b{batch:04d}-{k}", [ROW], ["<=50K"], [0.1]) for k in range(3)]
        assert log.append_many("adult", "1", requests) == 0
    assert log.queued == 4500
    assert log.flush() == 4500 and log.queued == 0
    ids = [r["request_id"] for r in read_prediction_log(tmp_path, "adult")]
    assert ids == [f"b{b:04d}-{k}" for b in range(1500) for k in range(3)]


def test_a_batch_across_midnight_goes_to_both_days_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.serve.predlog as predlog

    ticks = iter([86_400.0 * 20_000 - 0.5, 86_400.0 * 20_000 + 0.5])  # 2024-10-03 23:59:59.5
    monkeypatch.setattr(predlog.time, "time", lambda: next(ticks))
    log = PredictionLog(tmp_path)
    log.append_many("adult", "1", [("late", [ROW], ["<=50K"], [0.1]),
                                   ("early", [ROW], [">50K"], [0.9])])  # fmt: skip
    monkeypatch.undo()
    assert log.flush() == 2
    days = sorted(p.parent.name for p in tmp_path.glob("adult/*/*.jsonl"))
    assert days == ["2024-10-03", "2024-10-04"]
