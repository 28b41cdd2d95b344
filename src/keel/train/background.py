"""A bounded sample of the training matrix saved with a model, as the background that
model-agnostic explanations (:mod:`keel.evaluate.agnostic`) replace a hidden column's values
with.

Flavors without exact contributions of their own (scikit-learn, the MLP) keep
:data:`BACKGROUND_ROWS` seeded training rows, already transformed by the feature pipeline, as
``background.npy`` (NumPy's own format, read with ``allow_pickle=False``: no code can load).
A model saved before this file existed reads back with no background.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

__all__ = ["BACKGROUND_FILE", "BACKGROUND_ROWS", "background_files", "read_background",
           "sample_background"]  # fmt: skip

BACKGROUND_FILE = "background.npy"
BACKGROUND_ROWS = 100


def sample_background(x: np.ndarray, seed: int, *, rows: int = BACKGROUND_ROWS) -> np.ndarray:
    """At most ``rows`` rows of ``x`` drawn without replacement (seeded), in their order."""
    matrix = np.asarray(x, dtype=np.float64)
    if len(matrix) <= rows:
        return matrix.copy()
    chosen = np.sort(np.random.default_rng(seed).choice(len(matrix), rows, replace=False))
    return np.ascontiguousarray(matrix[chosen])


def background_files(background: np.ndarray | None) -> dict[str, bytes]:
    """``{"background.npy": bytes}`` (same array, same bytes), or ``{}`` without one."""
    if background is None:
        return {}
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(background, dtype=np.float64), allow_pickle=False)
    return {BACKGROUND_FILE: buffer.getvalue()}


def read_background(files: Mapping[str, bytes]) -> np.ndarray | None:
    """The saved background, or None when the model was saved without one."""
    data = files.get(BACKGROUND_FILE)
    if data is None:
        return None
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.float64)
