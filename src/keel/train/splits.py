"""Splits for validation and cross-validation: random, stratified, time-based, group-aware.

Every function returns row indices, so one split serves the feature matrix, the target, the
weights and any column. The invariants, checked by property tests:

* ``time``: every validation row's timestamp is strictly later than every training row's
  (rows that share a timestamp stay on one side); nothing is shuffled across time.
* ``group``: no value of the group column has rows on both sides.
* ``stratified``: each class keeps its share on both sides (classification only).

``auto`` is ``stratified`` for classification and ``random`` for regression.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from keel.errors import ConfigError, DataValidationError
from keel.train.base import check_task
from keel.train.tasks import task_for

__all__ = ["METHODS", "cross_validate", "fold_indices", "resolve_method", "validation_split"]

METHODS = ("auto", "random", "stratified", "time", "group")

Indices = tuple[np.ndarray, np.ndarray]


def resolve_method(method: str, task: str, column: str | None) -> str:
    """The concrete method for ``auto``; a ConfigError when a method cannot apply."""
    if method not in METHODS:
        raise ConfigError(
            f"split.method '{method}' is not a split method; use one of {', '.join(METHODS)}.",
            field="split.method",
        )
    if method == "auto":
        return "stratified" if task_for(task).stratify else "random"
    if method == "stratified" and check_task(task) == "regression":
        raise ConfigError(
            "split.method stratified needs a classification task; use random (or time/group) "
            f"for model.task: {task}.",
            field="split.method",
        )
    if method in ("time", "group") and not column:
        raise ConfigError(f"split.method {method} needs split.column.", field="split.column")
    return method


def validation_split(
    y: np.ndarray,
    *,
    task: str,
    fraction: float,
    seed: int,
    method: str = "auto",
    values: np.ndarray | None = None,
    column: str | None = None,
    purpose: str = "validation",
) -> Indices:
    """Training and validation row indices (or training and test: see ``purpose``).

    Args:
        y: The encoded target (its length is the number of rows; classes for stratifying).
        task: ``binary``, ``multiclass`` or ``regression``.
        fraction: Share of rows (or of groups, or the latest share of time) for validation.
        seed: Seeds the shuffling (random, stratified, group).
        method: One of :data:`METHODS`.
        values: The timestamp (``time``) or group (``group``) column's values.
        column: That column's name, for messages.
        purpose: What the held-out rows are for (``validation``, ``test``), for messages.

    Raises:
        ConfigError: A method that cannot apply (stratified regression, time without column).
        DataValidationError: Too few rows, classes or distinct timestamps/groups to split.
    """
    method = resolve_method(method, task, column or ("column" if values is not None else None))
    n = len(y)
    if method in ("random", "stratified"):
        from sklearn.model_selection import train_test_split

        stratify = y if method == "stratified" else None
        try:
            fit, valid = train_test_split(
                np.arange(n), test_size=fraction, random_state=seed, stratify=stratify
            )
        except ValueError as exc:
            raise DataValidationError(
                f"cannot make a {method} {purpose} split of {n} rows: {exc}. Use more data, "
                "or split.method: random.",
                field="split.method",
            ) from exc
        return np.asarray(fit), np.asarray(valid)
    keys = _column(values, n, column, method)
    if method == "time":
        return _time_split(keys, fraction, column)
    from sklearn.model_selection import GroupShuffleSplit

    codes = _group_codes(keys)
    if len(np.unique(codes)) < 2:
        raise DataValidationError(
            f"split.column '{column}' has one group; a group split needs at least two.",
            field="split.column",
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    fit, valid = next(splitter.split(np.zeros(n), groups=codes))
    return np.asarray(fit), np.asarray(valid)


def fold_indices(
    y: np.ndarray,
    *,
    task: str,
    folds: int,
    seed: int,
    method: str = "auto",
    values: np.ndarray | None = None,
    column: str | None = None,
) -> list[Indices]:
    """``folds`` (training, held-out) index pairs.

    ``time`` folds are expanding windows over distinct timestamps: fold ``i`` trains on the
    first ``i + 1`` blocks and holds out block ``i + 2`` (every held-out row later than every
    training row). ``group`` folds keep each group in one held-out fold.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    method = resolve_method(method, task, column or ("column" if values is not None else None))
    n = len(y)
    rows = np.zeros(n)
    try:
        if method == "random":
            pairs = KFold(folds, shuffle=True, random_state=seed).split(rows)
        elif method == "stratified":
            pairs = StratifiedKFold(folds, shuffle=True, random_state=seed).split(rows, y)
        elif method == "group":
            codes = _group_codes(_column(values, n, column, method))
            pairs = GroupKFold(folds).split(rows, groups=codes)
        else:
            return _time_folds(_column(values, n, column, method), folds, column)
        return [(np.asarray(a), np.asarray(b)) for a, b in pairs]
    except ValueError as exc:
        raise DataValidationError(
            f"cannot make {folds} {method} folds of {n} rows: {exc}. Lower split.folds.",
            field="split.folds",
        ) from exc


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    *,
    flavor: str,
    task: str,
    params: Mapping[str, Any],
    seed: int,
    folds: int = 5,
    method: str = "auto",
    values: np.ndarray | None = None,
    column: str | None = None,
    sample_weight: np.ndarray | None = None,
    early_stopping_rounds: int | None = None,
    validation_fraction: float = 0.1,
) -> dict[str, Any]:
    """k-fold cross-validation with per-fold metrics on each held-out fold.

    With ``early_stopping_rounds``, each fold stops early on an inner validation split of its
    own training rows (the same method), so the held-out fold is never seen while fitting.

    Returns:
        ``{"method", "folds": [{"fold", "train_rows", "test_rows", "best_iteration",
        "metrics"}], "mean": {metric: value}, "std": {metric: value}}``.
    """
    from keel.evaluate.metrics import task_metrics
    from keel.train import fit

    method = resolve_method(method, task, column or ("column" if values is not None else None))
    results: list[dict[str, Any]] = []
    per_fold: list[dict[str, Any]] = []
    for number, (train_rows, test_rows) in enumerate(
        fold_indices(
            y, task=task, folds=folds, seed=seed, method=method, values=values, column=column
        ),
        start=1,
    ):
        inner: dict[str, Any] = {}
        fit_rows = train_rows
        if early_stopping_rounds:
            sub = None if values is None else values[train_rows]
            a, b = validation_split(
                y[train_rows],
                task=task,
                fraction=validation_fraction,
                seed=seed,
                method=method,
                values=sub,
                column=column,
            )
            fit_rows = train_rows[a]
            inner = {"x_valid": x[train_rows[b]], "y_valid": y[train_rows[b]]}
        weights = None if sample_weight is None else sample_weight[fit_rows]
        result = fit(
            x[fit_rows],
            y[fit_rows],
            flavor=flavor,
            task=task,
            params=params,
            seed=seed,
            sample_weight=weights,
            early_stopping_rounds=early_stopping_rounds,
            **inner,
        )
        metrics = task_metrics(task, y[test_rows], result.model.predict(x[test_rows]))
        per_fold.append(metrics)
        results.append(
            {
                "fold": number,
                "train_rows": len(train_rows),
                "test_rows": len(test_rows),
                "best_iteration": result.best_iteration,
                "metrics": metrics,
            }
        )
    names = [k for k, v in per_fold[0].items() if k != "rows" and v is not None]
    table = {k: [m[k] for m in per_fold if m[k] is not None] for k in names}
    return {
        "method": method,
        "folds": results,
        "mean": {k: float(np.mean(v)) for k, v in table.items() if v},
        "std": {k: float(np.std(v)) for k, v in table.items() if v},
    }


