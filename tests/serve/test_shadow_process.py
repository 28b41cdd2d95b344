"""The shadow in its own low-priority process, in a real server on 127.0.0.1: mirrored requests
logged with the primary's request ids and counted in the deployment's status; a killed shadow
process restarted (copies meanwhile dropped and counted, no primary request failing); no child
left after the server stops or dies; a shadow that fails to score counted as errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import keel
from tests.serve.conftest import ROW, copy_project, keel_serve, train_candidate

PREDICT = "/v1/models/adult/predict"
INFER = "/v2/models/adult/infer"
REFUSED_AGE = 77  # the shadow version fails to score a request holding this age
FAILING_FEATURE = f'''"""A custom feature this version fails on for one age, when serving."""

import numpy as np

import keel


@keel.feature(vectorized=True)
def age_copy(age: np.ndarray) -> np.ndarray:
    if len(age) < 100 and bool((np.asarray(age) == {REFUSED_AGE}).any()):
        raise ValueError("this version cannot score age {REFUSED_AGE}")
    return np.asarray(age, dtype=float)
'''


@pytest.fixture(scope="module")
def versions(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adult with v1 = production, v2 = retrained with a custom feature that fails on one age
    at serving time (registered under another alias, not promoted)."""
    root = copy_project(
        adult_project, tmp_path_factory.mktemp("shadowproc") / "adult", "  reload_interval_s: 0.2\n"
    )
    assert train_candidate(root, "failing_feats", FAILING_FEATURE) == 2
    return root


def _until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def _shadow_pid(server: int) -> int | None:
    """The server's shadow process, if one runs."""
    try:
        children = psutil.Process(server).children()
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if "keel.serve.shadow_worker" in child.cmdline():
                return child.pid
        except psutil.NoSuchProcess:
            continue
    return None


