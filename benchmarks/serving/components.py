"""CPU per call of the three serving pieces issue 16's second round replaced, old and new
interleaved in one process (so a loaded machine slows both alike):

- scoring: ``Booster.predict`` (a Python predictor built per call; one OpenMP thread, as the
  server pins it) against ``LightGBMTrainer.predict``'s fast path, for 1 and 20 rows;
- features: a batch of 20 one-row requests through ``transform_rows`` one request at a time
  (the row path, as ``score_batch`` did) against ``transform_each`` (column-wise), both
  without the pipeline's row plan (as before issue 16's sixth round);
- row plan: ``transform_row`` of one request row and ``transform_each`` of 1, 8, 20, 32, 64
  one-row requests, without the row plan (each value coerced by its rule, each chain filled:
  the path before the sixth round) against with it (:mod:`keel.features.rowplan`), per row;
- metrics: one request's latency and status through ``prometheus_client``'s Histogram and
  Counter against :class:`keel.serve.metrics.LoopHistogram` / ``LoopCounter``.

    taskset -c 0 .venv/bin/python benchmarks/serving/components.py PROJECT [ROUNDS]

Prints JSON: per piece, old and new µs per call (and per row for batches of requests), the
best (least) of the rounds. ``PIECES=row`` measures only the pieces whose name holds "row".

``COUNT=calls`` or ``COUNT=instructions`` counts the row plan's pieces instead of timing them,
per row, figures the machine's load does not move: Python calls under cProfile, or
instructions under ``valgrind --tool=callgrind`` (switched on after the pipeline is loaded
and 200 warm calls, for 100 calls; a child process per piece and side).
"""

from __future__ import annotations

import copy
import cProfile
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
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
    unplanned = copy.copy(pipeline)  # the same fitted pipeline, without its row plan
    unplanned._plan = None

    def rows_old() -> None:
        for request in requests:
            unplanned._transform_rows(request, "instances", [])

    def rows_new() -> None:
        unplanned.transform_each(requests, findings=[[] for _ in requests])

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
        **planned(pipeline, unplanned, base),
    }


def planned(
    pipeline: Any, unplanned: Any, base: dict[str, Any]
) -> dict[str, tuple[Callable[[], Any], Callable[[], Any], int]]:
    """Without and with the row plan: one row, and batches of one-row requests (per row:
    the calls per measurement are scaled so each piece handles ~20,000 rows)."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(64):  # distinct rows, a few categories each
        row = dict(base, age=int(rng.integers(17, 90)), fnlwgt=int(rng.integers(20_000, 10**6)))
        row["workclass"] = ("Private", "State-gov", "Self-emp-not-inc", "Local-gov")[i % 4]
        row["sex"] = ("Male", "Female")[i % 2]
        rows.append(row)
    out = {
        "row plan: transform_row, 1 row": (
            lambda: unplanned.transform_row(rows[0]),
            lambda: pipeline.transform_row(rows[0]),
            20000,
        )
    }
    for n in (1, 8, 20, 32, 64):
        batch = [[row] for row in rows[:n]]
        out[f"row plan: transform_each, {n} one-row requests"] = (
            _each(unplanned, batch),
            _each(pipeline, batch),
            20000 // n,
        )
    return out


def _each(pipeline: Any, batch: list[list[dict[str, Any]]]) -> Callable[[], Any]:
    return lambda: pipeline.transform_each(batch, findings=[[] for _ in batch])


def counted(project: str, how: str) -> dict[str, dict[str, float]]:
    """Per row plan piece, old and new calls or instructions per row."""
    with Project(project) as proj:
        app = create_app(proj, reload=False)
    pipeline = next(iter(app.models.values())).package.pipeline
    base = json.loads((Path(project).parent / "body_keel.json").read_text())["instances"][0]
    saved = {"state": pipeline.state(), "ignored": sorted(pipeline.coercer().ignored), "base": base}
    if app.log is not None:
        app.log.close()
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "pipeline.json"
        state.write_text(json.dumps(saved))
        for name in _planned_from(state):
            rows = int(name.split(", ")[-1].split()[0]) if "one-row requests" in name else 1
            out[name] = {
                side: round(_count(how, state, name, side) / rows, 1) for side in ("old", "new")
            }
    return out


def _planned_from(state: Path) -> dict[str, tuple[Callable[[], Any], Callable[[], Any], int]]:
    from keel.features.pipeline import FeaturePipeline

    saved = json.loads(state.read_text())
    pipeline = FeaturePipeline.from_state(saved["state"])
    pipeline.coercer().ignore(saved["ignored"])
    unplanned = copy.copy(pipeline)
    unplanned._plan = None
    return planned(pipeline, unplanned, saved["base"])


def _count(how: str, state: Path, name: str, side: str) -> float:
    """Calls or instructions of 100 calls of one piece's side, divided by 100."""
    if how == "calls":
        old, new, _ = _planned_from(state)[name]
        fn = old if side == "old" else new
        fn()
        profile = cProfile.Profile()
        profile.runcall(lambda: [fn() for _ in range(100)])
        return pstats.Stats(profile).total_calls / 100  # type: ignore[attr-defined,no-any-return]
    signals = state.parent / f"{abs(hash((name, side)))}"
    signals.mkdir()
    out = signals / "callgrind.out"
    child = ["--count-child", str(state), name, side, str(signals)]
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           sys.executable, __file__, *child]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for mine, answer, switch in (("warm", "go", "on"), ("done", "stop", "off")):
        while not (signals / mine).exists():
            if proc.poll() is not None:
                raise SystemExit(f"the child ended early:\n{proc.communicate()[1][-2000:]}")
            time.sleep(0.05)
        subprocess.run(["callgrind_control", "-i", switch, str(proc.pid)], check=True,
                       capture_output=True)  # fmt: skip
        (signals / answer).touch()
    _, err = proc.communicate()
    found = re.search(r"Collected : (\d+)", err)
    if proc.returncode != 0 or found is None:
        raise SystemExit("callgrind printed no total:\n" + err[-2000:])
    return int(found.group(1)) / 100


def _count_child(state: Path, name: str, side: str, signals: Path) -> None:
    old, new, _ = _planned_from(state)[name]
    fn = old if side == "old" else new
    for _ in range(200):
        fn()
    for mine, awaited, calls in (("warm", "go", 100), ("done", "stop", 0)):
        (signals / mine).touch()
        while not (signals / awaited).exists():
            time.sleep(0.01)
        for _ in range(calls):
            fn()


def main() -> None:
    if sys.argv[1] == "--count-child":
        _count_child(Path(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5]))
        return
    project = sys.argv[1]
    if os.environ.get("COUNT"):
        how = os.environ["COUNT"]
        print(json.dumps({"count": how, "per_row": counted(project, how)}, indent=1))
        return
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    measured = pieces(project)
    only = os.environ.get("PIECES")
    if only:
        measured = {name: piece for name, piece in measured.items() if only in name}
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
    for name, piece in report.items():  # the row plan's batches: per row too
        rows = int(name.split(", ")[-1].split()[0]) if "one-row requests" in name else 1
        if rows > 1:
            piece["old_us_per_row"] = round(piece["old_us"] / rows, 2)
            piece["new_us_per_row"] = round(piece["new_us"] / rows, 2)
    print(json.dumps({"rounds": rounds, "pieces": report}, indent=1))


if __name__ == "__main__":
    main()
