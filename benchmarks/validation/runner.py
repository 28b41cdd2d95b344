"""What every runner script shares (standard library only): phase timing and the RESULT line.

A runner is its own process: ``python run_<tool>.py PARQUET``. It prints one line
``RESULT {json}`` with its phase times, which checks failed and the unexpected count per check.
The harness measures the process wall and peak RSS from outside (os.wait4).
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

STARTED = time.perf_counter()


class Phases:
    """Consecutive phase timings: ``mark(name)`` closes the phase that ran since the last mark."""

    def __init__(self) -> None:
        self.last = STARTED
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> float:
        now = time.perf_counter()
        self.seconds[name] = now - self.last
        self.last = now
        return self.seconds[name]


def rss_mb() -> float:
    """Peak RSS of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(tool: str, version: str, rows: int, phases: Phases, results: dict[str, Any]) -> None:
    """Print the RESULT line.

    Args:
        tool: Tool name.
        version: Tool version.
        rows: Rows validated.
        phases: Phase timings (import, read, validate, and any others).
        results: ``{check_id: unexpected count or None}`` plus ``failed``: the failing check ids.
    """
    failed = sorted(results.pop("failed"))
    payload = {
        "tool": tool,
        "version": version,
        "rows": rows,
        "phases_s": phases.seconds,
        "in_process_s": time.perf_counter() - STARTED,
        "rss_at_end_mb": rss_mb(),
        "failed": failed,
        "unexpected": results,
    }
    print("RESULT " + json.dumps(payload), flush=True)
