"""50 Optuna trials on Adult: Keel's search vs plain Optuna in memory vs Optuna on SQLite.

Every side runs the same 50 LightGBM trials (``search_sides.py``: same space, split, seeds, no
pruning, one OpenMP thread per trial) in its own process; Keel keeps its study in the journal
file and records every trial as a run. A second pair runs the same search on 2 worker processes:
Keel's journal against Optuna's SQLite storage (lock errors are counted). Knobs: ``SEARCH_TRIALS``
(50), ``SEARCH_PARALLEL`` (1: also run the 2-worker pair).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / ".work" / "training" / "search"
KEEL_PYTHON = HERE.parents[1] / ".venv" / "bin" / "python"
PART = "search"
TITLE = "Hyper-parameter search: 50 trials, Keel vs Optuna in memory vs Optuna on SQLite"
TIMEOUT_S = 600


def side(name: str, trials: int, workers: int = 1) -> dict[str, Any]:
    """One side's JSON line (or its error)."""
    command = [str(KEEL_PYTHON), str(HERE / "search_sides.py"), name, str(trials), str(WORK),
               str(workers)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        return {"side": name, "workers": workers, "error": done.stderr[-2000:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> dict[str, Any]:
    """Raw results: seconds, trials, best validation AUC and errors per side."""
    trials = int(os.environ.get("SEARCH_TRIALS", 10 if quick else 50))
    WORK.mkdir(parents=True, exist_ok=True)
    side("optuna-memory", 1)  # builds the cached arrays outside the timed runs
    sides = [side(name, trials) for name in ("optuna-memory", "keel", "optuna-sqlite")]
    if os.environ.get("SEARCH_PARALLEL", "1") == "1":
        sides += [side(name, trials, 2) for name in ("keel", "optuna-sqlite")]
    return {"trials": trials, "cpus": os.cpu_count(), "sides": sides}


def render(raw: dict[str, Any]) -> str:
    """The RESULTS.md section: seconds per side and the ratio to plain Optuna in memory."""
    lines = [f"### {TITLE}", ""]
    sides = raw.get("sides", [])
    base = next((s for s in sides if s["side"] == "optuna-memory" and "seconds" in s), None)
    lines += [
        f"{raw['trials']} TPE trials of LightGBM (<= 200 rounds, early stopping 20) on Adult's "
        f"29,304 fit / 3,257 validation rows, {raw['cpus']} CPUs, one thread per trial, no "
        "pruning so every side does the same work. Keel: `run_search` with its journal study "
        "and a `tune/trial` run recorded per trial in a SQLite metadata store.",
        "",
        "| side | workers | seconds | vs Optuna in memory | CPU s | CPU vs Optuna | trials "
        "| best AUC | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in sides:
        if "error" in s:
            lines.append(f"| {s['side']} | {s['workers']} | failed: "
                         f"`{s['error'].strip().splitlines()[-1][:80]}` | | | | |")  # fmt: skip
            continue
        ratio = f"{s['seconds'] / base['seconds']:.2f}x" if base else "-"
        errors = f"{len(s['errors'])}: {s['errors'][0][:60]}" if s["errors"] else "0"
        best = f"{s['best']:.4f}" if s.get("best") is not None else "-"
        cpu = f"{s['cpu_s'] / base['cpu_s']:.2f}x" if base else "-"
        lines.append(f"| {s['side']} | {s['workers']} | {s['seconds']:.1f} | {ratio} "
                     f"| {s['cpu_s']:.1f} | {cpu} | {s['trials']} | {best} "
                     f"| {errors} |")  # fmt: skip
    keel = next((s for s in sides if s["side"] == "keel" and s["workers"] == 1), None)
    if base and keel and "seconds" in keel:
        lines += ["", f"Keel / plain Optuna in memory: {keel['seconds'] / base['seconds']:.2f}x "
                  f"wall, {keel['cpu_s'] / base['cpu_s']:.2f}x CPU (target <= 1.2x). The same "
                  "seeds and settings give both the same trials (same best AUC)."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(render(result))
