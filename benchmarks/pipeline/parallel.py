"""Two independent 2-second custom steps on the local executor (issue 13: the pair takes
<= 1.2x one step's wall time).

Two kinds of work (``--work``):

- ``cpu`` (default): honest CPU. Each step evaluates NumPy ufuncs (``sin``, ``sqrt``,
  multiply-add) over a 2-million-element float64 array a calibrated number of times (about 2 s
  alone on an idle core); NumPy's elementwise loops are single-threaded and release the GIL,
  which is what lets two such steps use two cores from two threads. It needs two free cores:
  on a machine busy with other work it measures the machine as much as the executor.
- ``sleep``: each step sleeps 2 s in a C call (``time.sleep``, GIL released): no CPU needed,
  so it measures what the executor adds (scheduling, threads, recording), whatever the load.

Both steps are custom steps of a project (``pipeline.steps`` in keel.yaml, a module in the
project directory) with no dependency between them, run through ``run_steps`` like ``keel
run`` runs them, with ``--no-cache``. Three figures per round: one step alone; the two with
``resources.cpus: 2`` (the local executor runs them at once); the two with ``resources.cpus:
1`` (one after the other, for reference). Medians over rounds.

usage: .venv/bin/python benchmarks/pipeline/parallel.py [--rounds 3] [--seconds 2.0]
       [--work cpu|sleep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

STEPS = """
import numpy as np

import keel


def burn(iterations: int) -> float:
    if iterations < 0:  # --work sleep: -iterations milliseconds in one C call
        import time

        time.sleep(-iterations / 1000)
        return 0.0
    x = np.linspace(0.0, 1.0, 2_000_000)
    total = 0.0
    for _ in range(iterations):
        y = np.sqrt(np.sin(x) ** 2 + 1.0) * 0.5 + x
        total += float(y[-1])
    return total


@keel.step(outputs={"left": "report"})
def left(ctx):
    return {"left": ctx.put_json({"value": burn(ctx.params["iterations"])}, kind="report")}


@keel.step(outputs={"right": "report"})
def right(ctx):
    return {"right": ctx.put_json({"value": burn(ctx.params["iterations"])}, kind="report")}
"""


def calibrate(seconds: float) -> int:
    """Iterations of the steps' loop that take ``seconds`` on one core here."""
    x = np.linspace(0.0, 1.0, 2_000_000)
    began, done = time.perf_counter(), 0
    while time.perf_counter() - began < 1.0:
        np.sqrt(np.sin(x) ** 2 + 1.0) * 0.5 + x
        done += 1
    return max(1, round(seconds / ((time.perf_counter() - began) / done)))


def project(root: Path, cpus: int, iterations: int, names: tuple[str, ...]) -> Path:
    import keel

    if not (root / "keel.yaml").exists():
        keel.init(root, example="adult")
        (root / "bench_steps.py").write_text(STEPS, encoding="utf-8")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["resources"] = {"cpus": cpus}
    config["pipeline"] = {
        "steps": [
            {"function": f"bench_steps:{n}", "params": {"iterations": iterations}} for n in names
        ]
    }
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def wall(root: Path) -> float:
    """Seconds for ``run_steps`` of the project's custom steps, uncached."""
    from keel.pipeline.custom import custom_steps
    from keel.pipeline.runner import run_steps
    from keel.project import Project

    with Project(root) as proj:
        steps = custom_steps(proj)
        began = time.perf_counter()
        run_steps(proj, steps, console=Console(quiet=True), use_cache=False)
        return time.perf_counter() - began


def measure(rounds: int, seconds: float, work: str = "cpu") -> dict[str, Any]:
    iterations = calibrate(seconds) if work == "cpu" else -round(seconds * 1000)
    figures: dict[str, list[float]] = {"one step": [], "two, cpus 2": [], "two, cpus 1": []}
    with tempfile.TemporaryDirectory(prefix="keel-parallel-") as tmp:
        root = Path(tmp) / "bench"
        for _ in range(rounds):
            figures["one step"].append(wall(project(root, 2, iterations, ("left",))))
            both = ("left", "right")
            figures["two, cpus 2"].append(wall(project(root, 2, iterations, both)))
            figures["two, cpus 1"].append(wall(project(root, 1, iterations, both)))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    ratio = medians["two, cpus 2"] / medians["one step"]
    return {
        "work": work,
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "iterations": iterations,
        "rounds": rounds,
        "seconds": {name: [round(v, 3) for v in values] for name, values in figures.items()},
        "median_seconds": {name: round(v, 3) for name, v in medians.items()},
        "two_parallel_over_one": round(ratio, 3),
        "two_sequential_over_one": round(medians["two, cpus 1"] / medians["one step"], 3),
        "target": "<= 1.2",
        "pass": ratio <= 1.2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="one step's work, alone")
    parser.add_argument("--work", choices=("cpu", "sleep"), default="cpu")
    args = parser.parse_args()
    result = measure(args.rounds, args.seconds, args.work)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
