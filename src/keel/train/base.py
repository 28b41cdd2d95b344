"""The ``Trainer`` protocol every model flavor implements, and what a fit returns.

A trainer follows scikit-learn's contract: a keyword-only ``__init__`` that stores ``task``,
``params`` and ``seed`` unchanged and does no work; ``fit`` returns ``self``; fitted attributes
end in ``_``. It saves to named files in safe formats (text, JSON, UBJSON, skops, safetensors) and
loads back from them without unpickling anything.

A trainer is given a task *kind* (:data:`KINDS`): every task, built-in or plug-in (see
:mod:`keel.train.tasks`), is fitted as one of them. Predictions have one shape per kind:
P(positive) as a 1-D array for ``binary``, an ``(n, k)`` matrix of class probabilities for
``multiclass`` (classes encoded ``0..k-1``), and values for ``regression``.
Validation metrics per iteration use the same names for every flavor (see
:data:`HISTORY_METRICS`); the first one is what early stopping watches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import numpy as np

from keel.errors import ConfigError, DataValidationError

__all__ = [
    "HISTORY_METRICS",
    "KINDS",
    "TASKS",
    "FitResult",
    "OnIteration",
    "TaskKind",
    "Trainer",
    "TrainerBase",
    "balanced_weights",
    "check_task",
    "fit_result",
    "merge_weights",
    "n_classes_of",
    "primary_metric",
    "scalar_params",
    "score",
    "unknown_param",
]

#: What a trainer fits and predicts (the shape of ``predict``); every task has one of them.
TaskKind = Literal["binary", "multiclass", "regression"]
KINDS: tuple[TaskKind, ...] = ("binary", "multiclass", "regression")
#: The built-in tasks, one per kind (``keel.train.task_names()`` adds installed plug-ins).
TASKS: tuple[str, ...] = KINDS

#: Called after each boosting round / epoch with (iteration from 1, validation metrics).
OnIteration = Callable[[int, Mapping[str, float]], None]

#: Validation metrics recorded per iteration, per task; the first is the early-stopping metric.
HISTORY_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("log_loss", "roc_auc"),
    "multiclass": ("log_loss", "error"),
    "regression": ("rmse", "mae"),
}

_GREATER_IS_BETTER = {"roc_auc"}


@runtime_checkable
class Trainer(Protocol):
    """A model flavor: fit on arrays, predict, save to and load from named files (no pickle)."""

    flavor: ClassVar[str]
    task: str
    params: Mapping[str, Any]
    seed: int
    history_: dict[str, list[float]]
    best_iteration_: int | None
    facts_: dict[str, Any]

    def __init__(self, *, task: str, params: Mapping[str, Any], seed: int = 0) -> None:
        """Store the task, hyper-parameters and seed unchanged; no work."""
        ...

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        x_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        early_stopping_rounds: int | None = None,
        on_iteration: OnIteration | None = None,
    ) -> Self:
        """Train on ``x``/``y``; with a validation set, record its metrics and stop early."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(positive) (binary), class probabilities (multiclass) or values (regression)."""
        ...

    def save(self) -> dict[str, bytes]:
        """The fitted model as named files in safe formats."""
        ...

    @classmethod
    def load(cls, files: Mapping[str, bytes]) -> Self:
        """A fitted trainer from the files :meth:`save` wrote."""
        ...


class TrainerBase:
    """The constructor and unfitted state every trainer shares (the protocol's ``__init__``)."""

    def __init__(self, *, task: str, params: Mapping[str, Any], seed: int = 0) -> None:
        self.task = task
        self.params = params
        self.seed = seed
        self.history_: dict[str, list[float]] = {}
        self.best_iteration_: int | None = None
        self.facts_: dict[str, Any] = {}


@dataclass(frozen=True)
class FitResult:
    """What :func:`keel.train.fit` returns.

    Attributes:
        model: The fitted trainer (``predict``, ``save``).
        history: Validation metric name -> value per iteration (learning curves).
        best_iteration: The iteration kept by early stopping (1-based), or None.
        facts: Tracking facts: ``params``, ``metrics`` (validation metrics at the kept
            iteration), ``history``, plus flavor-specific facts (rows, library version).
    """

    model: Trainer
    history: dict[str, list[float]] = field(default_factory=dict)
    best_iteration: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def check_task(task: str) -> TaskKind:
    """The kind a trainer fits for a task (a kind is its own), or a ConfigError naming the
    registered tasks."""
    for known in KINDS:
        if task == known:
            return known
    from keel.train.tasks import task_for

    return task_for(task).kind


