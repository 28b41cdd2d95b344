"""Point metrics per task (binary, multiclass, regression), overall and per slice.

Gates (:mod:`keel.evaluate.gates`) compare any of these names: ``roc_auc >= 0.9`` (binary),
``macro_f1 >= 0.6`` (multiclass), ``rmse <= 50`` (regression); their intervals come from
:mod:`keel.evaluate.bootstrap`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "binary_metrics",
    "multiclass_metrics",
    "regression_metrics",
    "slice_metrics",
    "task_metrics",
]


def binary_metrics(y: np.ndarray, proba: np.ndarray, *, threshold: float = 0.5) -> dict[str, Any]:
    """ROC AUC, accuracy, log loss, precision, recall and rates for 0/1 labels and P(y=1).

    Plain NumPy, equal to scikit-learn's functions to rounding (``roc_auc_score``,
    ``accuracy_score``, ``log_loss`` of the probabilities clipped to [1e-15, 1 - 1e-15],
    ``precision_score`` and ``recall_score`` with ``zero_division=0``) at a twentieth of their
    cost: the evaluate step computes them for the test set and every slice."""
    truth = np.asarray(y).astype(np.int64) == 1
    p = np.asarray(proba, dtype=np.float64)
    n = len(truth)
    predicted = p >= threshold
    positives, chosen = int(truth.sum()), int(predicted.sum())
    hits = int(np.count_nonzero(truth & predicted))
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    loss = -np.where(truth, np.log(clipped), np.log(1 - clipped))
    both = 0 < positives < n
    return {
        "rows": n,
        "roc_auc": _auc(truth, p, positives) if both else None,
        "accuracy": float(np.count_nonzero(truth == predicted) / n) if n else None,
        "log_loss": float(loss.mean()) if n else None,
        "precision": hits / chosen if chosen else 0.0,
        "recall": hits / positives if positives else 0.0,
        "positive_rate": chosen / n if n else 0.0,
        "base_rate": positives / n if n else 0.0,
    }


def _auc(truth: np.ndarray, score: np.ndarray, positives: int) -> float:
    """ROC AUC: the Mann-Whitney statistic from average ranks (ties count one half)."""
    order = np.argsort(score, kind="stable")
    ranked = score[order]
    new = np.ones(len(ranked), dtype=bool)
    new[1:] = ranked[1:] != ranked[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(ranked))
    average = ((starts + ends + 1) / 2.0)[np.cumsum(new) - 1]  # 1-based average rank per row
    rank_sum = float(average[truth[order]].sum())
    negatives = len(truth) - positives
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro F1, log loss and one-vs-rest macro ROC AUC for codes ``0..k-1``.

    ``proba`` is ``(rows, k)``. ROC AUC is None when a class is absent from ``y``. Macro F1
    averages the classes that occur in ``y`` or the predictions (scikit-learn's default): a
    slice holding one class, all predicted right, scores 1, not 1/k.
    """
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    k = proba.shape[1]
    codes = y.astype(np.int64)
    predicted = np.argmax(proba, axis=1) if len(y) else codes
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    every_class = len(np.unique(codes)) == k
    present = [int(c) for c in np.union1d(codes, predicted)]
    return {
        "rows": len(y),
        "accuracy": float(accuracy_score(codes, predicted)) if len(y) else 0.0,
        "macro_f1": float(
            f1_score(codes, predicted, labels=present, average="macro", zero_division=0)
        )
        if present
        else 0.0,
        "log_loss": float(log_loss(codes, clipped, labels=list(range(k)))) if len(y) else None,
        "roc_auc": float(roc_auc_score(codes, clipped, multi_class="ovr", average="macro"))
        if every_class
        else None,
    }


def regression_metrics(y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and R2 (None with fewer than two rows or a constant target)."""
    truth = y.astype(np.float64)
    error = prediction.astype(np.float64) - truth
    spread = float(np.sum((truth - truth.mean()) ** 2)) if len(y) else 0.0
    return {
        "rows": len(y),
        "rmse": float(np.sqrt(np.mean(error**2))) if len(y) else None,
        "mae": float(np.mean(np.abs(error))) if len(y) else None,
        "r2": 1.0 - float(np.sum(error**2)) / spread if spread > 0 else None,
        "mean_prediction": float(prediction.mean()) if len(y) else None,
    }


def task_metrics(task: str, y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    """The metrics of a registered task (``Task.metrics``): :func:`binary_metrics`,
    :func:`multiclass_metrics`, :func:`regression_metrics`, or a plug-in task's."""
    from keel.train.tasks import task_for

    return task_for(task).metrics(y, prediction)


def slice_metrics(
    y: np.ndarray,
    proba: np.ndarray,
    groups: dict[str, np.ndarray],
    *,
    task: str = "binary",
) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics per value of each slicing column, e.g. ``{"sex": {"Female": {...}, ...}}``.

    A ``_gap`` entry per column gives the largest difference across groups of each of the
    task's ``gaps``: for binary models in selection rate (demographic parity difference) and
    accuracy, for multiclass in accuracy, for regression in RMSE.
    """
    from keel.train.tasks import task_for

    out: dict[str, dict[str, dict[str, Any]]] = {}
    spec = task_for(task)
    gap_of = spec.gaps
    for column, values in groups.items():
        per: dict[str, dict[str, Any]] = {}
        labels = np.where(values == None, "<null>", values).astype(str)  # noqa: E711
        for value in np.unique(labels):
            mask = labels == value
            per[str(value)] = spec.metrics(y[mask], proba[mask])
        gaps = {}
        for gap, metric in gap_of.items():
            seen = [m[metric] for m in per.values() if m[metric] is not None]
            gaps[gap] = float(max(seen) - min(seen)) if seen else 0.0
        per["_gap"] = gaps
        out[column] = per
    return out
