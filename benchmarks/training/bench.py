"""Training benchmarks, one part per module in this folder, found by a top-level ``PART = ...``.

A part module defines ``PART`` (its name), ``TITLE``, ``run(quick: bool) -> dict`` (raw JSON)
and ``render(raw: dict) -> str`` (its RESULTS.md subsection). Parts today: ``tracking``
(100,000 runs, Keel vs MLflow), ``fit`` (tracked fit vs bare LightGBM); search and Ray parts
join by adding ``search*.py`` / ``ray*.py`` files here, nothing else. Modules are imported only
when chosen (peer-only scripts here import MLflow, which Keel's venv lacks).

usage: .venv/bin/python benchmarks/run.py --only training   (``TRAINING_PARTS=fit,tracking``
       picks parts, the others keep their latest raw result; ``QUICK=1`` runs each part's
       quick variant)
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / ".work" / "results"
ORDER = ("tracking", "fit", "search", "ray")
_PART = re.compile(r"^PART = [\"']([a-z_]+)[\"']", re.MULTILINE)


def parts() -> dict[str, str]:
    """Part name -> module name, in ORDER then alphabetical."""
    found = {}
    for path in sorted(HERE.glob("*.py")):
        match = _PART.search(path.read_text())
        if match and path.stem != "bench":
            found[match.group(1)] = path.stem
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(ORDER)), item[0])))


def _module(name: str) -> Any:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(name)


def run(quick: bool | None = None) -> dict[str, Any]:
    """Raw results of every chosen part: ``{"benchmark": "training", "parts": {name: raw}}``."""
    quick = os.environ.get("QUICK", "") not in ("", "0") if quick is None else quick
    available = parts()
    chosen = os.environ.get("TRAINING_PARTS", ",".join(available)).split(",")
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise SystemExit(f"unknown training part(s) {unknown}; choose from {list(available)}")
    raw: dict[str, Any] = {"benchmark": "training", "quick": quick, "parts": {}}
    for name in chosen:
        started, load = time.time(), os.getloadavg()[0]
        result = _module(available[name]).run(quick=quick)
        raw["parts"][name] = {
            **result,
            "seconds": time.time() - started,
            "ran_at": started,
            "load_before": load,
            "load_after": os.getloadavg()[0],
        }
    # Parts not chosen keep their latest result, so running one part never drops the others.
    previous = _latest(quick)
    for name, result in (previous or {}).get("parts", {}).items():
        if name not in raw["parts"] and name in available:
            raw["parts"][name] = {**result, "carried_over": True}
    raw["parts"] = {name: raw["parts"][name] for name in available if name in raw["parts"]}
    return raw


def _latest(quick: bool) -> dict[str, Any] | None:
    found = []
    for path in RESULTS.glob("training-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if bool(data.get("quick")) == quick and isinstance(data.get("parts"), dict):
            found.append((path.stat().st_mtime, data))
    return max(found, key=lambda item: item[0])[1] if found else None


def render(raw: dict[str, Any]) -> str:
    """The ``## Training`` section: each part's subsection."""
    available = parts()
    lines = ["## Training", ""]
    for name, result in raw["parts"].items():
        if name in available:
            lines.append(_module(available[name]).render(result).rstrip("\n"))
            if result.get("carried_over"):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(result.get("ran_at", 0)))
                lines.append(f"\n(Kept from the run of {when}: this part was not rerun.)")
            lines.append("")
    loads = [
        f"{name} {result['load_before']:.1f} -> {result['load_after']:.1f}"
        for name, result in raw["parts"].items()
        if "load_before" in result
    ]
    if loads:
        lines.append(
            "1-minute load average before -> after each part (a quiet 2-core machine sits near 0; "
            "a part that loads both cores ends near 2): " + ", ".join(loads) + "."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = run()
    print(json.dumps(result, indent=1))
    print(render(result))
