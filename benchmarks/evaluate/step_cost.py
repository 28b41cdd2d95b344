"""What the evaluate step adds to ``keel run``: before (a git revision) and after (this tree).

    .venv/bin/python benchmarks/evaluate/step_cost.py [ROUNDS] [--before REV] [--after DIR]
                                                      [--only after] [--cli]

``REV`` (default ``HEAD``) is unpacked with ``git archive`` (``src`` and ``examples``) into a
temporary directory; ``--after`` is a source tree holding ``src/keel`` (default: this
repository). Each round runs ``keel run`` on a fresh copy of the Adult example (default
keel.yaml) once with each tree, alternating, in a child Python with ``PYTHONPATH`` set, and
prints per run: the wall seconds of every step from the run record, the share "evaluate
seconds / the other steps' seconds" (issue 14: <= 20 %), the process CPU seconds of the
evaluate step and of the whole run (the local executor runs steps in its own threads) and
the load average. Then the evaluate step alone, re-run three times on the last after-run
project, per tree (wall and CPU seconds). ``--only after`` measures this tree alone (no
archive); the CPU columns then come from the run record (each step's ``cpu_seconds``: the
process's user + system seconds while the step ran, all its threads), with the share "evaluate
CPU seconds / the other steps' CPU seconds" beside the wall share, and the median, minimum and
maximum of each column at the end.

``--cli`` times what a user waits for: the ``keel run`` command itself (a fresh process:
interpreter start, imports, the pipeline, its records), per tree, on a fresh copy of the Adult
example each round, alternating trees; the evaluate step's seconds come from the command's
``--format json`` output, and "adds" is evaluate / (command wall - evaluate): how much longer
``keel run`` takes for the step (nothing runs beside it: the register step waits for its gates).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN = r"""
import json, os, sys, time
from pathlib import Path
import keel
import keel.pipeline.runner as runner
root = Path(sys.argv[1])
keel.init(root, example="adult")
cpu, recorded = {}, {}
original = runner._run_one
def timed(project, step, inputs, console, **kw):
    started = time.process_time()
    try:
        result = original(project, step, inputs, console, **kw)
        recorded[step.name] = result.cpu_seconds
        return result
    finally:
        cpu[step.name] = time.process_time() - started
        if step.name == "evaluate":
            import pickle
            (root / "evaluate-inputs.pickle").write_bytes(pickle.dumps(inputs))
runner._run_one = timed
c0, w0 = time.process_time(), time.perf_counter()
steps = {s["step"]: s["seconds"] for s in keel.run(root)["steps"]}
total = time.process_time() - c0
others = sum(v for k, v in steps.items() if k != "evaluate")
print(json.dumps({"wall": time.perf_counter() - w0, "steps": steps,
                  "share": steps["evaluate"] / others, "evaluate_cpu": cpu["evaluate"],
                  "run_cpu": total, "load": os.getloadavg()[0], "step_cpu": recorded}))
"""

ALONE = r"""
import json, pickle, sys, time
from pathlib import Path
from rich.console import Console
from keel.pipeline.evaluate_step import evaluate
from keel.pipeline.runner import StepContext
from keel.project import Project
root = Path(sys.argv[1])
inputs = pickle.loads((root / "evaluate-inputs.pickle").read_bytes())
project = Project(root)
out = []
for i in range(4):  # the first warms imports and caches
    w, c = time.perf_counter(), time.process_time()
    evaluate(StepContext(project, Console(quiet=True), inputs))
    if i:
        out.append([time.perf_counter() - w, time.process_time() - c])
