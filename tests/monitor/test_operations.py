"""Operational health in `keel monitor`: a real `keel serve` answers requests (good, bad and
shed ones; its tiny log queue drops some), then `keel monitor` reports per-version requests,
error rate, throughput, latency percentiles and log drops from the servers' counts, judges the
SLOs of keel.yaml, and a `latency.p99_ms` alert rule fires through `keel monitor run`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

import keel
from keel.config.monitor import SloConfig
from keel.monitor.operations import Traffic, figures, judge_slo
from keel.registry.deployments import LATENCY_EDGES_MS, bucket_of
from keel.store import deployment_store as ds
from tests.serve.conftest import JSON, ROW, keel_serve

GOOD = 60  # sequential requests the client times
BURST = 48  # concurrent requests, some shed with 503 (serve.slo_p99_ms is tiny)


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained project served once: what the client sent, saw and timed."""
    root = tmp_path_factory.mktemp("operations") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["n_estimators"] = 40  # fast; the model's quality is not tested
    config["evaluate"]["gates"] = []
    # any queue at all would wait past 0.001 ms: concurrent requests are shed with 503
    # a log queue of 2 requests (written every 0.5 s): a quick run of requests overflows it
    config["serve"].update(slo_p99_ms=0.001, threads=1, batching="off", log_queue_size=2)
    config["monitor"]["slo"] = {"p99_ms": 0.05, "error_rate": 1.0}  # p99 <= 50 µs: breached
    config["monitor"]["alerts"] = [
        {"name": "slow", "when": "latency.p99_ms > 0.05", "cooldown": "0s"},
        {"name": "very-slow", "when": "latency.p99_ms > 100000", "cooldown": "0s"},
    ]
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    keel.run(root)
    timings: list[float] = []
    statuses: list[int] = []
    started = time.monotonic()
    with keel_serve(root) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(GOOD):
            begun = time.perf_counter()
            answer = client.post("/v1/models/adult/predict", json={"instances": [ROW]})
            timings.append((time.perf_counter() - begun) * 1000.0)
            statuses.append(answer.status_code)
        bad = client.post("/v1/models/adult/predict", content=b'{"instances": 3}', headers=JSON)
        statuses.append(bad.status_code)  # a client mistake: 4xx, counted, never an error

        def one(_: int) -> int:
            with httpx.Client(base_url=server.url, timeout=10) as own:
                return own.post("/v1/models/adult/predict", json={"instances": [ROW]}).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses += list(pool.map(one, range(BURST)))
    # the server stopped (SIGTERM): its last counts are written on the way out
    return {"root": root, "timings": timings, "statuses": statuses,
            "seconds": time.monotonic() - started}  # fmt: skip


def test_monitor_reports_requests_latency_errors_and_slo(served: dict[str, Any]) -> None:
    root, statuses = served["root"], served["statuses"]
    assert statuses[:GOOD] == [200] * GOOD and statuses[GOOD] == 422
    shed = sum(1 for s in statuses if s >= 500)
    assert all(s in (200, 503) for s in statuses[GOOD + 1 :])

    done = keel_cli("monitor", "adult", "--format", "json", cwd=root)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    latency = report["latency"]
    assert latency["requests"] == len(statuses)  # every request, 4xx ones too
    assert latency["errors"] == shed  # 5xx only: the 422 is no error
    assert latency["error_rate"] == pytest.approx(shed / len(statuses))
    # the server times the model's part of what the client timed: below it (buckets: +30 %)
    client_p50 = statistics.median(served["timings"])
    assert 0 < latency["p50_ms"] <= 1.3 * client_p50 + 0.5
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    # over the span the counts cover (flushes every 5 s): within the client's whole session
    assert len(statuses) / (served["seconds"] + 10) <= latency["throughput_rps"] <= len(statuses)
    answered = statuses.count(200)  # each logs one row, unless the full queue dropped it
    assert latency["log_dropped"] > 0 and latency["log_dropped"] == answered - report["rows"]
    (row,) = report["operations"]
    assert (row["version"], row["role"], row["requests"]) == ("1", "primary", len(statuses))
    assert row["log_dropped"] == latency["log_dropped"]
    slo = report["slo"]
    assert slo["status"] == "breached"
    assert slo["objectives"]["p99_ms"]["status"] == "breached"
    assert slo["objectives"]["error_rate"] == {
        "target": 1.0, "value": latency["error_rate"], "status": "met"
    }  # fmt: skip

    # per window: a time window carries the same figures
    hourly = json.loads(keel_cli("monitor", "adult", "-w", "1d", "-f", "json", cwd=root).stdout)
    counted = sum((w["latency"] or {}).get("requests", 0) for w in hourly["windows"])
    assert counted == len(statuses)
    assert all(w["slo"]["status"] == "breached" for w in hourly["windows"] if w["latency"])

    page = root / "report.html"
    text = keel_cli("monitor", "adult", "--report", str(page), cwd=root).stdout
    assert "operations (served traffic)" in text and "SLO breached" in text
    assert "SLO <strong>breached</strong>" in page.read_text()
    gauges = keel_cli("monitor", "adult", "-f", "prometheus", cwd=root).stdout
    assert 'keel_monitor_slo_breached{model="adult",version="1"} 1.0' in gauges
    assert f'keel_monitor_requests{{model="adult",version="1"}} {len(statuses)}.0' in gauges


