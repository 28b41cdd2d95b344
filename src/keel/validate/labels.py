"""The target column's checks: label shift against the reference and likely mislabeled rows.

Label noise is found by confident learning (Northcutt et al., JAIR 2021, via ``cleanlab``) on
out-of-fold predicted probabilities from a small LightGBM model (5 folds, 50 trees) fitted on a
sample of at most ``max_rows`` labelled rows. Out-of-fold matters: in-sample probabilities hide
the errors. Flags go to review as a warning; nothing is dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.anomalies import Anomaly
from keel.validate.shift import describe
from keel.validate.statistics import column_kind

__all__ = ["MAX_CLASSES", "feature_matrix", "find_label_noise", "is_classes", "label_shift"]

MAX_CLASSES = 20


def is_classes(column: dict[str, Any]) -> bool:
    """Whether a column's statistics look like class labels (categorical or few values)."""
    if column.get("kind") != "numeric":
        return True
    return 0 < int(column.get("distinct", 0) or 0) <= MAX_CLASSES


def label_shift(
    column: str,
    reference: dict[str, Any],
    current: dict[str, Any],
    metrics: dict[str, Any],
    level: str,
    name: str,
) -> Anomaly:
    """A ``label_shift`` anomaly for the target, with class proportions (or means) on both sides.

    Args:
        column: The target column.
        reference: Its reference statistics.
        current: Its current statistics on the reference's bins.
        metrics: Output of :func:`keel.validate.shift.shift_metrics`.
        level: ``error`` or ``warning``.
        name: How to call the data in messages.
    """
    details: dict[str, Any] = {"metrics": metrics}
    if reference["kind"] == "numeric":
        details["mean"] = {"reference": reference.get("mean"), "current": current.get("mean")}
        seen = f"mean {reference.get('mean', 0):.4g} -> {current.get('mean', 0):.4g}"
    else:
        ref_total = max(sum(reference["counts"]), 1)
        cur_total = max(sum(current["counts"]), 1)
        labels = [*map(str, reference["categories"]), "other", "null"]
        details["proportions"] = {
            label: {"reference": r / ref_total, "current": c / cur_total}
            for label, r, c in zip(labels, reference["counts"], current["counts"], strict=True)
            if r or c
        }
        moved = max(details["proportions"].items(), key=lambda kv: _gap(kv[1]))
        seen = f"'{moved[0]}' {moved[1]['reference']:.1%} -> {moved[1]['current']:.1%} of the rows"
    message = (
        f"{name}: the label '{column}' shifted from the reference ({seen}; {describe(metrics)}). "
        "A model's calibration and thresholds assume the training label mix."
    )
    return Anomaly(
        column, "label_shift", "error" if level == "error" else "warning", message, details
    )


def _gap(pair: dict[str, float]) -> float:
    return abs(pair["current"] - pair["reference"])


def feature_matrix(table: pa.Table, columns: list[str]) -> np.ndarray:
    """A float matrix: numbers as they are, categories as integer codes, nulls as NaN."""
    parts = []
    for name in columns:
        column = table.column(name)
        kind = column_kind(column.type)
        if kind == "numeric":
            parts.append(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
            continue
        codes = pc.dictionary_encode(column.cast(pa.string())).combine_chunks().indices
        parts.append(codes.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if not parts:
        return np.empty((table.num_rows, 0))
    matrix: np.ndarray = np.column_stack(parts)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


def _sample(valid: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    if len(valid) <= max_rows:
        return valid
    return np.sort(np.random.default_rng(seed).choice(valid, size=max_rows, replace=False))


def find_label_noise(
    table: pa.Table,
    target: str | None,
    *,
    name: str = "data",
    max_rows: int = 50_000,
    folds: int = 5,
    seed: int = 0,
    examples: int = 100,
) -> list[Anomaly]:
    """Likely mislabeled rows by confident learning, as one ``label_noise`` warning.

    Args:
        table: The data, target included.
        target: The label column; without one (or with a numeric target of more than
            ``MAX_CLASSES`` values, i.e. regression) there is nothing to check.
        name: How to call the data in messages.
        max_rows: Labelled rows sampled for the check.
        folds: Cross-validation folds for the out-of-fold probabilities.
        seed: Seed of the sample, the folds and the model.
        examples: Row ids reported, most suspicious first.

    Returns:
        ``[]`` or one anomaly whose details hold the count and the row ids (0-based).
    """
    if target is None or target not in table.column_names:
        return []
    labels_all = table.column(target).cast(pa.string())
    valid = np.flatnonzero(pc.is_valid(labels_all).to_numpy(zero_copy_only=False))
    rows = _sample(valid, max_rows, seed)
    encoded = pc.dictionary_encode(labels_all.take(pa.array(rows))).combine_chunks()
    y = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(y, minlength=len(encoded.dictionary))
    if not 2 <= len(counts) <= MAX_CLASSES or counts.min() < folds:
        return []
    features = [c for c in table.column_names if c != target]
    x = feature_matrix(table.take(pa.array(rows)), features)
    issues = _issues(x, y, folds, seed)
    if not len(issues):
        return []
    row_ids = rows[issues][:examples].tolist()
    fraction = len(issues) / len(rows)
    message = (
        f"{name}: {len(issues)} of {len(rows)} sampled rows ({fraction:.1%}) look mislabeled in "
        f"'{target}' (out-of-fold predictions disagree confidently), e.g. rows {row_ids[:5]}. "
        "Review them; nothing was dropped."
    )
    details = {
        "rows": len(issues),
        "sampled": len(rows),
        "fraction": fraction,
        "row_ids": row_ids,
        "method": f"cleanlab find_label_issues on {folds}-fold LightGBM probabilities",
    }
    return [Anomaly(target, "label_noise", "warning", message, details)]


def _issues(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from cleanlab.filter import find_label_issues
    from lightgbm import LGBMClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    # one thread: on a busy machine LightGBM's OpenMP threads spin and a 2 s check takes 30 s
    model = LGBMClassifier(n_estimators=50, num_leaves=31, random_state=seed, verbose=-1, n_jobs=1)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(model, x, y, cv=cv, method="predict_proba")
    ranked = find_label_issues(
        labels=y, pred_probs=probabilities, return_indices_ranked_by="self_confidence"
    )
    return np.asarray(ranked, dtype=np.int64)