print(json.dumps(out))
"""


def child(src: Path, script: str, *args: str) -> object:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", script, *args], env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"the run with PYTHONPATH={src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def only_after(rounds: int, after: Path) -> None:
    """``--only after``: fresh runs of this tree alone, per-step CPU from the run record."""
    rows: list[dict[str, float]] = []
    print("| run | load | wall s | train s | evaluate s | others s | share (wall) | train CPU s "
          "| evaluate CPU s | others CPU s | share (CPU) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            got = child(after / "src", RUN, str(Path(tmp) / f"after{r}"))
            assert isinstance(got, dict)
            steps, cpu = got["steps"], got["step_cpu"]
            row = {
                "load": got["load"], "wall": got["wall"], "train": steps["train"],
                "evaluate": steps["evaluate"],
                "others": sum(v for k, v in steps.items() if k != "evaluate"),
                "share": got["share"], "train_cpu": cpu["train"], "evaluate_cpu": cpu["evaluate"],
                "others_cpu": sum(v for k, v in cpu.items() if k != "evaluate"),
            }  # fmt: skip
            row["share_cpu"] = row["evaluate_cpu"] / row["others_cpu"]
            rows.append(row)
            print(f"| {r + 1} | " + " | ".join(_cell(k, v) for k, v in row.items()) + " |")
            print("  per-step (wall s, CPU s):",
                  {k: (round(v, 2), round(cpu.get(k) or 0.0, 2)) for k, v in steps.items()},
                  flush=True)  # fmt: skip
    for name, pick in (("median", statistics.median), ("min", min), ("max", max)):
        print(
            f"| {name} | " + " | ".join(_cell(k, pick(r[k] for r in rows)) for k in rows[0]) + " |"
        )


def _cell(key: str, value: float) -> str:
    return f"{value:.1%}" if key.startswith("share") else f"{value:.{1 if key == 'load' else 2}f}"


INIT = "import sys, keel; keel.init(sys.argv[1], example='adult'); print('{}')"
CLI = "import sys; from keel.cli import main; sys.argv = ['keel', *sys.argv[1:]]; main()"


def cli_runs(rounds: int, trees: dict[str, Path], work: Path) -> None:
    """``--cli``: the ``keel run`` command's wall seconds per tree, and what evaluate adds."""
    import time

    print("| tree | load | keel run s | evaluate s | train s | adds |\n|---|---|---|---|---|---|")
    adds: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(rounds):
        for name, src in trees.items():
            project = work / f"cli-{name}{r}"
            child(src, INIT, str(project))
            env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "200"}
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CLI, "run", "-p", str(project), "-f",
                                   "json"], env=env, capture_output=True, text=True)  # fmt: skip
            wall = time.perf_counter() - started
            if done.returncode:
                raise SystemExit(f"keel run failed ({name}):\n{done.stderr[-3000:]}")
            steps = {s["step"]: s["seconds"] for s in json.loads(done.stdout)["steps"]}
            added = steps["evaluate"] / (wall - steps["evaluate"])
            adds[name].append(added)
            print(f"| {name} | {os.getloadavg()[0]:.1f} | {wall:.2f} | {steps['evaluate']:.2f} "
                  f"| {steps['train']:.2f} | {added:.1%} |", flush=True)  # fmt: skip
    for name, values in adds.items():
        print(
            f"{name}: adds median {statistics.median(values):.1%} "
            f"(min {min(values):.1%}, max {max(values):.1%})"
        )


def main(rounds: int, before: str, after: Path, only: str = "", cli: bool = False) -> None:
    if only == "after" and not cli:
        only_after(rounds, after)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", before, "src", "examples"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        trees = {"before": old / "src", "after": after / "src"}
        if cli:
            cli_runs(rounds, {"after": trees["after"]} if only == "after" else trees, work)
            return
        print("| run | load | wall s | train s | evaluate s | others s | share | evaluate CPU s "
              "| run CPU s |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
        last = work
        for r in range(rounds):
            for name, src in trees.items():
                project = work / f"{name}{r}"
                got = child(src, RUN, str(project))
                assert isinstance(got, dict)
                steps = got["steps"]
                others = sum(v for k, v in steps.items() if k != "evaluate")
                print(f"| {name} | {got['load']:.1f} | {got['wall']:.2f} | {steps['train']:.2f} "
                      f"| {steps['evaluate']:.2f} | {others:.2f} | {got['share']:.1%} "
                      f"| {got['evaluate_cpu']:.2f} | {got['run_cpu']:.2f} |")  # fmt: skip
                last = project if name == "after" else last
        print("\nthe evaluate step alone on the last after-run project (wall s, CPU s):")
        for _ in range(2):
            for name, src in trees.items():
                print(name, [[round(v, 2) for v in pair] for pair in child(src, ALONE, str(last))])


if __name__ == "__main__":
    args = sys.argv[1:]
    cli = "--cli" in args
    if cli:
        args.remove("--cli")
    options = {"--before": "HEAD", "--after": str(REPO), "--only": ""}
    for flag in options:
        if flag in args:
            at = args.index(flag)
            options[flag] = args[at + 1]
            del args[at : at + 2]
    main(
        int(args[0]) if args else 3,
        options["--before"],
        Path(options["--after"]),
        options["--only"],
        cli,
    )