def test_latency_rule_fires_through_monitor_run(served: dict[str, Any]) -> None:
    done = keel_cli("monitor", "run", "adult", "--format", "json", cwd=served["root"])
    assert done.returncode in (0, 1), done.stderr
    fired = {alert["rule"] for alert in json.loads(done.stdout)["alerts"]}
    assert "slow" in fired and "very-slow" not in fired


def test_figures_from_counts_and_slo_without_data() -> None:
    # 90 requests at 1 ms, 10 at 40 ms: p50 in 1 ms's bucket, p99 in 40 ms's
    latency = np.zeros((2, len(LATENCY_EDGES_MS) + 1), dtype=np.int64)
    latency[0, bucket_of(1.0)] = 90
    latency[1, bucket_of(40.0)] = 10
    traffic = Traffic(
        at=np.array([10.0, 20.0]),
        version=np.array(["1", "1"], dtype=object),
        role=np.array(["primary", "primary"], dtype=object),
        requests=np.array([90, 10]),
        errors=np.array([0, 3]),
        latency=latency,
    )
    found = figures(traffic, np.ones(2, dtype=bool), 10.0)
    assert found is not None
    assert 1.0 <= found["p50_ms"] <= 1.3 and 40.0 <= found["p99_ms"] <= 52.0
    assert found["error_rate"] == pytest.approx(0.03) and found["throughput_rps"] == 10.0
    assert figures(traffic, np.zeros(2, dtype=bool), 10.0) is None
    judged = judge_slo(SloConfig(p99_ms=50.0), None)
    assert judged == {"status": "no_data",
                      "objectives": {"p99_ms": {"target": 50.0, "value": None,
                                                "status": "no_data"}}}  # fmt: skip
    assert judge_slo(SloConfig(), found) is None
    assert ds.model_stats_key("adult") != ds.model_stats_key("adult2")
    assert len(ds.model_stats_key("x" * 200)) == 32


def test_server_counts_are_flushed_old_ones_pruned_and_past_hours_merged(
    served: dict[str, Any],
) -> None:
    from datetime import timedelta

    from keel.project import Project
    from keel.serve.operations import Operations
    from keel.serve.routing import Traffic as Counts
    from keel.store.tables import utc_now

    key = ds.model_stats_key("adult-pruned")
    hour = utc_now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)

    def stored(at: Any, requests: int, bucket: str) -> dict[str, Any]:
        return {"server": "s", "deployment_id": key, "version": "1", "role": "primary",
                "bucket": at, "requests": requests, "errors": 1, "latency": {bucket: requests},
                "compared": 0, "disagreed": 0}  # fmt: skip

    with Project(served["root"]) as project:
        database = project.metadata.database
        with database.write() as conn:  # 3 days old (past retention), and two in one past hour
            ds.add_stats(conn, [stored(hour - timedelta(days=3), 5, "10"),
                                stored(hour + timedelta(minutes=10), 3, "10"),
                                stored(hour + timedelta(minutes=20), 4, "12")])  # fmt: skip
        counts = Counts()
        operations = Operations(database, counts, lambda: ["adult-pruned"], retention_days=2)
        counts.record(operations.key("adult-pruned"), "1", "primary", 0.002, error=True)
        operations.dropped("adult-pruned", "1", "primary")
        assert operations.flush() == 2  # the request's row and the drop's
        with database.read() as conn:
            rows = ds.stats_of(conn, [key], None, None)
    found = sorted((r["server"], r["role"], r["requests"], r["errors"]) for r in rows)
    assert found[0] == ("rollup", "primary", 7, 2)
    assert [r["latency"] for r in rows if r["server"] == "rollup"] == [{"10": 3, "12": 4}]
    assert found[1:] == [
        (operations.server, "drop:primary", 1, 0), (operations.server, "primary", 1, 1)
    ]  # fmt: skip
