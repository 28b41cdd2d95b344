"""A queued prediction-log line costs about its own size, whatever its encoder allocated."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

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
    line = log._queue[-1][2]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    # the line, its queue entry and the deque's share: orjson's own buffer is 8 KB
    assert held < len(line) + 300, (held, len(line))
    assert log.flush() == 1001
    records = list(read_prediction_log(tmp_path, "adult"))
    assert [r["request_id"] for r in records[:2]] == ["warm", "r000000"]
    assert len(records) == 1001 and records[-1]["feature_pipeline"] == "abc"
    data = next(tmp_path.glob("adult/*/*.jsonl")).read_bytes()
    assert data.count(b"\n") == 1001 and data.endswith(b"}\n")
