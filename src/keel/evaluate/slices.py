"""Worst slices: where the model's per-row loss is significantly above the rest of the data.

SliceFinder's lattice (Chung et al., ICDE 2019), vectorised: a slice is ``feature = value``
(categorical columns; numeric ones in equal-height bins) or a crossing of two such predicates.
Each slice S is compared with its counterpart D \\ S on the per-row loss (log loss for
classifiers, squared error for regression): effect size
phi = (mean_S - mean_S') / sqrt((var_S + var_S') / 2), one-sided Welch t-test (slice worse),
Benjamini-Hochberg over every slice tested, ranked by effect size. Unlike SliceFinder, every
crossing is tested (not only those of unproblematic parents): a bad crossing shows through its
parents, and its larger effect ranks it above them. Every slice's sums come from one
``np.bincount`` per feature (or pair of features): no loop over rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

__all__ = ["SliceFinding", "benjamini_hochberg", "find_worst_slices", "row_loss"]

NULL = "<null>"


@dataclass(frozen=True)
class SliceFinding:
    """One problematic slice.

    Attributes:
        predicates: ``(feature, value)`` pairs, ANDed (a numeric value is its bin, ``[a, b)``).
        rows: Test rows in the slice.
        loss: Mean per-row loss in the slice; ``counterpart_loss`` outside it.
        effect_size: phi (Cohen's d of slice against counterpart).
        p_value: One-sided Welch t-test p; ``q_value`` its Benjamini-Hochberg adjustment.
    """

    predicates: tuple[tuple[str, str], ...]
    rows: int
    loss: float
    counterpart_loss: float
    effect_size: float
    p_value: float
    q_value: float

    @property
    def name(self) -> str:
        """``sex=Female&age=[28, 37)``."""
        return "&".join(f"{f}={v}" for f, v in self.predicates)

    def to_json(self) -> dict[str, Any]:
        return {
            "slice": self.name,
            "predicates": [list(p) for p in self.predicates],
            "rows": self.rows,
            "loss": self.loss,
            "counterpart_loss": self.counterpart_loss,
            "effect_size": self.effect_size,
            "p_value": self.p_value,
            "q_value": self.q_value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SliceFinding:
        predicates = tuple((str(f), str(v)) for f, v in data["predicates"])
        fields = ("rows", "loss", "counterpart_loss", "effect_size", "p_value", "q_value")
        return cls(predicates, *(data[k] for k in fields))


def row_loss(kind: str, y: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Per-row loss: log loss (binary, multiclass) or squared error (regression)."""
    if kind == "binary":
        p = np.clip(np.asarray(prediction, dtype=np.float64), 1e-15, 1 - 1e-15)
        return np.asarray(-(y * np.log(p) + (1 - y) * np.log(1 - p)), dtype=np.float64)
    if kind == "multiclass":
        proba = np.clip(np.asarray(prediction, dtype=np.float64), 1e-15, 1.0)
        chosen = proba[np.arange(len(y)), y.astype(np.int64)] / proba.sum(axis=1)
        return np.asarray(-np.log(chosen), dtype=np.float64)
    error = np.asarray(prediction, dtype=np.float64) - y.astype(np.float64)
    return np.asarray(error**2, dtype=np.float64)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): reject where q <= alpha to keep the
    expected share of false discoveries at most alpha."""
    m = len(p_values)
    if m == 0:
        return np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p_values)
    scaled = np.asarray(p_values, dtype=np.float64)[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def _encode(values: Any, bins: int) -> tuple[np.ndarray, list[str]] | None:
    """Codes and value names; numeric columns with more than ``bins`` values are binned by
    quantile; an ID-like column (more distinct values than half the rows) gives None."""
    import pandas as pd

    array = np.asarray(values)
    numeric = array.dtype.kind in "iuf"
    if numeric:
        x = array.astype(np.float64)
        finite = np.isfinite(x)
        distinct = np.unique(x[finite])
        if len(distinct) > bins:
            edges = np.unique(np.quantile(x[finite], np.linspace(0, 1, bins + 1)))
            codes = np.searchsorted(edges[1:-1], x, side="right")
            names = [f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == len(edges) - 2 else ')'}"
                     for i in range(len(edges) - 1)]  # fmt: skip
            return _with_null(codes, names, ~finite)
        codes = np.searchsorted(distinct, x)
        return _with_null(codes, [f"{v:g}" for v in distinct], ~finite)
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), sort=True)
    if len(uniques) > max(len(array) / 2, bins):
        return None
    return _with_null(codes, [str(u) for u in uniques], codes < 0)


def _with_null(
    codes: np.ndarray, names: list[str], null: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    if null.any():
        return np.where(null, len(names), codes).astype(np.int64), [*names, NULL]
    return codes.astype(np.int64), names


@dataclass(frozen=True)
class _Stats:
    """Per-slice count, sum and sum of squares of the loss, and what each slice is."""

    n: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    predicates: list[tuple[tuple[str, str], ...]]


def _sums(codes: np.ndarray, size: int, loss: np.ndarray) -> tuple[np.ndarray, ...]:
    return (
        np.bincount(codes, minlength=size).astype(np.float64),
        np.bincount(codes, weights=loss, minlength=size),
        np.bincount(codes, weights=loss * loss, minlength=size),
    )


def _test(stats: _Stats, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Effect size and one-sided Welch p-value of each slice against its counterpart."""
    from scipy.stats import t as student  # type: ignore[import-untyped]  # via scikit-learn

    n_all, s_all, q_all = float(len(loss)), float(loss.sum()), float((loss * loss).sum())
    n1, n2 = stats.n, n_all - stats.n
    with np.errstate(divide="ignore", invalid="ignore"):  # empty slices: NaN, dropped below
        m1, m2 = stats.total / n1, (s_all - stats.total) / n2
        v1 = np.maximum(stats.squares - n1 * m1**2, 0.0) / (n1 - 1)
        v2 = np.maximum((q_all - stats.squares) - n2 * m2**2, 0.0) / (n2 - 1)
        effect = (m1 - m2) / np.sqrt((v1 + v2) / 2)
        se2 = v1 / n1 + v2 / n2
        tstat = (m1 - m2) / np.sqrt(se2)
        df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
        p = student.sf(tstat, df)
    return np.nan_to_num(effect, nan=0.0), np.nan_to_num(p, nan=1.0)


