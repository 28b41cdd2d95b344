"""What one step used: CPU seconds and the peak memory while it ran, not the process's
lifetime high-water mark (``ru_maxrss``), which only ever grows across the steps of a run.

The peak is sampled from ``/proc/self/statm`` by a thread every few milliseconds (Linux); on
other systems it falls back to ``ru_maxrss``. A step that allocates and frees within one
sampling interval can be under-reported by that much.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["StepUsage"]

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
INTERVAL = 0.005


class StepUsage:
    """Measure a block: ``with StepUsage() as usage: ...``, then ``usage.cpu_seconds`` and
    ``usage.peak_rss_mb`` (read them inside the block for the figures so far)."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._cpu0 = 0.0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StepUsage:
        self._cpu0 = _cpu_seconds()
        self._peak = _rss_bytes() or 0
        if _STATM.exists():
            self._thread = threading.Thread(target=self._sample, name="keel-usage", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._peak = max(self._peak, _rss_bytes() or 0)

    @property
    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process since the block began."""
        return _cpu_seconds() - self._cpu0

    @property
    def peak_rss_mb(self) -> float:
        """The highest resident memory seen while the block ran, in MB."""
        if not _STATM.exists():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return max(self._peak, _rss_bytes() or 0) / (1024.0 * 1024.0)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            current = _rss_bytes()
            if current is not None and current > self._peak:
                self._peak = current


def _rss_bytes() -> int | None:
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
