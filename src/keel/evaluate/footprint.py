"""What a model costs to serve: its files' size and the latency of one row through the online
path (``FeaturePipeline.transform_row`` then the model's ``predict``), measured in process on
test rows, so gates can bound them (``latency.p99_ms <= 5``, ``size.bytes <= 50e6``)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from keel.errors import DataValidationError

__all__ = ["Footprint", "measure_footprint"]


@dataclass(frozen=True)
class Footprint:
    """Model size in bytes and single-row latency (ms) over ``rows`` timed rows."""

    bytes: int
    rows: int
    p50_ms: float | None
    p99_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Footprint:
        return cls(**data)


@contextmanager
def _one_thread(model: Any) -> Iterator[None]:
    """Model calls in this block on one thread (threadpoolctl, with scikit-learn; without it,
    as they are). A model that scores one row on the calling thread by itself (LightGBM's
    single-row path: ``one_row_on_caller``) needs nothing: threadpoolctl's scan of the loaded
    libraries costs ~0.04 s."""
    if getattr(model, "one_row_on_caller", False):
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def measure_footprint(
    pipeline: Any,
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    files: Mapping[str, bytes],
    *,
    warmup: int = 20,
) -> Footprint:
    """Time ``model.predict(pipeline.transform_row(row))`` once per row (after ``warmup``
    untimed calls) on one OpenMP/BLAS thread, as the server's prediction threads run; rows the
    online path refuses are skipped, as the server would refuse them. (Unpinned, a one-row
    LightGBM call wakes every core's thread: on a busy 2-core machine 200 rows took 2.5-4.3 s
    and a p99 of 80-92 ms, against 0.13-0.2 s and 32-37 ms pinned, the same p50.)

    Args:
        pipeline: The fitted feature pipeline.
        model: The fitted trainer (``predict`` on a ``(1, n_features)`` matrix).
        rows: Raw input rows (field -> value), e.g. a couple of hundred test rows.
        files: The model's saved files (their total size is ``bytes``).
    """
    timings: list[float] = []
    with _one_thread(model):  # as the server scores one row (serve.models.pin_threads)
        for i, row in enumerate(list(rows[:warmup]) + list(rows)):
            start = time.perf_counter()
            try:
                model.predict(pipeline.transform_row(row))
            except DataValidationError:
                continue
            if i >= min(warmup, len(rows)):
                timings.append((time.perf_counter() - start) * 1e3)
    size = sum(len(b) for b in files.values())
    if not timings:
        return Footprint(size, 0, None, None)
    p50, p99 = np.percentile(np.asarray(timings), [50, 99])
    return Footprint(size, len(timings), float(p50), float(p99))
