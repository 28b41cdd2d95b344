"""The same 16-trial search on Ray with 1 and 2 workers: speedup and Ray's overhead.

Sides (``search_sides.py``, each in its own process): ``keel-local`` (the search in process, no
Ray: the floor), ``keel-ray`` with 1 and with 2 concurrent tasks (1 CPU each). Random sampling
with a fixed seed, so every side trains the same 16 models. Ray's start-up is timed apart from
the search. Knob: ``RAY_TRIALS`` (16).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from search import side

PART = "ray"
TITLE = "Trials on Ray: the same 16-trial search on 1 and 2 workers"


def run(quick: bool = False) -> dict[str, Any]:
    """Raw results: seconds of the in-process floor and of Ray with 1 and 2 workers."""
    trials = int(os.environ.get("RAY_TRIALS", 4 if quick else 16))
    side("optuna-memory", 1)  # builds the cached arrays outside the timed runs
    sides = [side("keel-local", trials), side("keel-ray", trials, 1), side("keel-ray", trials, 2)]
    return {"trials": trials, "cpus": os.cpu_count(), "sides": sides}


def render(raw: dict[str, Any]) -> str:
    """The RESULTS.md section: seconds per side, speedup 1 -> 2 workers, Ray's overhead."""
    lines = [f"### {TITLE}", ""]
    by = {(s["side"], s["workers"]): s for s in raw.get("sides", [])}
    failed = [s for s in by.values() if "error" in s]
    for s in failed:
        lines.append(f"- {s['side']} ({s['workers']}) failed: "
                     f"`{s['error'].strip().splitlines()[-1][:120]}`")  # fmt: skip
    local, one, two = by.get(("keel-local", 1)), by.get(("keel-ray", 1)), by.get(("keel-ray", 2))
    if failed or not (local and one and two):
        return "\n".join(lines) + "\n"
    lines += [
        f"{raw['trials']} LightGBM trials (random sampler, fixed seed: the same models on every "
        f"side), 1 CPU per Ray task, a local Ray instance on {raw['cpus']} CPUs.",
        "",
        "| side | seconds | trials |",
        "|---|---:|---:|",
        f"| in process, no Ray | {local['seconds']:.1f} | {local['trials']} |",
        f"| Ray, 1 worker | {one['seconds']:.1f} | {one['trials']} |",
        f"| Ray, 2 workers | {two['seconds']:.1f} | {two['trials']} |",
        "",
        f"Speedup 1 -> 2 workers: {one['seconds'] / two['seconds']:.2f}x. Ray's overhead at 1 "
        f"worker: {one['seconds'] - local['seconds']:+.1f} s over the in-process search "
        f"({(one['seconds'] - local['seconds']) / raw['trials'] * 1000:+.0f} ms per trial), plus "
        f"{one['ray_init_s']:.1f} s to start Ray.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(render(result))
