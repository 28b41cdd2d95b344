"""Trainers: one :class:`Trainer` protocol over LightGBM, XGBoost, scikit-learn and a PyTorch MLP.

Example::

    from keel.train import fit

    result = fit(x, y, flavor="lightgbm", task="binary", params={"n_estimators": 200},
                 seed=0, x_valid=xv, y_valid=yv, early_stopping_rounds=20)
    result.model.predict(xv)            # P(positive)
    files = result.model.save()         # {"model.lgb.txt": b"..."}

Flavors load lazily (``torch`` and ``xgboost`` are extras): importing ``keel.train`` imports
neither.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ConfigError
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

__all__ = [
    "FLAVORS",
    "TASKS",
    "FitResult",
    "Trainer",
    "cross_validate",
    "fit",
    "primary_metric",
    "trainer_for",
]

#: Model flavors, each a lazy ``module:Class`` path (extras import only when chosen).
_TRAINERS: dict[str, str] = {
    "lightgbm": "keel.train.lightgbm:LightGBMTrainer",
    "xgboost": "keel.train.xgboost:XGBoostTrainer",
    "sklearn": "keel.train.sklearn:SklearnTrainer",
    "mlp": "keel.train.mlp:MLPTrainer",
}
_EXTRAS = {"xgboost": "xgboost", "mlp": "torch"}

FLAVORS: tuple[str, ...] = tuple(_TRAINERS)


def trainer_for(flavor: str) -> type[Trainer]:
    """The trainer class of a flavor.

    Raises:
        ConfigError: Unknown flavor (the message lists the choices), or its extra is missing.
    """
    path = _TRAINERS.get(flavor)
    if path is None:
        raise ConfigError(
            f"model.flavor '{flavor}' is not a flavor Keel trains; use one of "
            f"{', '.join(FLAVORS)}.",
            field="model.flavor",
        )
    module_name, class_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get(flavor, flavor)
        msg = (
            f"model.flavor '{flavor}' needs the '{extra}' extra ({exc.name} is not installed). "
            f"Install it with: pip install 'keel[{extra}]'."
        )
        raise ConfigError(msg, field="model.flavor") from exc
    trainer: type[Trainer] = getattr(module, class_name)
    return trainer


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
        y: Encoded labels ``0..k-1`` (classification) or values (regression).
        flavor: One of :data:`FLAVORS`.
        task: ``binary``, ``multiclass`` or ``regression``.
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
    check_task(task)
    if (x_valid is None) != (y_valid is None):
        raise ConfigError("pass both x_valid and y_valid, or neither.", field="x_valid")
    trainer_class = trainer_for(flavor)
    model = trainer_class(task=task, params=dict(params), seed=seed).fit(
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
    raise AttributeError(f"module 'keel.train' has no attribute {name!r}")
