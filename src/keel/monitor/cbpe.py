"""Confidence-based performance estimation (CBPE) for binary classifiers, before labels arrive.

With calibrated probabilities p_i = P(y=1 | x_i), the expected confusion matrix of a window is
E[TP] = sum of p over rows predicted positive, E[FP] = sum of (1 - p) there, and likewise for
the rows predicted negative (NannyML's CBPE; methods.md section 3). Accuracy follows; ROC AUC is
the trapezoid over the window's rows sorted by the model's (uncalibrated) score, with the
calibrated probabilities as expected positives.

Everything is read from per-window counts on ``SCORE_BINS`` equal-width score bins (rows, and
the sum of calibrated probabilities): the counts add across panes and serving workers, and no
window keeps its rows. Rows that share a bin count as ties (half credit), which moves ROC AUC by
less than 1e-3 with 500 bins. The same function with the labels' positive counts in place of
the expected ones gives the realised metrics, so estimate and realisation are computed alike.

**Expected error.** When the assumptions hold (calibrated probabilities, no concept drift:
P(y | x) fixed, covariate shift allowed), the realised metric differs from the estimate by its
sampling error: ``sqrt(acc (1 - acc) / n)`` for accuracy and Hanley & McNeil's standard error
for ROC AUC (from the expected positives and negatives). :class:`Estimate` states both; about
95% of windows fall within 2 of them and NannyML draws its band at 3.

**Calibration.** A model's scores need not be calibrated: :func:`fit_calibration` fits an
isotonic map (pool-adjacent-violators over score bins) on reference predictions with labels
(the test set, never the training set) and keeps it only if it lowers the expected calibration
error out of fold, as NannyML does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keel.monitor.counts import SCORE_BINS

__all__ = ["Calibration", "Estimate", "estimate_performance", "fit_calibration", "score_bins"]

_FOLDS = 5
_ECE_BINS = 10
_CALIBRATION_BINS = 1000


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimated (or realised) accuracy and ROC AUC of one window, with sampling errors."""

    rows: int
    positives: float
    accuracy: float | None
    accuracy_error: float | None
    roc_auc: float | None
    roc_auc_error: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready, rounded."""
        return {
            "rows": self.rows,
            "positives": round(self.positives, 3),
            "accuracy": _r(self.accuracy),
            "accuracy_error": _r(self.accuracy_error),
            "roc_auc": _r(self.roc_auc),
            "roc_auc_error": _r(self.roc_auc_error),
        }


def _r(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 5)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A monotone map from scores to probabilities: step function over sorted ``scores``."""

    scores: tuple[float, ...]
    probabilities: tuple[float, ...]

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``scores`` (linear between the fitted points)."""
        calibrated: np.ndarray = np.interp(
            scores, np.asarray(self.scores), np.asarray(self.probabilities)
        )
        return calibrated


def score_bins(scores: np.ndarray, positives: np.ndarray, bins: int = SCORE_BINS) -> np.ndarray:
    """(bins, 2): rows per equal-width score bin and the sum of ``positives`` (labels 0/1, or
    calibrated probabilities) there."""
    score = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    where = np.minimum((score * bins).astype(np.int64), bins - 1)
    rows = np.bincount(where, minlength=bins)
    sums = np.bincount(where, weights=np.asarray(positives, dtype=np.float64), minlength=bins)
    return np.stack([rows, sums], axis=-1)


def estimate_performance(counts: np.ndarray, threshold: float = 0.5) -> Estimate:
    """Accuracy and ROC AUC from (bins, 2) score-bin counts (see :func:`score_bins`).

    Args:
        counts: Rows and expected (or actual) positives per score bin, lowest scores first.
        threshold: The score at and above which the model predicts the positive class.
    """
    rows = counts[:, 0].astype(np.float64)
    pos = np.clip(counts[:, 1].astype(np.float64), 0.0, rows)
    n = float(rows.sum())
    if n <= 0:
        return Estimate(0, 0.0, None, None, None, None)
    neg = rows - pos
    positive_bins = np.arange(rows.size) >= round(threshold * rows.size)
    correct = pos[positive_bins].sum() + neg[~positive_bins].sum()
    accuracy = float(correct / n)
    p, q = float(pos.sum()), float(neg.sum())
    auc = auc_error = None
    if p > 0 and q > 0:
        tp = np.concatenate([[0.0], np.cumsum(pos[::-1])])  # highest scores first
        fp = np.concatenate([[0.0], np.cumsum(neg[::-1])])
        auc = float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2) / (p * q))
        auc_error = _hanley_mcneil(auc, p, q)
    return Estimate(
        rows=int(n),
        positives=p,
        accuracy=accuracy,
        accuracy_error=math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n),
        roc_auc=auc,
        roc_auc_error=auc_error,
    )


def _hanley_mcneil(auc: float, positives: float, negatives: float) -> float:
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc)
        + max(positives - 1, 0) * (q1 - auc * auc)
        + max(negatives - 1, 0) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def fit_calibration(scores: np.ndarray, labels: np.ndarray) -> Calibration | None:
    """An isotonic calibration of ``scores`` to ``labels`` (0/1), or None if it does not help.

    None when the labels hold one class, when the scores separate them almost perfectly (ROC AUC
    > 0.999), or when calibrating does not lower the expected calibration error of held-out
    rows (``_FOLDS`` interleaved folds, predictions pooled).
    """
    score = np.asarray(scores, dtype=np.float64)
    label = np.asarray(labels, dtype=np.float64)
    keep = np.isfinite(score)
    score, label = score[keep], label[keep]
    if score.size < 2 * _FOLDS or label.min() == label.max():
        return None
    auc = estimate_performance(score_bins(score, label, _CALIBRATION_BINS)).roc_auc
    if auc is None or auc > 0.999:
        return None
    fold = np.arange(score.size) % _FOLDS
    held_out = np.empty_like(score)
    for k in range(_FOLDS):
        fitted = _isotonic(score[fold != k], label[fold != k])
        held_out[fold == k] = fitted(score[fold == k])
    if _ece(held_out, label) >= _ece(score, label):
        return None
    return _isotonic(score, label)


def _isotonic(score: np.ndarray, label: np.ndarray) -> Calibration:
    """Pool-adjacent-violators over equal-count score bins (a loop over bins, not rows)."""
    order = np.argsort(score, kind="stable")
    groups = min(_CALIBRATION_BINS, score.size)
    starts = np.unique(np.linspace(0, score.size, groups + 1).astype(np.int64)[:-1])
    sizes = np.diff(np.append(starts, score.size)).astype(np.float64)
    means = (np.add.reduceat(label[order], starts) / sizes).tolist()
    centers = (np.add.reduceat(score[order], starts) / sizes).tolist()
    blocks: list[list[float]] = []  # [mean, weight, first center, last center]
    for mean, weight, center in zip(means, sizes.tolist(), centers, strict=True):
        blocks.append([mean, weight, center, center])
        while len(blocks) > 1 and blocks[-2][0] >= blocks[-1][0]:
            merged = blocks.pop()
            prev = blocks[-1]
            total = prev[1] + merged[1]
            prev[0] = (prev[0] * prev[1] + merged[0] * merged[1]) / total
            prev[1] = total
            prev[3] = merged[3]
    xs: list[float] = []
    ys: list[float] = []
    for mean, _, first, last in blocks:
        xs += [first, last] if last > first else [first]
        ys += [mean, mean] if last > first else [mean]
    return Calibration(tuple(xs), tuple(ys))


def _ece(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Expected calibration error over ``_ECE_BINS`` equal-count bins."""
    order = np.argsort(probabilities, kind="stable")
    starts = np.unique(np.linspace(0, probabilities.size, _ECE_BINS + 1).astype(np.int64)[:-1])
    sizes = np.diff(np.append(starts, probabilities.size)).astype(np.float64)
    mean_p = np.add.reduceat(probabilities[order], starts) / sizes
    mean_y = np.add.reduceat(labels[order], starts) / sizes
    return float(np.sum(sizes * np.abs(mean_p - mean_y)) / probabilities.size)
