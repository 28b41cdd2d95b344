"""Mergeable counts per pane: each column on the training bins, the output, the scores.

Every column is counted on the bins the training statistics froze: numeric values at the
reference decile edges (``(-inf, e0], ..., (e_last, inf)``, then nulls), categorical values over
the reference categories (then ``other`` and nulls), exactly the layout of the reference
``counts``. Numeric columns are also counted on a finer grid, the reference percentiles, from
which the Wasserstein distance is read. Scores of a binary classifier are counted on
``SCORE_BINS`` equal-width bins with the sum of their calibrated probabilities, for CBPE.
Counts add, so a window's counts are the sum of its panes' and nothing is read twice. Rows are
binned with ``searchsorted``/``index_in`` and summed with ``bincount``, per block, per pane.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.arrays import bits, numbers, valid
from keel.validate.sketches import column_cdf, column_quantiles

__all__ = [
    "SCORE_BINS",
    "Binning",
    "PaneCounts",
    "binning_of",
    "booleans",
    "count_panes",
    "strings",
]

SCORE_BINS = 500
_PERCENTILES = np.linspace(0.01, 0.99, 99)


def strings(values: list[str]) -> pa.Array:
    """A string array from its buffers: ``pa.array`` of a list or ndarray imports pandas
    (0.8 s of a monitor command's start-up) to look for pandas objects in it."""
    text = "".join(values)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    if text.isascii():  # a character is a byte: no encoding of each value
        offsets[1:] = np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)))
        data = pa.py_buffer(text.encode())
    else:
        encoded = [v.encode() for v in values]
        offsets[1:] = np.cumsum([len(e) for e in encoded])
        data = pa.py_buffer(b"".join(encoded))
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), data)


def booleans(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean column as a NumPy bool array, nulls as False, read from its bitmaps."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if len(chunk):
            values = bits(chunk.buffers()[1], chunk.offset, len(chunk))
            present = valid(chunk)
            parts.append(values if present is None else values & present)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.bool_)


