"""Calibration of a classifier (reliability curve, expected calibration error, Brier score) and
the residuals of a regression model.

The reliability curve has ``bins`` equal-width bins of the predicted probability (scikit-learn's
``calibration_curve(strategy="uniform")``); a multiclass model is judged on its top-label
confidence. ECE = sum over bins of (rows in bin / rows) * |observed rate - mean confidence|.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Calibration", "Residuals", "calibration_of", "residuals_of"]


@dataclass(frozen=True)
class Calibration:
    """A classifier's calibration on the test rows.

    Attributes:
        ece: Expected calibration error over the reliability bins.
        mce: Maximum calibration error (the worst bin's gap).
        brier: Mean squared error of the probabilities (multiclass: summed over classes).
        bins: ``(lower, upper, rows, mean confidence, observed rate)`` per non-empty bin.
    """

    ece: float
    mce: float
    brier: float
    bins: tuple[tuple[float, float, int, float, float], ...]

    def to_json(self) -> dict[str, Any]:
        keys = ("lower", "upper", "rows", "confidence", "observed")
        return {
            "ece": self.ece,
            "mce": self.mce,
            "brier": self.brier,
            "bins": [dict(zip(keys, b, strict=True)) for b in self.bins],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        bins = tuple(
            (b["lower"], b["upper"], b["rows"], b["confidence"], b["observed"])
            for b in data["bins"]
        )
        return cls(data["ece"], data["mce"], data["brier"], bins)


def calibration_of(y: np.ndarray, proba: np.ndarray, *, bins: int = 10) -> Calibration:
    """Reliability curve, ECE, MCE and Brier score of binary P(positive) (1-D ``proba``) or
    multiclass probabilities (``(rows, k)``) against encoded labels ``y``."""
    p = np.asarray(proba, dtype=np.float64)
    codes = y.astype(np.int64)
    if p.ndim == 1:
        confidence, hit = p, codes.astype(np.float64)
        brier = float(np.mean((p - codes) ** 2)) if len(p) else 0.0
    else:
        confidence = p.max(axis=1)
        hit = (p.argmax(axis=1) == codes).astype(np.float64)
        brier = float(np.mean(np.sum((p - np.eye(p.shape[1])[codes]) ** 2, axis=1)))
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges[1:-1], confidence, side="right"), 0, bins - 1)
    rows = np.bincount(which, minlength=bins).astype(np.float64)
    mean_conf = np.bincount(which, weights=confidence, minlength=bins).astype(np.float64)
    observed = np.bincount(which, weights=hit, minlength=bins).astype(np.float64)
    full = rows > 0
    mean_conf[full] /= rows[full]
    observed[full] /= rows[full]
    gaps = np.abs(observed - mean_conf)[full]
    total = max(len(confidence), 1)
    table = tuple(
        (float(edges[i]), float(edges[i + 1]), int(rows[i]), float(mean_conf[i]),
         float(observed[i]))
        for i in np.flatnonzero(full)
    )  # fmt: skip
    return Calibration(
        ece=float(np.sum(rows[full] * gaps) / total),
        mce=float(gaps.max()) if len(gaps) else 0.0,
        brier=brier,
        bins=table,
    )


@dataclass(frozen=True)
class Residuals:
    """A regression model's residuals (prediction - truth) on the test rows."""

    mean: float
    std: float
    quantiles: Mapping[str, float]
    max_abs: float

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "quantiles": dict(self.quantiles),
            "max_abs": self.max_abs,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Residuals:
        return cls(data["mean"], data["std"], dict(data["quantiles"]), data["max_abs"])


def residuals_of(y: np.ndarray, prediction: np.ndarray) -> Residuals:
    """Mean (bias), standard deviation, p5/p25/p50/p75/p95 and largest absolute residual."""
    error = np.asarray(prediction, dtype=np.float64) - y.astype(np.float64)
    if len(error) == 0:
        return Residuals(0.0, 0.0, {}, 0.0)
    levels = (5, 25, 50, 75, 95)
    values = np.percentile(error, levels)
    return Residuals(
        mean=float(error.mean()),
        std=float(error.std()),
        quantiles={f"p{q}": float(v) for q, v in zip(levels, values, strict=True)},
        max_abs=float(np.abs(error).max()),
    )
