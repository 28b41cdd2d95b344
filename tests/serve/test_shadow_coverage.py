"""What became of a shadow's copies, per deployment, in a real server on 127.0.0.1 with a real
shadow process: copies made, scored, dropped (and why) and shed, in ``keel deployments status``
and its REST answer alike, adding up once the shadow process has reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from keel.project import Project
from keel.registry.deployments import COVERAGE_ROLES, coverage_key
from keel.registry.registry import Registry
from keel.serve.routing import Traffic
from tests.serve.conftest import ROW, copy_project, keel_serve
from tests.serve.test_shadow_process import _shadow_pid, _until

PREDICT = "/v1/models/adult/predict"
BIG = 40  # rows a request: ~10 KB a copy, so a stopped shadow's pipe and buffer fill soon


@pytest.fixture(scope="module")
def versions(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adult with v1 = production and v2 = v1's package again (no training needed)."""
    root = copy_project(
        adult_project, tmp_path_factory.mktemp("coverage") / "adult", "  reload_interval_s: 0.2\n"
    )
    with Project(root) as project:
        reg = Registry(project.metadata.database, actor="test")
        package = reg.show("adult", 1).package_sha256
        assert reg.register("adult", package_sha256=package, run_id=None, metrics={}).version == 2
    return root


def _predict(http: httpx.Client, url: str, rows: int = 1) -> None:
    body = {"instances": [{**ROW, "age": 20 + i % 50} for i in range(rows)]}
    answer = http.post(f"{url}{PREDICT}", json=body)
    assert answer.status_code == 200, answer.text


def _status(http: httpx.Client, url: str, deployment: str) -> dict[str, Any]:
    status = http.get(f"{url}/v1/deployments/{deployment}")
    assert status.status_code == 200, status.text
    return dict(status.json())


def _coverage(http: httpx.Client, url: str, deployment: str) -> dict[str, Any] | None:
    """The shadow's ``coverage`` in the deployment's REST status (None before any copy)."""
    traffic = _status(http, url, deployment)["traffic"]
    found = [t for t in traffic if t["role"] == "shadow" and "coverage" in t]
    return found[0]["coverage"] if found else None


def _settled(http: httpx.Client, url: str, deployment: str, copies: int) -> dict[str, Any] | None:
    """The coverage once it counts at least ``copies``, one for each request the primary
    answered under the deployment (every answer is mirrored), each one accounted for."""
    traffic = _status(http, url, deployment)["traffic"]
    answered = sum(t["requests"] for t in traffic if t["role"] == "primary")
    found = next((t["coverage"] for t in traffic if "coverage" in t), None)
    if found is None or found["copies"] < copies or found["copies"] != answered:
        return None
    return None if found["pending"] else dict(found)


def _dropped(http: httpx.Client, url: str) -> float:
    metrics = http.get(f"{url}/metrics").text
    return next(
        float(m.split()[-1]) for m in metrics.splitlines() if m.startswith("keel_shadow_dropped")
    )