def _gone(pid: int) -> bool:
    """No such process (a zombie nobody reaps counts as gone: it holds nothing but its id)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _predict(http: httpx.Client, url: str, rows: list[dict[str, Any]]) -> str:
    """Predict ``rows``; the answer must be the primary's. Returns the request id."""
    answer = http.post(f"{url}{PREDICT}", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"
    return str(answer.json()["request_id"])


def _shadow_traffic(http: httpx.Client, url: str, deployment: str) -> dict[str, Any] | None:
    """The shadow's counts in the deployment's REST status (None before any)."""
    status = http.get(f"{url}/v1/deployments/{deployment}")
    assert status.status_code == 200, status.text
    shadow = [t for t in status.json()["traffic"] if t["role"] == "shadow"]
    return shadow[0] if shadow else None


def _logged(root: Path, role: str) -> dict[str, str]:
    """Request id -> model version of the prediction log's records in ``role``."""
    found = {}
    for path in (root / ".keel" / "predictions").rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if record["role"] == role:
                found[record["request_id"]] = record["model_version"]
    return found


def _deployed(root: Path, served_pid: int) -> tuple[str, int]:
    """A shadow deployment of v2; the deployment's id and the shadow process's pid."""
    made = keel.deploy("adult", shadow=2, project=root)
    pid = _until(lambda: _shadow_pid(served_pid), 30, "no shadow process started")
    return str(made["id"]), int(pid)


def _rows(ages: range) -> list[dict[str, Any]]:
    return [{**ROW, "age": age} for age in ages if age != REFUSED_AGE]


def test_mirrored_requests_are_logged_and_counted_by_the_shadow_process(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "mirrored")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        deployment, pid = _deployed(root, served.process.pid)
        assert psutil.Process(pid).ppid() == served.process.pid
        if sys.platform == "linux":  # once started, it scores only on CPU time others leave
            idle = lambda: os.sched_getscheduler(pid) == os.SCHED_IDLE  # noqa: E731
            _until(idle, 60, "the shadow process never went to idle priority")
        rows = _rows(range(20, 80, 2))
        ids = {_predict(http, served.url, [row]) for row in rows}
        infer = {
            "inputs": [
                {"name": k, "datatype": "BYTES" if isinstance(v, str) else "INT64",
                 "shape": [4], "data": [row[k] for row in rows[:4]]}
                for k, v in ROW.items()
            ]
        }  # fmt: skip
        answer = http.post(f"{served.url}{INFER}", json=infer)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        ids.add(answer.json()["request_id"])
        wanted = len(rows) + 4

        def counted() -> dict[str, Any] | None:
            shadow = _shadow_traffic(http, served.url, deployment)
            return shadow if shadow is not None and shadow["compared"] >= wanted else None

        shadow = _until(counted, 60, "the shadow's answers never reached the status")
        assert shadow["compared"] == wanted and shadow["requests"] == len(rows) + 1
        assert shadow["errors"] == 0 and shadow["version"] == 2
        assert 0.0 <= shadow["disagreement_rate"] <= 1.0 and shadow["p50_ms"] > 0
        shown = subprocess.run(
            [sys.executable, "-m", "keel.cli", "deployments", "status", "adult",
             "--format", "json", "--project", str(root)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        cli = next(t for t in json.loads(shown.stdout)["traffic"] if t["role"] == "shadow")
        assert cli["compared"] == wanted and cli["disagreement_rate"] is not None
    assert _gone(pid)
    logged = _logged(root, "shadow")
    assert set(logged) == ids and set(logged.values()) == {"2"}
    assert ids <= set(_logged(root, "primary"))  # the same ids the primary logged


def test_a_killed_shadow_process_is_restarted_and_no_primary_request_fails(
    versions: Path,
) -> None:
    root = copy_project(versions, versions.parent / "killed")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        deployment, pid = _deployed(root, served.process.pid)
        _predict(http, served.url, [ROW])
        _until(lambda: _shadow_traffic(http, served.url, deployment), 60, "never mirrored")
        os.kill(pid, signal.SIGKILL)
        while not _gone(pid):  # every request meanwhile is the primary's, answered
            _predict(http, served.url, [ROW])

        def restarted() -> int | None:
            _predict(http, served.url, [ROW])
            return _shadow_pid(served.process.pid)

        assert _until(restarted, 30, "the shadow process was not restarted") != pid
        metrics = http.get(f"{served.url}/metrics").text
        dropped = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("keel_shadow_dropped")
        )
        assert dropped >= 1  # the copies made while no shadow process ran
        after = {_predict(http, served.url, [row]) for row in _rows(range(30, 40))}

        def resumed() -> bool:
            return bool(after <= set(_logged(root, "shadow")))

        _until(resumed, 60, "mirroring did not resume after the restart")


def test_the_server_leaves_no_shadow_process_behind(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "stopped")
    with keel_serve(root) as served:
        _, pid = _deployed(root, served.process.pid)
        os.kill(served.process.pid, signal.SIGTERM)  # the server alone, not its group
        served.process.wait(timeout=30)
        assert _gone(pid)  # stopped and reaped by the server before it exited
    with keel_serve(root) as served:  # the deployment is still active: a shadow process again
        pid = _until(lambda: _shadow_pid(served.process.pid), 30, "no shadow process started")
        os.kill(served.process.pid, signal.SIGKILL)  # no chance to stop its child
        served.process.wait(timeout=30)
        _until(lambda: _gone(pid), 10, "the shadow process outlived its server")


def test_a_shadow_that_fails_to_score_is_counted_never_felt_by_the_client(
    versions: Path,
) -> None:
    root = copy_project(versions, versions.parent / "failing")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        deployment, _ = _deployed(root, served.process.pid)
        good = _rows(range(20, 60, 4))
        bad = [{**ROW, "age": REFUSED_AGE}] * 4
        for row in good[:5] + bad + good[5:]:  # the bad ones share batches with good ones
            _predict(http, served.url, [row])
        total = len(good) + len(bad)

        def counted() -> dict[str, Any] | None:
            shadow = _shadow_traffic(http, served.url, deployment)
            return shadow if shadow is not None and shadow["requests"] >= total else None

        shadow = _until(counted, 60, "the shadow's failures were never counted")
        assert shadow["requests"] == total and shadow["errors"] == len(bad)
        assert shadow["compared"] == len(good)


def test_copies_cross_the_pipe_in_frames_whatever_the_reads_cut() -> None:
    """A frame split across reads waits for its rest; bytes inside bodies are kept as sent."""
    from keel.serve.shadow import COPY, copy_frame, read_copy, split_frames

    sent = [
        copy_frame("d1", "adult", "2", f"r{i}", "predict", b'{"x":"\\u0000\n"}' * i, b"{}")
        for i in range(5)
    ]
    stream = b"".join(sent)
    buffer, got = bytearray(), []
    for at in range(0, len(stream), 7):  # reads cut anywhere, even inside a length
        buffer += stream[at : at + 7]
        got += split_frames(buffer)
    assert not buffer and [g[:1] for g in got] == [COPY] * 5
    copies = [read_copy(g[1:]) for g in got]
    assert [c.request_id for c in copies] == [f"r{i}" for i in range(5)]
    assert copies[3].body == b'{"x":"\\u0000\n"}' * 3 and copies[3].answer == b"{}"
    assert (copies[0].deployment, copies[0].name, copies[0].version) == ("d1", "adult", "2")
