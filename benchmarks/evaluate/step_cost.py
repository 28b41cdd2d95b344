"""What the evaluate step adds to ``keel run``: before (a git revision) and after (this tree).

    .venv/bin/python benchmarks/evaluate/step_cost.py [ROUNDS] [--before REV] [--after DIR]

``REV`` (default ``HEAD``) is unpacked with ``git archive`` (``src`` and ``examples``) into a
temporary directory; ``--after`` is a source tree holding ``src/keel`` (default: this
repository). Each round runs ``keel run`` on a fresh copy of the Adult example (default
keel.yaml) once with each tree, alternating, in a child Python with ``PYTHONPATH`` set, and
prints per run: the wall seconds of every step from the run record, the share "evaluate
seconds / the other steps' seconds" (issue 14: <= 20 %), the process CPU seconds of the
evaluate step and of the whole run (the local executor runs steps in its own threads) and
the load average. Then the evaluate step alone, re-run three times on the last after-run
project, per tree (wall and CPU seconds).
"""

from __future__ import annotations

import json
import os
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
cpu = {}
original = runner._run_one
def timed(project, step, inputs, console, **kw):
    started = time.process_time()
    try:
        return original(project, step, inputs, console, **kw)
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
                  "run_cpu": total, "load": os.getloadavg()[0]}))
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
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(rounds: int, before: str, after: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", before, "src", "examples"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        trees = {"before": old / "src", "after": after / "src"}
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
    options = {"--before": "HEAD", "--after": str(REPO)}
    for flag in options:
        if flag in args:
            at = args.index(flag)
            options[flag] = args[at + 1]
            del args[at : at + 2]
    main(int(args[0]) if args else 3, options["--before"], Path(options["--after"]))
