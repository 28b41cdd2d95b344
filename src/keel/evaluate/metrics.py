"""Binary classification metrics, overall and per slice, and promotion gates."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = ["binary_metrics", "check_gates", "slice_metrics"]

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


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


def slice_metrics(
    y: np.ndarray, proba: np.ndarray, groups: dict[str, np.ndarray]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics per value of each slicing column, e.g. ``{"sex": {"Female": {...}, ...}}``.

    A ``_gap`` entry per column gives the largest difference across groups in selection rate
    (demographic parity difference) and accuracy.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for column, values in groups.items():
        per: dict[str, dict[str, Any]] = {}
        labels = np.where(values == None, "<null>", values).astype(str)  # noqa: E711
        for value in np.unique(labels):
            mask = labels == value
            per[str(value)] = binary_metrics(y[mask], proba[mask])
        rates = [m["positive_rate"] for m in per.values()]
        accuracies = [m["accuracy"] for m in per.values()]
        per["_gap"] = {
            "selection_rate_difference": float(max(rates) - min(rates)) if rates else 0.0,
            "accuracy_difference": float(max(accuracies) - min(accuracies)) if accuracies else 0.0,
        }
        out[column] = per
    return out


def check_gates(
    metrics: dict[str, Any], gates: list[tuple[str, str, float]]
) -> list[dict[str, Any]]:
    """Each gate with the observed value and whether it passed; an unknown metric fails."""
    results = []
    for metric, op, threshold in gates:
        value = metrics.get(metric)
        passed = value is not None and bool(_OPS[op](value, threshold))
        results.append({"gate": f"{metric} {op} {threshold:g}", "value": value, "passed": passed})
    return results
