"""The prediction log cannot hurt serving: bounded queue, counted drops, degraded readiness."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from starlette.testclient import TestClient

from keel.project import Project
from keel.serve.app import create_app
from keel.serve.predlog import PredictionLog, read_prediction_log
from tests.serve.conftest import ROW, copy_project

URL = "/v1/models/adult/predict"


def _wait(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_failing_disk_degrades_readiness_and_recovers(
    adult_project: Path, tmp_path: Path
) -> None:
    root = copy_project(adult_project, tmp_path / "adult", serve="  log_queue_size: 200\n")
    full = threading.Event()
    full.set()
    written: list[bytes] = []

    def disk(path: Path, chunks: Sequence[bytes]) -> None:
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(b"".join(chunks))

    with Project(root) as project:
        app = create_app(project, reload=False)
        assert app.log is not None
        app.log.writer, app.log.interval = disk, 0.05
        rss = psutil.Process().memory_info().rss
        with TestClient(app) as client:
            for _ in range(600):  # bounded load while the disk is full
                assert client.post(URL, json={"instances": [ROW]}).status_code == 200
                assert app.log.queued <= 200
            _wait(lambda: client.get("/v2/health/ready").json()["status"] == "degraded")
            ready = client.get("/v2/health/ready")
            assert ready.status_code == 200  # still serving: degraded, not down
            assert "No space left on device" in ready.json()["reasons"][0]
            before = app.log.dropped
            assert before > 0
            text = client.get("/metrics").text
            after = app.log.dropped  # the writer may still be dropping what was queued
            (line,) = [
                x for x in text.splitlines() if x.startswith("keel_prediction_log_dropped_total ")
            ]
            assert before <= float(line.split()[1]) <= after
            full.clear()  # the disk recovers
            client.post(URL, json={"instances": [ROW]})
            _wait(lambda: client.get("/v2/health/ready").json()["status"] == "ready")
        assert psutil.Process().memory_info().rss - rss < 50 * 1024 * 1024
    assert written and b'"role":"primary"' in written[-1]


def test_a_stuck_writer_cannot_grow_the_queue(tmp_path: Path) -> None:
    release = threading.Event()

    def stuck(path: Path, chunks: Sequence[bytes]) -> None:
        release.wait(10)  # a hung disk
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.writelines(chunks)

    log = PredictionLog(tmp_path, interval=0.01, max_queue=100, writer=stuck)
    log.start()
    try:
        log.append("first", "adult", "1", [ROW], ["<=50K"], [0.1])
        _wait(lambda: log.queued == 0)  # the writer took it and hangs
        for index in range(1000):
            log.append(f"r{index}", "adult", "1", [ROW], ["<=50K"], [0.1],
                       pipeline_hash="abc")  # fmt: skip
        assert log.queued == 100 and log.dropped == 900
        release.set()
    finally:
        log.close()
    records = list(read_prediction_log(tmp_path, "adult"))
    assert len(records) == 101
    assert records[-1]["feature_pipeline"] == "abc" and records[-1]["role"] == "primary"
