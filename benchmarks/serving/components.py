"""CPU per call of the three serving pieces issue 16's second round replaced, old and new
interleaved in one process (so a loaded machine slows both alike):

- scoring: ``Booster.predict`` (a Python predictor built per call; one OpenMP thread, as the
  server pins it) against ``LightGBMTrainer.predict``'s fast path, for 1 and 20 rows;
- features: a batch of 20 one-row requests through ``transform_rows`` one request at a time
  (the row path, as ``score_batch`` did) against ``transform_each`` (column-wise);
- metrics: one request's latency and status through ``prometheus_client``'s Histogram and
  Counter against :class:`keel.serve.metrics.LoopHistogram` / ``LoopCounter``.

    taskset -c 0 .venv/bin/python benchmarks/serving/components.py PROJECT [ROUNDS]

Prints JSON: per piece, old and new µs per call, the best (least) of the rounds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from keel.project import Project
from keel.serve.app import create_app
from keel.serve.metrics import LoopCounter, LoopHistogram

BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def per_call(fn: Callable[[], Any], calls: int) -> float:
    """CPU µs per call of ``fn`` (process time, after one warm call)."""
    fn()
    started = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - started) / calls * 1e6


def pieces(project: str) -> dict[str, tuple[Callable[[], Any], Callable[[], Any], int]]:
    """Piece name -> (old, new, calls per measurement)."""
    with Project(project) as proj:
        app = create_app(proj, reload=False)
    package = next(iter(app.models.values())).package
    pipeline, model = package.pipeline, package.model
    booster = model.booster_
    body = Path(project).parent / "body_keel.json"
    base = json.loads(body.read_text())["instances"][0]
    rng = np.random.default_rng(0)
    requests = []
    for i in range(20):  # a c=64 batch: 20 one-row requests, a few distinct categories
        row = dict(base, age=int(rng.integers(17, 90)), fnlwgt=int(rng.integers(10_000, 10**6)))
        row["workclass"] = ("Private", "State-gov", "Self-emp-not-inc")[i % 3]
        requests.append([row])
    x = np.vstack([pipeline.transform_rows(r) for r in requests])

    def rows_old() -> None:
        for request in requests:
            pipeline._transform_rows(request, "instances", [])

    def rows_new() -> None:
        pipeline.transform_each(requests, findings=[[] for _ in requests])

    theirs, ours = CollectorRegistry(), CollectorRegistry()
    old_latency = Histogram("a_seconds", "a", ["route"], registry=theirs, buckets=BUCKETS)
    old_requests = Counter("a_requests", "a", ["route", "status"], registry=theirs)
    new_latency = LoopHistogram("a_seconds", "a", ["route"], registry=ours, buckets=BUCKETS)
    new_requests = LoopCounter("a_requests", "a", ["route", "status"], registry=ours)
    old_h, old_c = old_latency.labels("predict"), old_requests.labels("predict", "200")
    new_h, new_c = new_latency.labels("predict"), new_requests.labels("predict", "200")

    def metrics_old() -> None:
        old_h.observe(0.0007)
        old_c.inc()

    def metrics_new() -> None:
        new_h.observe(0.0007)
        new_c.inc()

    return {
        "score 1 row": (
            lambda: booster.predict(x[:1], num_threads=1),
            lambda: model.predict(x[:1]),
            3000,
        ),
        "score 20 rows": (
            lambda: booster.predict(x, num_threads=1),
            lambda: model.predict(x),
            1000,
        ),
        "features, 20 one-row requests": (rows_old, rows_new, 300),
        "metrics, one request": (metrics_old, metrics_new, 20000),
    }


def main() -> None:
    project = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    measured = pieces(project)
    best: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, (old, new, calls) in measured.items():
            times = best.setdefault(name, [float("inf"), float("inf")])
            times[0] = min(times[0], per_call(old, calls))
            times[1] = min(times[1], per_call(new, calls))
    report = {
        name: {"old_us": round(old, 2), "new_us": round(new, 2), "saved_us": round(old - new, 2)}
        for name, (old, new) in best.items()
    }
    print(json.dumps({"rounds": rounds, "pieces": report}, indent=1))


if __name__ == "__main__":
    main()
