"""Permutation importance: how much the model's headline metric drops when one input column's
values are shuffled across the test rows, breaking its link to the label.

Unlike mean |SHAP| (:func:`keel.evaluate.explain.global_importance`), it needs nothing of the
model but ``predict``, so every flavor gets it, and it is in the metric's own units. Columns
are the model's input columns, grouped the way contributions are folded
(:func:`keel.evaluate.explain.fold_matrix`): shuffling ``workclass`` shuffles all its one-hot
features together (one permutation of the rows moves them all); a feature computed from several
inputs (a cross) is shuffled with each of them.

For each column, ``repeats`` seeded permutations of a bounded sample of the test rows
(``rows``, spread by a seeded draw) are stacked; only the stacked rows the shuffle changed are
predicted, the others keep their own prediction, and the metric is computed for all repeats at
once (ROC AUC from ranks, RMSE, accuracy); the result is the mean and standard deviation of the
drop over the repeats. Same seed, same numbers. A LightGBM model's changed rows are predicted
from leaf masks (:mod:`keel.evaluate.leafmask`: its predictions to rounding, ~10x less CPU:
0.72 -> 0.07-0.1 s for the Adult example's ~81,000 changed rows); other models' through
``predict``, several columns' rows in one call of up to ``BATCH_ROWS``.

Example:
    >>> found = permutation_importance(parts, x_test, y_test, repeats=5, seed=0)
    >>> found.ranked()[0], found.mean["relationship"], found.std["relationship"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.evaluate.explain import fold_matrix, predict_matrix

if TYPE_CHECKING:
    from keel.evaluate.explain import Explainable
    from keel.evaluate.leafmask import KnownRows

__all__ = ["PERMUTATION_REPEATS", "PERMUTATION_ROWS", "PermutationImportance",
           "permutation_importance"]  # fmt: skip

PERMUTATION_REPEATS = 5
PERMUTATION_ROWS = 2000

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (y, predictions (r, n, ...)) -> (r,)


@dataclass(frozen=True)
class PermutationImportance:
    """The drop of ``metric`` per input column when it is shuffled (positive: the model uses
    it; about 0: it does not; negative: noise helped by chance).

    Attributes:
        metric: The metric scored (the task's headline: ``roc_auc``, ``rmse``, ``accuracy``).
        greater_is_better: Whether a higher metric is better (the drop is signed to match).
        baseline: The metric on the unshuffled sample.
        rows: Test rows scored. repeats: Permutations per column. seed: Their seed.
        mean: Mean drop per column, in the model's input order. std: Its standard deviation
            over the repeats.
    """

    metric: str
    greater_is_better: bool
    baseline: float
    rows: int
    repeats: int
    seed: int
    mean: Mapping[str, float]
    std: Mapping[str, float]

    def ranked(self) -> list[str]:
        """The columns, largest mean drop first."""
        return sorted(self.mean, key=lambda c: -self.mean[c])

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "baseline": self.baseline,
            "rows": self.rows,
            "repeats": self.repeats,
            "seed": self.seed,
            "columns": {c: {"mean": self.mean[c], "std": self.std[c]} for c in self.ranked()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PermutationImportance:
        columns = data.get("columns") or {}
        return cls(
            str(data["metric"]), bool(data["greater_is_better"]), float(data["baseline"]),
            int(data["rows"]), int(data["repeats"]), int(data["seed"]),
            {c: float(v["mean"]) for c, v in columns.items()},
            {c: float(v["std"]) for c, v in columns.items()},
        )  # fmt: skip


def permutation_importance(
    parts: Explainable,
    x: np.ndarray,
    y: np.ndarray,
    *,
    repeats: int = PERMUTATION_REPEATS,
    rows: int = PERMUTATION_ROWS,
    seed: int = 0,
    prediction: np.ndarray | None = None,
    threads: int = 0,
) -> PermutationImportance:
    """Permutation importance of each input column on (a sample of) transformed test rows.

    Only the permuted rows whose features actually changed are predicted (a shuffled
    ``sex`` leaves about half the rows as they were; a mostly-zero ``capital-gain`` nine in
    ten): the others keep the row's own prediction, which is exact for a model that predicts
    each row on its own. The changed rows of several columns are predicted in one call.

    Args:
        parts: The fitted pipeline and model (a package or ``ModelParts``).
        x: Test rows transformed by ``parts.pipeline``. y: Their encoded labels.
        repeats: Permutations per column (>= 1). rows: At most this many rows are scored.
        seed: Seeds the row sample and every permutation.
        prediction: The model's predictions on all of ``x`` when the caller has them (the
            evaluate step): spares predicting the unshuffled sample again.
        threads: LightGBM threads per call (0: all cores; 1 when other work runs beside it).

    Raises:
        ValueError: ``repeats`` or ``rows`` is below 1, or ``x`` and ``y`` (or
            ``prediction``) differ in length.
    """
    if repeats < 1 or rows < 1:
        raise ValueError(f"repeats ({repeats}) and rows ({rows}) must be at least 1")
    if len(x) != len(y) or (prediction is not None and len(prediction) != len(x)):
        raise ValueError(f"x has {len(x)} rows but y (or the prediction) has {len(y)}")
    metric, greater, score = _scorer(parts.task, y)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(x), rows, replace=False)) if len(x) > rows else None
    xs, ys = (x, y) if chosen is None else (x[chosen], y[chosen])
    n = len(xs)
    columns, fold = fold_matrix(parts.pipeline)
    groups = [np.flatnonzero(fold[:, i] > 0) for i in range(len(columns))]
    known = _known_rows(parts, xs, groups)
    if known is not None:  # LightGBM's predictions from leaf masks: exact, ~10x less CPU
        base = known.predict()
    elif prediction is None:
        base = predict_matrix(parts, xs, threads)
    else:
        base = np.asarray(prediction if chosen is None else prediction[chosen], np.float64)
    baseline = float(score(ys, base.reshape(1, n, *base.shape[1:]))[0])
    plans = []  # per column: (permuted row order, which stacked rows changed)
    for features in groups:  # once per input column, never per row
        order = rng.permuted(np.tile(np.arange(n), (repeats, 1)), axis=1).ravel()
        own = xs[:, features]
        before, after = np.tile(own, (repeats, 1)), own[order]
        same = (before == after) | (np.isnan(before) & np.isnan(after))
        plans.append((order, np.flatnonzero(~same.all(axis=1))))
    mean: dict[str, float] = {}
    std: dict[str, float] = {}

    def judged(i: int, unchanged: np.ndarray, predicted: np.ndarray) -> None:
        """Column ``i``'s drop from its changed rows' predictions (the rest: ``unchanged``)."""
        stacked = np.tile(unchanged, (repeats,) + (1,) * (unchanged.ndim - 1))
        stacked[plans[i][1]] = predicted
        scores = score(ys, stacked.reshape(repeats, n, *unchanged.shape[1:]))
        drop = baseline - scores if greater else scores - baseline
        mean[columns[i]], std[columns[i]] = float(drop.mean()), float(drop.std())

    if known is not None:
        for i, (order, changed) in enumerate(plans):
            judged(i, known.baseline(i), known.swapped(i, changed % n, order[changed]))
    for group in _batches([len(changed) for _, changed in plans]) if known is None else []:
        matrices = []
        for i in group:
            order, changed = plans[i]
            permuted = xs[changed % n]  # the changed rows as they were ...
            permuted[:, groups[i]] = xs[order[changed]][:, groups[i]]  # ... with i shuffled
            matrices.append(permuted)
        stacked_rows = np.concatenate(matrices)
        predicted = predict_matrix(parts, stacked_rows, threads) if len(stacked_rows) else base
        start = 0
        for i in group:
            size = len(plans[i][1])
            judged(i, base, predicted[start : start + size])
            start += size
    mean = {c: mean[c] for c in columns}  # the model's input order
    std = {c: std[c] for c in columns}
    return PermutationImportance(metric, greater, baseline, n, repeats, seed, mean, std)


def _known_rows(parts: Explainable, xs: np.ndarray, groups: list[np.ndarray]) -> KnownRows | None:
    """The sample prepared for swaps of each column's features (a LightGBM model that
    :mod:`keel.evaluate.leafmask` covers), else None: LightGBM predicts the swapped rows."""
    from keel.evaluate.leafmask import LeafMasks

    booster = getattr(parts.model, "booster_", None)
    if parts.flavor != "lightgbm" or booster is None:
        return None
    masks = LeafMasks.of(booster, xs.shape[1])
    return None if masks is None else masks.known_rows(xs, groups)


BATCH_ROWS = 65_536  # rows per predict call (bounds the stacked matrix: ~55 MB at 105 features)


def _batches(sizes: list[int]) -> list[list[int]]:
    """Consecutive groups of columns whose changed rows add up to at most ``BATCH_ROWS``
    (a column larger than that is a group alone)."""
    groups: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if not groups or total + size > BATCH_ROWS:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def _scorer(task: str, y: np.ndarray) -> tuple[str, bool, Scorer]:
    """The task's headline metric, vectorised over repeats for the built-in kinds."""
    from keel.train.tasks import task_for

    spec = task_for(task)
    metric, greater = str(spec.headline), bool(spec.greater_is_better)
    if spec.kind == "binary" and metric == "roc_auc" and 0 < int(np.sum(y == 1)) < len(y):
        return metric, greater, _auc
    if spec.kind == "regression" and metric == "rmse":
        return metric, greater, _rmse
    if spec.kind == "multiclass" and metric == "accuracy":
        return metric, greater, _accuracy

    def generic(yy: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        values = [spec.metrics(yy, p).get(metric) for p in predictions]  # one call per repeat
        return np.asarray([np.nan if v is None else float(v) for v in values])

    return metric, greater, generic


def _auc(y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """ROC AUC per repeat: the Mann-Whitney statistic from average ranks (ties count half),
    all repeats ranked in one sort."""
    r, n = predictions.shape
    positive = y == 1
    p = int(positive.sum())
    order = np.argsort(predictions, axis=1, kind="stable")
    ranked = np.take_along_axis(predictions, order, axis=1)
    new = np.ones((r, n), dtype=bool)
    new[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    group = (np.cumsum(new, axis=1) - 1 + (np.arange(r) * n)[:, None]).ravel()  # tie blocks
    position = np.tile(np.arange(1, n + 1, dtype=np.float64), r)
    average = (np.bincount(group, weights=position) / np.maximum(np.bincount(group), 1))[group]
    rank_sum = (average.reshape(r, n) * positive[order]).sum(axis=1)
    return np.asarray((rank_sum - p * (p + 1) / 2) / (p * (n - p)))


def _rmse(y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt(np.mean((predictions - y.astype(np.float64)) ** 2, axis=1)))


def _accuracy(y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    return np.asarray(np.mean(np.argmax(predictions, axis=2) == y, axis=1))
