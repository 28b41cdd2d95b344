"""The server's heap while it serves: the loaded models kept out of the collector's way.

Before the first request the heap is collected and frozen (:func:`gc.freeze`): the models,
pipelines and modules loaded at start are long-lived, and a full collection during traffic
would otherwise walk all of them (a latency tail). The youngest generation is then collected
every :data:`YOUNG` allocations instead of Python's 700: a request's objects mostly die with
it, freed by their reference counts before a collection sees them, so a larger threshold
leaves the collector less to walk (about 5,000 fewer instructions per request at 64
connections, 310,754 -> 305,578: ``GC_FREEZE=1 GC_THRESHOLD=... FILL=100000
benchmarks/serving/instructions.py PROJECT protocol64 1280``; 50,000 gave no more).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["YOUNG", "serving_heap"]

YOUNG = 10_000
"""Allocations between two collections of the youngest generation while serving."""


@contextmanager
def serving_heap(young: int = YOUNG) -> Iterator[None]:
    """Collect and freeze the heap and raise the youngest threshold, for the block's length."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()  # let shutdown collect them (extension types report frozen as leaks)