def find_worst_slices(
    features: Mapping[str, Any],
    loss: np.ndarray,
    *,
    min_size: int = 30,
    bins: int = 10,
    crossings: bool = True,
    min_effect: float = 0.2,
    alpha: float = 0.05,
    top: int = 10,
) -> tuple[list[SliceFinding], int]:
    """The slices whose loss is significantly worse than the rest, largest effect first.

    Args:
        features: Column name -> its value per test row (numbers are binned, strings not).
        loss: The per-row loss (:func:`row_loss`).
        min_size: Slices with fewer rows (or fewer rows outside them) are not tested.
        bins: Equal-height bins per numeric column with more distinct values than this.
        crossings: Also test ANDs of two predicates of different columns.
        min_effect: Smallest effect size (phi) reported (SliceFinder's T; Cohen: 0.2 small).
        alpha: Benjamini-Hochberg false discovery rate over every slice tested.
        top: How many slices to return.

    Returns:
        The problematic slices (q <= alpha and phi >= min_effect), and how many were tested.
    """
    n_rows = len(loss)
    encoded = {k: e for k, v in features.items() if (e := _encode(v, bins)) is not None}
    stats = [_single(name, codes, names, loss) for name, (codes, names) in encoded.items()]
    if crossings:
        for (a, (ca, na)), (b, (cb, nb)) in combinations(encoded.items(), 2):
            stats.append(_pair(a, ca, na, b, cb, nb, loss))
    n = np.concatenate([s.n for s in stats])
    merged = _Stats(
        n,
        np.concatenate([s.total for s in stats]),
        np.concatenate([s.squares for s in stats]),
        [p for s in stats for p in s.predicates],
    )
    effect, p = _test(merged, loss)
    tested = np.flatnonzero((n >= min_size) & (n_rows - n >= min_size))
    q = np.ones_like(p)
    q[tested] = benjamini_hochberg(p[tested])
    chosen = [i for i in tested if q[i] <= alpha and effect[i] >= min_effect]
    chosen.sort(key=lambda i: (-effect[i], -n[i]))
    s_all = float(loss.sum())
    found = [
        SliceFinding(
            predicates=merged.predicates[i],
            rows=int(n[i]),
            loss=float(merged.total[i] / n[i]),
            counterpart_loss=float((s_all - merged.total[i]) / (n_rows - n[i])),
            effect_size=float(effect[i]),
            p_value=float(p[i]),
            q_value=float(q[i]),
        )
        for i in chosen[:top]
    ]
    return found, len(tested)


def _single(name: str, codes: np.ndarray, names: list[str], loss: np.ndarray) -> _Stats:
    n, total, squares = _sums(codes, len(names), loss)
    return _Stats(n, total, squares, [((name, v),) for v in names])


def _pair(
    a: str, ca: np.ndarray, na: list[str], b: str, cb: np.ndarray, nb: list[str],
    loss: np.ndarray,
) -> _Stats:  # fmt: skip
    n, total, squares = _sums(ca * len(nb) + cb, len(na) * len(nb), loss)
    return _Stats(n, total, squares, [((a, x), (b, y)) for x in na for y in nb])