def _cli(root: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "deployments", "status", "adult", *args,
         "--project", str(root)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def _shadowing(http: httpx.Client, served: Any, root: Path) -> tuple[str, int, dict[str, Any]]:
    """A shadow deployment of v2 whose process has scored a copy and reported every copy made
    so far: its id, the shadow process, and its coverage then."""
    deployment = str(keel.deploy("adult", shadow=2, project=root)["id"])
    pid = _until(lambda: _shadow_pid(served.process.pid), 30, "no shadow process started")

    def mirrored() -> dict[str, Any] | None:
        _predict(http, served.url)
        found = _coverage(http, served.url, deployment)
        return found if found is not None and found["scored"] > 0 else None

    scored = _until(mirrored, 60, "no copy was ever scored")
    settled = _until(
        lambda: _settled(http, served.url, deployment, scored["copies"]), 60, "never settled"
    )
    return deployment, pid, settled


def test_a_stopped_shadow_drops_copies_and_status_accounts_for_every_one(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "stopped")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        deployment, pid, before = _shadowing(http, served, root)
        os.kill(pid, signal.SIGSTOP)  # it scores nothing: the pipe fills, then the buffer
        try:
            sent, dropped = 0, _dropped(http, served.url)
            while _dropped(http, served.url) < dropped + 5:
                assert sent < 1_500, "a stopped shadow never dropped a copy"
                for _ in range(20):
                    _predict(http, served.url, BIG)
                sent += 20
        finally:
            os.kill(pid, signal.SIGCONT)  # it scores what the pipe and the buffer kept
        copies = before["copies"] + sent
        after = _until(
            lambda: _settled(http, served.url, deployment, copies), 120, "copies unaccounted"
        )
        assert after["shed"] == 0
        assert after["dropped"] == after["dropped_buffer_full"] > 0
        assert after["scored"] + after["dropped"] + after["shed"] == after["copies"]
        assert after["scored"] > before["scored"] and after["scored_rate"] < 1.0
        cli = json.loads(_cli(root, "--format", "json"))
        shadow = next(t for t in cli["traffic"] if t["role"] == "shadow")
        rest = _coverage(http, served.url, deployment)
        assert shadow["coverage"] == rest == after  # nothing moves: the same stored counts
        text = _cli(root)
    line = f"copies {after['copies']:,}, scored {after['scored']:,}"
    assert line in text and f"buffer full {after['dropped_buffer_full']:,}" in text
    assert "shed 0 (primaries queued)" in text
    assert all(len(row) <= 80 for row in text.splitlines()), text
    from keel.monitor.operations import read_traffic

    with Project(root) as project:  # keel monitor reads served traffic, never copy counts
        roles = set(read_traffic(project.metadata.database, "adult").role)
    assert roles and not roles & set(COVERAGE_ROLES)


def test_copy_counts_are_drained_once_as_gains_under_their_own_key() -> None:
    traffic = Traffic()
    counter = traffic.copies("d1", "2")
    assert traffic.copies("d1", "2") is counter and traffic.drain() == []
    counter.copies, counter.shed, counter.full = 10, 6, 1
    rows = {r["role"]: r for r in traffic.drain()}
    assert {r: rows[r]["requests"] for r in rows} == {"copies": 10, "shed": 6, "dropped:full": 1}
    assert {r["deployment_id"] for r in rows.values()} == {coverage_key("d1")} == {"c-d1"}
    assert traffic.drain() == []  # nothing gained since
    counter.copies += 5
    assert [(r["role"], r["requests"]) for r in traffic.drain()] == [("copies", 5)]


def test_copies_a_dead_shadow_held_are_counted_as_lost(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "lost")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        deployment, pid, before = _shadowing(http, served, root)
        os.kill(pid, signal.SIGSTOP)  # copies pile up in its pipe, never reported ...
        for _ in range(30):
            _predict(http, served.url, BIG)
        os.kill(pid, signal.SIGKILL)  # ... and die with it (with those not written yet)

        meanwhile = []  # copies made before it runs again: lost with it, or none to take them

        def restarted() -> bool:
            _predict(http, served.url)
            meanwhile.append(1)
            return _shadow_pid(served.process.pid) not in (None, pid)

        _until(restarted, 30, "the shadow process was not restarted")

        def lost() -> dict[str, Any] | None:
            found = _coverage(http, served.url, deployment)
            return found if found is not None and found["dropped_process_died"] > 0 else None

        found = _until(lost, 60, "the copies lost with the process were never counted")
        died, down = found["dropped_process_died"], found["dropped_process_down"]
        assert died >= 30 and died + down <= 30 + len(meanwhile)  # all it held, no other
        assert found["dropped_buffer_full"] == 0 and found["scored"] <= before["scored"] + len(
            meanwhile
        )
    settled = json.loads(_cli(root, "--format", "json"))  # after the server's last flush
    final = next(t for t in settled["traffic"] if t["role"] == "shadow")["coverage"]
    assert final["scored"] + final["dropped"] + final["shed"] <= final["copies"]  # none twice
    assert final["dropped_process_died"] >= found["dropped_process_died"]
