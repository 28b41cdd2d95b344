"""``keel serve --workers N`` reports and limits as one server: /metrics sums the workers'
counters and histograms (gauges per worker), a token's rate limit holds for the fleet."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keel.project import Project
from keel.serve.auth import Authenticator
from keel.serve.fleet import RETIRED, Fleet, prepare, retire
from keel.serve.limits import TooManyRequests
from keel.serve.metrics import Metrics
from keel.store.tokens import create_token
from tests.serve.conftest import ROW, copy_project, keel_serve

PREDICT = "/v1/models/adult/predict"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:  # fmt: skip
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_merge_sums_counters_and_histograms_and_labels_gauges(tmp_path: Path) -> None:
    mine, peer = Metrics(), Metrics()
    for _ in range(3):
        mine.observe("predict", 200, 0.001)
    for _ in range(2):
        peer.observe("predict", 200, 0.003)
    peer.observe("predict", 500, 0.3)
    mine.inflight.set(2)
    peer.inflight.set(5)
    directory = prepare(tmp_path / "run")
    fleet = Fleet(directory, 0, mine.registry.collect_own)
    mine.registry.fleet = fleet
    Fleet(directory, 1, peer.registry.collect_own).publish()

    merged = _samples(generate_latest(mine.registry).decode())
    assert _value(merged, "keel_requests_total", route="predict", status="200") == 5
    assert _value(merged, "keel_requests_total", route="predict", status="500") == 1
    latency = "keel_request_duration_seconds"
    assert _value(merged, f"{latency}_bucket", route="predict", le="0.001") == 3
    assert _value(merged, f"{latency}_bucket", route="predict", le="0.005") == 5
    assert _value(merged, f"{latency}_bucket", route="predict", le="+Inf") == 6
    assert _value(merged, f"{latency}_count", route="predict") == 6
    assert abs(_value(merged, f"{latency}_sum", route="predict") - 0.309) < 1e-9
    assert _value(merged, "keel_predictions_in_flight", worker="0") == 2
    assert _value(merged, "keel_predictions_in_flight", worker="1") == 5
    assert _samples(generate_latest(mine.registry).decode()) == merged  # scraping changes none

    # a dead worker's counts stay in the totals; its gauge goes
    retire(directory, 1)
    assert not (directory / "worker-1.json").exists() and (directory / RETIRED).exists()
    after = _samples(generate_latest(mine.registry).decode())
    assert _value(after, "keel_requests_total", route="predict", status="200") == 5
    assert _value(after, f"{latency}_count", route="predict") == 6
    assert ("keel_predictions_in_flight", (("worker", "1"),)) not in after

    # a server without a fleet exports its own numbers, unlabelled
    alone = _samples(generate_latest(peer.registry).decode())
    assert _value(alone, "keel_requests_total", route="predict", status="200") == 2
    assert _value(alone, "keel_predictions_in_flight") == 5


def test_prepare_removes_the_directories_of_supervisors_that_are_gone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "serve-999999999").mkdir(parents=True)  # no such process
    (run / f"serve-{os.getppid()}").mkdir()  # alive: another server's
    directory = prepare(run)
    assert directory.name == f"serve-{os.getpid()}" and directory.is_dir()
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [f"serve-{os.getpid()}", f"serve-{os.getppid()}"]
    )


@dataclass(frozen=True)
class _Token:
    id: str
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None


def test_a_worker_of_n_spends_one_nth_of_the_rate_and_burst() -> None:
    now = [0.0]
    token = _Token("1", "t", ("predict",), rate_limit_per_minute=60)
    auth = Authenticator(lambda secret: token, clock=lambda: now[0])
    auth.share = 2
    for _ in range(30):  # half the burst of 60
        auth.check(b"Bearer keel_x", "predict")
    with pytest.raises(TooManyRequests) as caught:
        auth.check(b"Bearer keel_x", "predict")
    assert caught.value.retry_after == 2  # refills at half of 1/s
    now[0] += 2.0
    auth.check(b"Bearer keel_x", "predict")
    with pytest.raises(TooManyRequests):
        auth.check(b"Bearer keel_x", "predict")
    lone = Authenticator(lambda secret: _Token("2", "u", ("predict",), 1), clock=lambda: now[0])
    lone.share = 4  # 1/4 of a burst of 1: still one request
    lone.check(b"Bearer keel_y", "predict")


def _wait_for(condition: Callable[[], bool], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _workers(pid: int) -> list[int]:
    return [
        child.pid
        for child in psutil.Process(pid).children()
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    ]


def test_metrics_report_every_worker_of_the_fleet(adult_project: Path, tmp_path: Path) -> None:
    root = copy_project(adult_project, tmp_path / "adult")
    with keel_serve(root, "--workers", "2", "--no-log") as served:
        predicted: Counter[str] = Counter()

        def send(count: int) -> None:
            for _ in range(count):  # a new connection each: spread over the workers
                response = httpx.post(f"{served.url}{PREDICT}", json={"instances": [ROW]})
                assert response.status_code == 200, response.text
                predicted[response.headers["keel-worker"]] += 1

        send(40)
        for _ in range(20):  # bounded: until both workers answered some
            if len(predicted) == 2:
                break
            send(10)
        assert set(predicted) == {"0", "1"}, predicted
        sent = sum(predicted.values())
        scraped: dict[str, int] = Counter()

        def total() -> float:
            response = httpx.get(f"{served.url}/metrics")
            scraped[response.headers["keel-worker"]] += 1
            samples = _samples(response.text)
            return _value(samples, "keel_requests_total", route="predict", status="200")

        # whichever worker answers the scrape reports the fleet (a peer lags at most ~1 s):
        # wait until both workers' views have caught up, i.e. several scrapes in a row agree
        assert _wait_for(lambda: all(total() == sent for _ in range(8)), 10), (total(), sent)
        for _ in range(20):
            assert total() == sent
        samples = _samples(httpx.get(f"{served.url}/metrics").text)
        assert _value(samples, "keel_request_duration_seconds_count", route="predict") == sent
        assert _value(samples, "keel_predictions_total", model="adult", version="1") == sent
        assert {
            dict(labels).get("worker") for (name, labels) in samples
            if name == "keel_predictions_in_flight"
        } == {"0", "1"}  # fmt: skip
        run = root / ".keel" / "run"
        (directory,) = run.iterdir()
        assert directory.name == f"serve-{served.process.pid}"

        # a worker killed with SIGKILL: replaced, its counts stay in the fleet's totals
        victim = min(_workers(served.process.pid))
        os.kill(victim, signal.SIGKILL)
        assert _wait_for(
            lambda: (
                len(_workers(served.process.pid)) == 2
                and victim not in _workers(served.process.pid)
            ),
            60,
        ), served.log.read_text()
        assert (directory / RETIRED).exists()
        assert _wait_for(lambda: total() == sent, 10), (total(), sent)
        send(20)
        assert _wait_for(lambda: total() == sent + 20, 10), (total(), sent + 20)
        assert set(scraped) == {"0", "1"}, scraped  # both workers answered scrapes

        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=40) == 0
    assert not any(run.iterdir())  # the supervisor removed its directory


def test_a_token_rate_limit_holds_for_the_fleet(adult_project: Path, tmp_path: Path) -> None:
    root = copy_project(adult_project, tmp_path / "adult")
    per_minute = 60  # 1 request/s, a burst of 60 for the server: 30 per worker
    with Project(root) as project:
        _, secret = create_token(project.metadata.database, "limited", ["predict"],
                                 created_by="test", rate_limit_per_minute=per_minute)  # fmt: skip
    with keel_serve(root, "--workers", "2", "--no-log", "--auth", "required") as served:
        answered: Counter[tuple[str, int]] = Counter()
        started = time.monotonic()
        for _ in range(160):  # a new connection each: spread over the workers
            response = httpx.post(
                f"{served.url}{PREDICT}",
                json={"instances": [ROW]},
                headers={"authorization": f"Bearer {secret}"},
                timeout=10,
            )
            assert response.status_code in (200, 429), response.text
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
            answered[(response.headers["keel-worker"], response.status_code)] += 1
        elapsed = time.monotonic() - started
    accepted = sum(n for (_, status), n in answered.items() if status == 200)
    assert {worker for worker, _ in answered} == {"0", "1"}, answered
    # each worker spends half the burst and refills at half the rate ...
    for worker in ("0", "1"):
        assert answered[(worker, 200)] <= per_minute / 2 + elapsed / 2 + 1, answered
    # ... so the server never accepts more than the token's limit (one worker would allow 60)
    assert accepted <= per_minute + elapsed + 1, (answered, elapsed)
    assert sum(n for (_, status), n in answered.items() if status == 429) > 0