def _column(values: np.ndarray | None, n: int, column: str | None, method: str) -> np.ndarray:
    name = column or "split.column"
    if values is None or len(values) != n:
        raise ConfigError(
            f"split.method {method} needs the values of split.column ('{name}') for every row.",
            field="split.column",
        )
    import pandas as pd

    if pd.isna(values).any():
        raise DataValidationError(
            f"split.column '{name}' has missing values; a {method} split needs every row's "
            "value. Fill or drop those rows.",
            field="split.column",
        )
    return values


def _group_codes(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    codes, _ = pd.factorize(values)
    return np.asarray(codes, dtype=np.int64)


def _time_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct timestamps in order, and each row's position among them."""
    import pandas as pd

    keys = pd.Series(values)
    if keys.dtype == object:
        try:
            keys = pd.to_datetime(keys, utc=True, format="mixed")
        except (ValueError, TypeError):
            keys = keys.astype(str)  # not dates: order as text (e.g. '2024-W07')
    distinct, inverse = np.unique(keys.to_numpy(), return_inverse=True)
    return distinct, np.asarray(inverse, dtype=np.int64).reshape(-1)


def _time_split(values: np.ndarray, fraction: float, column: str | None) -> Indices:
    distinct, position = _time_order(values)
    n = len(values)
    counts = np.bincount(position, minlength=len(distinct))
    # rows with the latest timestamps until at least `fraction` of the rows are held out
    from_end = np.cumsum(counts[::-1])
    take = int(np.searchsorted(from_end, math.ceil(n * fraction)))
    cut = len(distinct) - 1 - take
    if cut <= 0:
        raise DataValidationError(
            f"split.column '{column}' has too few distinct timestamps ({len(distinct)}) to hold "
            f"out the latest {fraction:.0%} of rows and keep earlier rows for training.",
            field="split.column",
        )
    later = position >= cut
    return np.flatnonzero(~later), np.flatnonzero(later)


def _time_folds(values: np.ndarray, folds: int, column: str | None) -> list[Indices]:
    distinct, position = _time_order(values)
    if len(distinct) < folds + 1:
        raise DataValidationError(
            f"split.column '{column}' has {len(distinct)} distinct timestamps; {folds} time "
            f"folds need at least {folds + 1}.",
            field="split.folds",
        )
    # blocks of consecutive distinct timestamps with about equal row counts
    cumulative = np.cumsum(np.bincount(position, minlength=len(distinct)))
    edges = np.searchsorted(cumulative, np.linspace(0, len(values), folds + 2)[1:-1], "left")
    edges = np.unique(np.clip(edges + 1, 1, len(distinct) - 1))
    block = np.searchsorted(edges, position, side="right")
    out = []
    for i in range(1, int(block.max()) + 1):
        out.append((np.flatnonzero(block < i), np.flatnonzero(block == i)))
    return out
