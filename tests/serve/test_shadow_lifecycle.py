"""The shadow process lives as long as a deployment shadows something: it exits once the
deployment ends (its last copies still scored and counted), and a new shadow deployment
starts a new one. Its reports are sums per deployment and version, merged by the server in a
few operations whatever the number of copies."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

import keel
from keel.serve.routing import Traffic
from keel.serve.shadow import Copy, WorkerSettings
from tests.serve.conftest import ROW, copy_project, keel_serve
from tests.serve.test_shadow_process import (
    _gone,
    _predict,
    _shadow_pid,
    _shadow_traffic,
    _until,
)


@pytest.fixture(scope="module")
def twice(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adult whose production package is registered again as v2 (a version to shadow)."""
    from keel.project import Project
    from keel.registry.registry import Registry

    root = copy_project(
        adult_project, tmp_path_factory.mktemp("lifecycle") / "adult", "  reload_interval_s: 0.2\n"
    )
    with Project(root) as project:
        registry = Registry(project.metadata.database, actor="test")
        package = registry.resolve("adult@production").package_sha256
        made = registry.register("adult", package_sha256=package, run_id=None, metrics={})
        assert int(made.version) == 2
    return root


def _reaped(pid: int) -> bool:
    """No such process any more: exited and reaped (not a zombie left behind)."""
    return not psutil.pid_exists(pid)


def test_the_shadow_process_exits_when_its_deployment_ends(twice: Path) -> None:
    root = copy_project(twice, twice.parent / "ended")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        made = keel.deploy("adult", shadow=2, project=root)
        deployment = str(made["id"])
        pid = _until(lambda: _shadow_pid(served.process.pid), 30, "no shadow process started")
        rows = [{**ROW, "age": age} for age in range(20, 30)]
        for row in rows:
            _predict(http, served.url, [row])
        keel.abort_deployment(deployment, project=root)
        # the server follows the table within a reload interval; the child finishes what it
        # holds, reports it, and exits; the server reaps it (no zombie, no idle process)
        _until(lambda: _reaped(pid), 30, "the shadow process outlived its deployment")
        assert _shadow_pid(served.process.pid) is None
        assert psutil.Process(served.process.pid).is_running()
        for row in rows:  # the primary answers alone now
            _predict(http, served.url, [row])

        def all_counted() -> bool:  # none lost on exit (the counts reach the status in seconds)
            found = _shadow_traffic(http, served.url, deployment)
            return found is not None and found["requests"] == len(rows)

        _until(all_counted, 30, "copies were lost when the shadow process exited")

        made = keel.deploy("adult", shadow=2, project=root)  # shadowing again: a new process
        again = _until(lambda: _shadow_pid(served.process.pid), 30, "no new shadow process")
        assert again != pid
        _predict(http, served.url, [ROW])

        def counted() -> bool:
            found = _shadow_traffic(http, served.url, str(made["id"]))
            return found is not None and found["requests"] == 1

        _until(counted, 60, "the new shadow process never reported")
    assert _gone(again)


def test_a_report_is_a_few_sums_whatever_the_copies(tmp_path: Path) -> None:
    """Copies of two deployments, some failing: the report carries one row per deployment and
    version, and merged it counts as each copy recorded one by one would."""
    from keel.serve.shadow_worker import ShadowWorker

    reads, writes = os.pipe()
    worker = ShadowWorker.__new__(ShadowWorker)  # only the counting side: no project needed
    worker.settings = WorkerSettings(project=str(tmp_path), copies=-1, reports=writes, parent=0)
    worker.tallies, worker.counted, worker.log_dropped = {}, 0, {}
    one = Copy("d1", "adult", "2", "r", "predict", b"", b"")
    other = Copy("d2", "adult", "3", "r", "predict", b"", b"")
    expected = Traffic()
    for i in range(500):
        seconds = 0.0001 * (1 + i % 40)
        worker.count(one, seconds, compared=1, disagreed=i % 7 == 0)
        expected.record("d1", "2", "shadow", seconds, compared=1, disagreed=i % 7 == 0)
    for _ in range(3):
        worker.count(other, 0.0, error=True)
        expected.record("d2", "3", "shadow", 0.0, error=True)
    worker.report()
    os.close(writes)
    raw = b""
    while chunk := os.read(reads, 1 << 16):
        raw += chunk
    os.close(reads)
    report = orjson.loads(raw[5:])  # after the length and the kind
    assert report["copies"] == 503 and len(report["traffic"]) == 2
    assert len(raw) < 2000  # sums, not 503 rows
    merged = Traffic()
    for deployment, version, errors, compared, disagreed, latency in report["traffic"]:
        merged.merge(deployment, version, "shadow", dict(latency), errors=errors,
                     compared=compared, disagreed=disagreed)  # fmt: skip
    key = lambda row: (row["deployment_id"], row["version"])  # noqa: E731
    assert sorted(merged.drain(), key=key) == sorted(expected.drain(), key=key)
    assert not worker.tallies and worker.counted == 0  # reset once sent
