"""Confidence-based performance estimation (CBPE) for binary classifiers, before labels arrive.

With calibrated probabilities p_i = P(y=1 | x_i), the expected confusion matrix of a window is
E[TP] = sum of p over rows predicted positive, E[FP] = sum of (1 - p) there, and likewise for
the rows predicted negative (NannyML's CBPE; methods.md section 3). Accuracy follows; ROC AUC is
the trapezoid over the window's rows sorted by the model's (uncalibrated) score, with the
calibrated probabilities as expected positives.

Everything is read from per-window counts on ``SCORE_BINS`` equal-width score bins (rows, and
the sum of calibrated probabilities): the counts add across panes and serving workers, and no
window keeps its rows. Rows that share a bin count as ties (half credit), which moves ROC AUC by
less than 1e-3 with 500 bins unless a window crowds into one bin: the youngest 2,000 rows of
adult.test have 85% of their scores below 0.002, and binning lowers both their estimated and
their realised ROC AUC by 0.029. The same function with the labels' positive counts in place of
the expected ones gives the realised metrics, so estimate and realisation are computed alike.

**Expected error.** When the assumptions hold (calibrated probabilities, no concept drift:
P(y | x) fixed, covariate shift allowed), the realised metric differs from the estimate by its
sampling error: ``sqrt(acc (1 - acc) / n)`` for accuracy and Hanley & McNeil's standard error
for ROC AUC (from the expected positives and negatives). :class:`Estimate` states both; about
95% of windows fall within 2 of them and NannyML draws its band at 3.

**Calibration.** A model's scores need not be calibrated: :func:`fit_calibration` fits, on
reference predictions with labels (the test set, never the training set), a beta calibration
(three parameters on the log-odds, smooth and strictly monotone) and an isotonic one, and keeps
the one with the lower log loss out of fold. NannyML calibrates with isotonic regression only;
its step function says P = 0 (or 1) over the lowest (highest) block of reference scores and
ties every row inside a block, so a window that covariate shift pushes into a tail (the young in
Adult, the rich in California housing) is estimated as near-perfectly ranked. A proper scoring
rule out of fold penalises exactly that, and picks isotonic only where the scores' distortion
is not smooth on the log-odds (benchmarks/monitor/cbpe.py, RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from keel.monitor.counts import SCORE_BINS

__all__ = ["Calibration", "Estimate", "estimate_performance", "fit_calibration", "score_bins"]

_FOLDS = 5
_CALIBRATION_BINS = 1000
_EPS = 1e-7  # scores are clipped to [_EPS, 1 - _EPS] before their logarithms
_PRIOR = np.array([1.0, 1.0, 0.0])  # beta parameters of the identity map
_RIDGE = 1.0  # weight of that prior: about one row's worth, so only a tiny reference feels it


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
    """A monotone map from a model's scores to probabilities.

    ``method`` is ``"beta"``: ``logit p = a ln s - b ln(1 - s) + c`` with ``parameters``
    ``(a, b, c)``, a, b >= 0 (Kull, Silva Filho & Flach 2017; a = b is Platt scaling on the
    log-odds, (1, 1, 0) the identity); or ``"isotonic"``: linear between the knots ``scores`` ->
    ``probabilities`` (a step function with its ends held flat).
    """

    scores: tuple[float, ...] = ()
    probabilities: tuple[float, ...] = ()
    method: Literal["isotonic", "beta"] = "isotonic"
    parameters: tuple[float, ...] = ()

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``scores``."""
        if self.method == "beta":
            design = _beta_design(np.asarray(scores, dtype=np.float64))
            calibrated: np.ndarray = _sigmoid(design @ np.asarray(self.parameters))
            return calibrated
        stepped: np.ndarray = np.interp(
            scores, np.asarray(self.scores), np.asarray(self.probabilities)
        )
        return stepped

    def to_json(self) -> dict[str, object]:
        """The fitted map as JSON (read back by :meth:`from_json`)."""
        if self.method == "beta":
            return {"method": "beta", "parameters": list(self.parameters)}
        return {
            "method": "isotonic",
            "scores": list(self.scores),
            "probabilities": list(self.probabilities),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Calibration:
        """The map written by :meth:`to_json` (an entry without ``method`` is isotonic)."""
        if body.get("method") == "beta":
            a, b, c = (float(v) for v in body["parameters"])
            return cls(method="beta", parameters=(a, b, c))
        return cls(
            tuple(float(v) for v in body["scores"]),
            tuple(float(v) for v in body["probabilities"]),
        )


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
    """A calibration of ``scores`` to ``labels`` (0/1), or None when there is nothing to fit.

    Beta and isotonic calibrations are scored by their log loss on held-out rows (``_FOLDS``
    interleaved folds, predictions pooled and clipped to [1/2n, 1 - 1/2n]; a fold's beta map is
    one Newton step from the fit on every row); the better one is kept, fitted on every row.
    None when the labels hold one class or the scores separate them almost perfectly (ROC AUC
    > 0.999): the scores are then taken as they are, as NannyML does.
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
    design = _beta_design(score)
    beta = _fit_beta(design, label, _PRIOR)
    full = np.array(beta)
    free = np.append(full[:2] != 0, True)  # a parameter dropped on all rows stays dropped
    order = np.argsort(score)  # tied scores share an isotonic bin: their order is moot
    fold = np.arange(score.size) % _FOLDS
    sorted_score, sorted_label, sorted_fold = score[order], label[order], fold[order]
    held_beta, held_isotonic = np.empty_like(score), np.empty_like(score)
    for k in range(_FOLDS):
        train, test = fold != k, fold == k
        # one Newton step from the fit on all rows (approximate cross-validation: the fold's
        # own fit to second order, at a fraction of the cost of iterating to convergence)
        x = design[train] if free.all() else design[train][:, free]
        step, _ = _newton_step(x, label[train], x @ full[free], full[free], _PRIOR[free])
        fitted = full.copy()
        fitted[free] -= step
        fitted[:2] = np.maximum(fitted[:2], 0.0)
        held_beta[test] = _sigmoid(design[test] @ fitted)
        ranked = sorted_fold != k  # the fold's training rows, still sorted
        knots = _isotonic_knots(sorted_score[ranked], sorted_label[ranked])
        held_isotonic[test] = np.interp(score[test], *knots)
    floor = 0.5 / score.size
    if _log_loss(held_isotonic, label, floor) < _log_loss(held_beta, label, floor):
        xs, ys = _isotonic_knots(sorted_score, sorted_label)
        return Calibration(tuple(xs.tolist()), tuple(ys.tolist()))
    return Calibration(method="beta", parameters=beta)


def _beta_design(score: np.ndarray) -> np.ndarray:
    """(n, 3): ln s, -ln(1 - s) and 1, the beta calibration's inputs."""
    s = np.clip(score, _EPS, 1.0 - _EPS)
    design = np.empty((s.size, 3))
    np.log(s, out=design[:, 0])
    np.log1p(-s, out=design[:, 1])
    design[:, 1] *= -1.0
    design[:, 2] = 1.0
    return design


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|
    return out


def _fit_beta(
    design: np.ndarray, label: np.ndarray, start: np.ndarray
) -> tuple[float, float, float]:
    """(a, b, c) of a logistic regression on ``design`` (:func:`_beta_design`) with a, b >= 0 (a
    negative one is dropped and the rest refitted, as Kull et al. do), shrunk towards the
    identity map."""
    free = np.ones(3, dtype=bool)
    weights = _newton(design, label, start.copy(), free)
    while (negative := free[:2] & (weights[:2] < 0)).any():
        free[:2] &= ~negative
        weights = _newton(design, label, np.where(free, weights, 0.0), free)
    a, b, c = (float(w) for w in weights)
    return a, b, c


def _newton(
    design: np.ndarray, label: np.ndarray, weights: np.ndarray, free: np.ndarray
) -> np.ndarray:
    """Minimise the log loss plus ``_RIDGE``/2 |w - prior|^2 over the ``free`` weights (the rest
    stay 0): Newton's method with step halving, stopped when the Newton decrement is tiny."""
    x = design if free.all() else design[:, free]
    w, prior = weights[free], _PRIOR[free]

    def loss(z: np.ndarray, v: np.ndarray) -> float:
        ridge = 0.5 * _RIDGE * float(np.sum((v - prior) ** 2))
        return float(np.sum(np.logaddexp(0.0, z) - label * z)) + ridge

    z = x @ w
    current: float | None = None  # the loss at w, once needed
    for _ in range(50):
        step, decrement = _newton_step(x, label, z, w, prior)
        if decrement < 1e-7:
            break
        if decrement < 0.1:  # within a tenth of a nat of the minimum: a full step is safe
            w = w - step
            z, current = x @ w, None
            continue
        if current is None:
            current = loss(z, w)
        t = 1.0
        while True:
            trial_w = w - t * step
            trial_z = x @ trial_w
            trial = loss(trial_z, trial_w)
            if trial <= current or t < 1e-6:
                break
            t /= 2
        if trial > current:
            break
        w, z, current = trial_w, trial_z, trial
    out = np.zeros(design.shape[1])
    out[free] = w
    return out


def _newton_step(
    x: np.ndarray, label: np.ndarray, z: np.ndarray, w: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, float]:
    """Newton's step for the ridge-penalised log loss at ``w`` (``z`` = x @ w), and the Newton
    decrement (twice the loss the step expects to save)."""
    p = _sigmoid(z)
    gradient = x.T @ (p - label) + _RIDGE * (w - prior)
    hessian = (x * (p * (1 - p))[:, None]).T @ x + _RIDGE * np.eye(w.size)
    step = np.linalg.solve(hessian, gradient)
    return step, float(gradient @ step)


def _log_loss(probability: np.ndarray, label: np.ndarray, floor: float) -> float:
    p = np.clip(probability, floor, 1.0 - floor)
    return float(-np.mean(label * np.log(p) + (1 - label) * np.log1p(-p)))


def _isotonic_knots(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The knots of an isotonic calibration: pool-adjacent-violators over equal-count bins of
    ``score`` (sorted ascending).

    Adjacent blocks that violate the order (mean >= the next one's) end up in one block whatever
    the order of pooling (the solution is unique), so each pass pools every maximal
    non-increasing run at once, vectorised, until the means strictly increase.
    """
    groups = min(_CALIBRATION_BINS, score.size)
    starts = np.linspace(0, score.size, groups + 1).astype(np.int64)[:-1]
    starts = np.searchsorted(score, score[starts])  # tied scores share a bin
    starts = starts[np.append(True, np.diff(starts) > 0)]
    weights = np.diff(np.append(starts, score.size)).astype(np.float64)
    centers = np.add.reduceat(score, starts) / weights
    positives = np.add.reduceat(label, starts)
    last = np.arange(starts.size)  # each block's last bin
    while (violates := positives[1:] / weights[1:] <= positives[:-1] / weights[:-1]).any():
        runs = np.flatnonzero(np.append(True, ~violates))
        positives = np.add.reduceat(positives, runs)
        weights = np.add.reduceat(weights, runs)
        last = last[np.append(runs[1:] - 1, last.size - 1)]
    first = np.append(0, last[:-1] + 1)
    xs = np.stack([centers[first], centers[last]], axis=-1).ravel()
    ys = np.repeat(positives / weights, 2)
    flat = np.append(True, np.diff(xs) > 0)  # a one-bin block is one knot
    return xs[flat], ys[flat]
