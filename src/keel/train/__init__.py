"""Trainers: one :class:`Trainer` protocol over LightGBM, XGBoost, scikit-learn, a PyTorch MLP
and any flavor a plug-in registers; one :class:`Task` protocol over binary, multiclass,
regression and any task a plug-in registers.

Example::

    from keel.train import fit

    result = fit(x, y, flavor="lightgbm", task="binary", params={"n_estimators": 200},
                 seed=0, x_valid=xv, y_valid=yv, early_stopping_rounds=20)
    result.model.predict(xv)            # P(positive)
    files = result.model.save()         # {"model.lgb.txt": b"..."}

Flavors load lazily (``torch`` and ``xgboost`` are extras): importing ``keel.train`` imports
neither. Flavors and tasks are registries (:data:`keel.plugins.TRAINERS`,
:data:`keel.plugins.TASKS`) that packages extend through the ``keel.trainers`` and
``keel.tasks`` entry-point groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ConfigError
from keel.plugins import TRAINERS
from keel.train.base import (
    TASKS,
    FitResult,
    OnIteration,
    Trainer,
    check_task,
    fit_result,
    primary_metric,
)

if TYPE_CHECKING:
    from keel.train.splits import cross_validate
    from keel.train.tasks import Task, task_for, task_names

__all__ = [
    "FLAVORS",
    "TASKS",
    "FitResult",
    "Task",
    "Trainer",
    "cross_validate",
    "fit",
    "flavors",
    "primary_metric",
    "task_for",
    "task_names",
    "trainer_for",
]

#: The built-in flavors (:func:`flavors` adds installed plug-ins).
FLAVORS: tuple[str, ...] = tuple(TRAINERS.builtins)


def flavors() -> tuple[str, ...]:
    """Every registered flavor: the built-ins, then installed plug-ins."""
    return TRAINERS.names()


def trainer_for(flavor: str) -> type[Trainer]:
    """The trainer class of a flavor, built-in or plug-in.

    Raises:
        ConfigError: Unknown flavor (the message lists the choices and how a plug-in adds
            one), its extra is missing, or a plug-in's class does not fit the protocol.
    """
    trainer = TRAINERS.load(flavor)
    missing = [m for m in ("fit", "predict", "save", "load") if not hasattr(trainer, m)]
    if not isinstance(trainer, type) or missing or getattr(trainer, "flavor", None) != flavor:
        what = getattr(trainer, "__name__", type(trainer).__name__)
        msg = (
            f"model.flavor '{flavor}': {what} is not a keel Trainer class for it (needs fit, "
            f"predict, save, load and flavor = '{flavor}'; missing: {', '.join(missing) or 'none'}"
            f", flavor: {getattr(trainer, 'flavor', None)!r}). Run "
            "keel.testing.check_trainer_plugin on it."
        )
        raise ConfigError(msg, field="model.flavor")
    found: type[Trainer] = trainer
    return found


def fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    flavor: str,
    task: str,
    params: Mapping[str, Any],
    seed: int,
    x_valid: np.ndarray | None = None,
    y_valid: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    early_stopping_rounds: int | None = None,
    on_iteration: OnIteration | None = None,
) -> FitResult:
    """Train one model of any flavor and task.

    Args:
        x: Feature matrix (rows, features), float.
        y: The target as the task encodes it: ``0..k-1`` (classification) or values.
        flavor: A registered flavor (:func:`flavors`).
        task: A registered task (``binary``, ``multiclass``, ``regression`` or a plug-in's);
            the trainer fits its kind.
        params: The flavor's hyper-parameters (``class_weight: balanced`` for every
            classifier); ``sklearn`` takes ``{"estimator": "module.Class", **kwargs}``.
        seed: Seeds every random source of the fit: same data and seed, same model bytes.
        x_valid: Validation features; metrics per iteration are recorded on them.
        y_valid: Validation targets.
        sample_weight: Per-row weights of ``x``.
        early_stopping_rounds: Stop after this many iterations without improvement of the
            validation metric (:func:`primary_metric`); keep the best iteration.
        on_iteration: Called as ``on_iteration(i, {metric: value})`` after each iteration;
            what it raises (e.g. a pruning signal) propagates out of ``fit``.

    Returns:
        The fitted model, its learning curves, the kept iteration and tracking facts.

    Raises:
        ConfigError: Unknown flavor, task or parameter.
    """
    kind = check_task(task)
    if (x_valid is None) != (y_valid is None):
        raise ConfigError("pass both x_valid and y_valid, or neither.", field="x_valid")
    trainer_class = trainer_for(flavor)
    model = trainer_class(task=kind, params=dict(params), seed=seed).fit(
        x,
        y,
        x_valid=x_valid,
        y_valid=y_valid,
        sample_weight=sample_weight,
        early_stopping_rounds=early_stopping_rounds,
        on_iteration=on_iteration,
    )
    return fit_result(model, flavor, task, params)


def __getattr__(name: str) -> Any:
    if name == "cross_validate":
        from keel.train.splits import cross_validate as found

        return found
    if name in ("Task", "task_for", "task_names"):
        from keel.train import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'keel.train' has no attribute {name!r}")