@dataclass(frozen=True)
class Binning:
    """How one column is binned: the reference's layout, and the fine grid for numeric ones."""

    column: str
    kind: str
    edges: np.ndarray | None  # numeric decile edges
    categories: pa.Array | None  # categorical reference categories
    fine: np.ndarray | None  # numeric percentile edges (for Wasserstein)
    fine_cdf: np.ndarray | None  # the reference's P(X <= edge) there
    std: float  # the reference standard deviation (numeric)

    @property
    def bins(self) -> int:
        """Bins in the reference layout, the null bin included."""
        if self.edges is not None:
            return self.edges.size + 2
        assert self.categories is not None
        return len(self.categories) + 2

    def index(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Each row's bin in the reference layout."""
        if self.edges is not None:
            values = numbers(column, nulls="nan")
            index = np.searchsorted(self.edges, values, side="left")
            index[np.isnan(values)] = self.edges.size + 1
            return index.astype(np.int64)
        assert self.categories is not None
        text = column if pa.types.is_string(column.type) else column.cast(pa.string())
        found = pc.index_in(text, value_set=self.categories)
        other, null = len(self.categories), len(self.categories) + 1
        position = numbers(found, nulls="nan")
        index = np.where(np.isnan(position), other, position).astype(np.int64)
        index[~booleans(pc.is_valid(text))] = null
        return index

    def fine_index(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Each present value's bin on the percentile grid (-1 for nulls)."""
        assert self.fine is not None
        values = numbers(column, nulls="nan")
        index = np.searchsorted(self.fine, values, side="left")
        index[np.isnan(values)] = -1
        return index.astype(np.int64)


def binning_of(name: str, reference: dict[str, Any]) -> Binning:
    """The binning of a column from its training statistics."""
    if reference["kind"] == "numeric":
        fine = np.unique(np.asarray(column_quantiles(reference, _PERCENTILES), dtype=np.float64))
        fine = fine[np.isfinite(fine)]
        cdf = np.asarray(column_cdf(reference, fine), dtype=np.float64)
        edges = np.asarray(reference["edges"], dtype=np.float64)
        std = float(reference.get("std") or 0.0)
        return Binning(name, "numeric", edges, None, fine, cdf, std)
    categories = strings([str(c) for c in reference["categories"]])
    return Binning(name, str(reference["kind"]), None, categories, None, None, 0.0)


@dataclass
class PaneCounts:
    """What one pane (or a merged window) counted."""

    rows: int = 0
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    fine: dict[str, np.ndarray] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    output: np.ndarray | None = None
    scores: np.ndarray | None = None  # (SCORE_BINS, 2): rows, sum of calibrated P(positive)
    first: float = np.inf
    last: float = -np.inf

    def add(self, other: PaneCounts) -> None:
        """Add another pane's counts to these."""
        self.rows += other.rows
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        _add_all(self.columns, other.columns)
        _add_all(self.fine, other.fine)
        for name, count in other.invalid.items():
            self.invalid[name] = self.invalid.get(name, 0) + count
        self.output = _sum(self.output, other.output)
        self.scores = _sum(self.scores, other.scores)


def _add_all(into: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> None:
    for name, counts in other.items():
        into[name] = counts.copy() if name not in into else into[name] + counts


def _sum(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if b is None:
        return a
    return b.copy() if a is None else a + b


def _per_pane(pane: np.ndarray, panes: int, index: np.ndarray, bins: int) -> np.ndarray:
    """Counts per (pane, bin) as a (panes, bins) matrix."""
    flat = np.bincount(pane * bins + index, minlength=panes * bins)
    return flat.reshape(panes, bins)


def count_panes(
    panes: dict[int, PaneCounts],
    pane: np.ndarray,
    columns: dict[str, pa.ChunkedArray],
    binnings: dict[str, Binning],
    *,
    times: np.ndarray,
    invalid: dict[str, np.ndarray],
    output: tuple[Binning, pa.ChunkedArray] | None = None,
    scores: np.ndarray | None = None,
    calibrate: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Add one block's rows to their panes.

    Args:
        panes: Pane number -> counts, updated in place.
        pane: Each row's pane number.
        columns: The block's input columns, coerced (as serving reads them).
        binnings: Each column's binning.
        times: Each row's request time (for the window's first and last request).
        invalid: Per column, a boolean mask of the rows whose value did not convert (left
            out of that column's counts and counted apart).
        output: The output's binning and the block's predictions.
        scores: P(positive) per row (binary classifiers; NaN where not logged).
        calibrate: Maps scores to calibrated probabilities (identity when None).
    """
    keys, local = np.unique(pane, return_inverse=True)
    n = keys.size
    per_column = {}
    per_fine = {}
    for name, col in columns.items():
        binning = binnings[name]
        valid = ~invalid[name] if name in invalid else np.ones(len(col), dtype=bool)
        index = binning.index(col)  # values that did not convert are left out, not null
        per_column[name] = _per_pane(local[valid], n, index[valid], binning.bins)
        if binning.fine is not None:
            fine = binning.fine_index(col)
            keep = (fine >= 0) & valid
            per_fine[name] = _per_pane(local[keep], n, fine[keep], binning.fine.size + 1)
    per_invalid = {name: np.bincount(local[mask], minlength=n) for name, mask in invalid.items()}
    per_output = None
    if output is not None:
        per_output = _per_pane(local, n, output[0].index(output[1]), output[0].bins)
    per_scores = None if scores is None else _score_counts(local, n, scores, calibrate)
    rows = np.bincount(local, minlength=n)
    first = np.full(n, np.inf)
    last = np.full(n, -np.inf)
    np.minimum.at(first, local, times)
    np.maximum.at(last, local, times)
    for i, key in enumerate(keys.tolist()):
        counts = PaneCounts(
            rows=int(rows[i]),
            columns={name: m[i] for name, m in per_column.items()},
            fine={name: m[i] for name, m in per_fine.items()},
            invalid={name: int(c[i]) for name, c in per_invalid.items()},
            output=None if per_output is None else per_output[i],
            scores=None if per_scores is None else per_scores[i],
            first=float(first[i]),
            last=float(last[i]),
        )
        if key in panes:
            panes[key].add(counts)
        else:
            panes[key] = counts


def _score_counts(
    local: np.ndarray,
    panes: int,
    scores: np.ndarray,
    calibrate: Callable[[np.ndarray], np.ndarray] | None,
) -> np.ndarray:
    """(panes, SCORE_BINS, 2): rows per score bin and their summed calibrated P(positive)."""
    keep = np.isfinite(scores)
    score = np.clip(scores[keep], 0.0, 1.0)
    bins = np.minimum((score * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
    where = local[keep] * SCORE_BINS + bins
    calibrated = score if calibrate is None else calibrate(score)
    size = panes * SCORE_BINS
    rows = np.bincount(where, minlength=size)
    positives = np.bincount(where, weights=calibrated, minlength=size)
    return np.stack([rows, positives], axis=-1).reshape(panes, SCORE_BINS, 2)