def primary_metric(task: str) -> tuple[str, Literal["minimize", "maximize"]]:
    """The metric early stopping watches for a task, and its direction."""
    name = HISTORY_METRICS[check_task(task)][0]
    return name, "maximize" if name in _GREATER_IS_BETTER else "minimize"


def n_classes_of(task: str, *labels: np.ndarray | None) -> int:
    """Number of classes for encoded labels ``0..k-1`` (2 for binary, 1 for regression)."""
    if task == "regression":
        return 1
    if task == "binary":
        return 2
    top = max(int(np.max(y)) for y in labels if y is not None and len(y))
    if top < 2:
        raise DataValidationError(
            f"a multiclass model needs at least 3 classes; the target has {top + 1}. "
            "Use model.task: binary for two classes.",
            field="model.task",
        )
    return top + 1


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-row weights ``n / (k * count[class])``: every class carries the same total weight."""
    codes = y.astype(np.int64)
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    per_class = len(y) / (n_classes * np.maximum(counts, 1.0))
    return np.asarray(per_class[codes], dtype=np.float64)


def score(task: str, y: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """The :data:`HISTORY_METRICS` of a task for true values and predictions."""
    if task == "regression":
        error = prediction.astype(np.float64) - y.astype(np.float64)
        return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    from sklearn.metrics import log_loss, roc_auc_score

    codes = y.astype(np.int64)
    if task == "binary":
        proba = np.clip(prediction.astype(np.float64), 1e-15, 1 - 1e-15)
        both = len(np.unique(codes)) == 2
        return {
            "log_loss": float(log_loss(codes, proba, labels=[0, 1])),
            "roc_auc": float(roc_auc_score(codes, proba)) if both else float("nan"),
        }
    k = prediction.shape[1]
    proba = np.clip(prediction.astype(np.float64), 1e-15, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    return {
        "log_loss": float(log_loss(codes, proba, labels=list(range(k)))),
        "error": float(np.mean(np.argmax(proba, axis=1) != codes)),
    }


def scalar_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as ``{name: scalar}`` for tracking (others as their string)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        plain = value is None or isinstance(value, bool | int | float | str)
        out[str(name)] = value if plain else str(value)
    return out


def merge_weights(
    sample_weight: np.ndarray | None, class_weight: Any, y: np.ndarray, task: str, n_classes: int
) -> np.ndarray | None:
    """Sample weights times balanced class weights (when ``class_weight: balanced``)."""
    if class_weight is None:
        return sample_weight
    if class_weight != "balanced" or task == "regression":
        what = "a regression model" if task == "regression" else f"'{class_weight}'"
        raise ConfigError(
            f"model.params.class_weight: {what} is not supported; use 'balanced' for a "
            "classification task, or remove it.",
            field="model.params.class_weight",
        )
    weights = balanced_weights(y, n_classes)
    return weights if sample_weight is None else weights * sample_weight


def unknown_param(flavor: str, name: str, known: list[str]) -> ConfigError:
    """A ConfigError for a parameter a flavor does not take, with a did-you-mean."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(sorted(known))}."
    return ConfigError(
        f"unknown key '{name}' in model.params for flavor {flavor}.{hint}",
        field=f"model.params.{name}",
    )


def fit_result(model: Any, flavor: str, task: str, params: Mapping[str, Any]) -> FitResult:
    """The :class:`FitResult` of a fitted trainer: its curves, kept iteration and the facts
    a run records (validation metrics at the kept iteration)."""
    best = model.best_iteration_
    history = {name: list(values) for name, values in model.history_.items()}
    at = (best or len(next(iter(history.values()), []))) - 1
    metrics = {f"validation_{n}": v[at] for n, v in history.items() if 0 <= at < len(v)}
    facts = {
        **model.facts_,
        "flavor": flavor,
        "task": task,
        "params": scalar_params(params),
        "metrics": metrics,
        "history": history,
        "best_iteration": best,
    }
    return FitResult(model=model, history=history, best_iteration=best, facts=facts)
