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
    """ROC AUC, accuracy, log loss, precision, recall and rates for 0/1 labels and P(y=1)."""
    from sklearn.metrics import (
        accuracy_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    predicted = (proba >= threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    return {
        "rows": len(y),
        "roc_auc": float(roc_auc_score(y, proba)) if both else None,
        "accuracy": float(accuracy_score(y, predicted)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "positive_rate": float(predicted.mean()) if len(y) else 0.0,
        "base_rate": float(y.mean()) if len(y) else 0.0,
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro F1, log loss and one-vs-rest macro ROC AUC for codes ``0..k-1``.

    ``proba`` is ``(rows, k)``. ROC AUC is None when a class is absent from ``y``.
    """
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    k = proba.shape[1]
    codes = y.astype(np.int64)
    predicted = np.argmax(proba, axis=1) if len(y) else codes
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    every_class = len(np.unique(codes)) == k
    return {
        "rows": len(y),
        "accuracy": float(accuracy_score(codes, predicted)) if len(y) else 0.0,
        "macro_f1": float(
            f1_score(codes, predicted, labels=list(range(k)), average="macro", zero_division=0)
        ),
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
