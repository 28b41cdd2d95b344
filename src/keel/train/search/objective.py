"""One search trial: sample parameters, train through :func:`keel.train.fit`, score.

Everything here is JSON-able or plain arrays so worker processes and Ray tasks run the very
same trial code as the in-process search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.config import SearchParam
from keel.errors import ConfigError
from keel.train.base import check_task

if TYPE_CHECKING:
    import optuna

    from keel.train.base import FitResult

__all__ = [
    "METRICS",
    "Objective",
    "TrialData",
    "TrialOutcome",
    "check_metric",
    "decode_params",
    "default_metric",
    "grid_of",
    "parse_space",
    "score_metric",
    "suggest",
    "train_trial",
]

#: Metrics a search can optimise, and whether greater is better.
METRICS: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
    "f1": True,
    "log_loss": False,
    "r2": True,
    "rmse": False,
    "mae": False,
}
_TASK_METRICS = {
    "binary": ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss"),
    "multiclass": ("log_loss", "accuracy", "f1", "roc_auc"),
    "regression": ("r2", "rmse", "mae"),
}


def default_metric(task: str) -> str:
    """The metric a search optimises when ``search.metric`` is not set (per task kind)."""
    return _TASK_METRICS[check_task(task)][0]


def check_metric(metric: str, task: str, direction: str | None) -> str:
    """The direction of ``metric`` for ``task``; ConfigError when they do not fit together."""
    allowed = _TASK_METRICS[check_task(task)]
    if metric not in allowed:
        raise ConfigError(
            f"search.metric '{metric}' does not apply to a {task} model; use one of "
            f"{', '.join(allowed)}.",
            field="search.metric",
        )
    natural = "maximize" if METRICS[metric] else "minimize"
    if direction is not None and direction != natural:
        raise ConfigError(
            f"search.direction '{direction}' would search for the worst {metric}; {metric} is "
            f"optimised with direction {natural}. Remove search.direction or set it to {natural}.",
            field="search.direction",
        )
    return natural


@dataclass(frozen=True)
class TrialData:
    """The arrays every trial trains and scores on (``sample_weight``: of the fit rows)."""

    x: np.ndarray
    y: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    sample_weight: np.ndarray | None = None


@dataclass(frozen=True)
class Objective:
    """What a trial trains and how it is scored (JSON-able, so worker processes share it)."""

    flavor: str
    task: str
    base_params: dict[str, Any]
    space: dict[str, dict[str, Any]]
    metric: str
    direction: str
    seed: int
    early_stopping_rounds: int | None = None
    json_params: tuple[str, ...] = ()  # sampled as JSON text (e.g. an MLP's "[64,32]" layers)
    threads: int | None = None  # threads per trial (resources.cpus); None: the library's default

    def to_json(self) -> dict[str, Any]:
        """The objective as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Objective:
        """The objective :meth:`to_json` wrote."""
        return cls(**{**data, "json_params": tuple(data.get("json_params", ()))})


@dataclass(frozen=True)
class TrialOutcome:
    """A finished trial: its score, learning curves and tracking facts."""

    value: float
    history: dict[str, list[float]]
    best_iteration: int | None
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)


def suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, SearchParam]) -> dict[str, Any]:
    """Sample one value per search-space parameter from an Optuna trial."""
    params: dict[str, Any] = {}
    for name, p in space.items():
        if p.type == "categorical":
            assert p.choices is not None  # checked by the config
            params[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            assert p.low is not None and p.high is not None
            step = int(p.step) if p.step else 1
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=step, log=p.log)
        else:
            assert p.low is not None and p.high is not None
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params


def score_metric(metric: str, task: str, y: np.ndarray, prediction: np.ndarray) -> float:
    """``metric`` of predictions (P(positive), class probabilities or values) against ``y``."""
    from sklearn import metrics as m

    task = check_task(task)
    if task == "regression":
        error = prediction.astype(np.float64) - y.astype(np.float64)
        if metric == "rmse":
            return float(np.sqrt(np.mean(error**2)))
        if metric == "mae":
            return float(np.mean(np.abs(error)))
        return float(m.r2_score(y, prediction))
    codes = y.astype(np.int64)
    if task == "binary":
        proba = np.clip(prediction.astype(np.float64), 1e-15, 1 - 1e-15)
        labels = (proba >= 0.5).astype(np.int64)
        found = {
            "roc_auc": lambda: m.roc_auc_score(codes, proba),
            "pr_auc": lambda: m.average_precision_score(codes, proba),
            "accuracy": lambda: np.mean(labels == codes),
            "f1": lambda: m.f1_score(codes, labels, zero_division=0),
            "log_loss": lambda: m.log_loss(codes, proba, labels=[0, 1]),
        }
        return float(found[metric]())
    proba = np.clip(prediction.astype(np.float64), 1e-15, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    labels = np.argmax(proba, axis=1)
    k = proba.shape[1]
    found = {
        "log_loss": lambda: m.log_loss(codes, proba, labels=list(range(k))),
        "accuracy": lambda: np.mean(labels == codes),
        "f1": lambda: m.f1_score(codes, labels, average="macro", zero_division=0),
        "roc_auc": lambda: m.roc_auc_score(codes, proba, multi_class="ovr", labels=list(range(k))),
    }
    return float(found[metric]())


def _intermediate(
    objective: Objective, y_valid: np.ndarray
) -> Callable[[Mapping[str, float]], float | None]:
    """Per-iteration validation metrics -> the value pruning compares (same direction as the
    search metric; a monotone proxy when the trainer does not record the metric itself)."""
    metric, task = objective.metric, check_task(objective.task)
    if metric in ("roc_auc", "log_loss", "rmse", "mae") and not (
        task == "multiclass" and metric == "roc_auc"
    ):
        return lambda values: values.get(metric)
    if task == "regression":  # r2 = 1 - mse / var(y) on a fixed validation set
        variance = float(np.var(y_valid)) or 1.0
        return lambda values: (
            None if values.get("rmse") is None else 1.0 - float(values["rmse"]) ** 2 / variance
        )
    if task == "multiclass":  # accuracy, f1, roc_auc: all rise as the error falls
        return lambda values: None if values.get("error") is None else 1.0 - values["error"]
    return lambda values: values.get("roc_auc")  # binary pr_auc, accuracy, f1


def train_trial(
    objective: Objective,
    data: TrialData,
    params: Mapping[str, Any],
    *,
    report: Callable[[int, float | None], None] | None = None,
) -> TrialOutcome:
    """Train one model with ``base_params | params`` and score it on the validation rows.

    Args:
        objective: Flavor, task, base parameters, metric and seed.
        data: Fit and validation arrays.
        params: The sampled hyper-parameters (override the base ones).
        report: Called as ``report(iteration, value)`` after every iteration with the
            intermediate validation value pruning compares (None when the trainer recorded
            none); what it raises (``optuna.TrialPruned``) propagates out.

    Returns:
        The validation score, the learning curves and the facts of the fit.
    """
    started = time.perf_counter()
    on_iteration = None
    if report is not None:
        pick = _intermediate(objective, data.y_valid)

        def on_iteration(i: int, values: Mapping[str, float]) -> None:
            value = pick(values)
            report(i, float(value) if value is not None and math.isfinite(value) else None)

    with _thread_limit(objective.flavor, objective.threads):
        result = _fit(objective, data, params, on_iteration)
        prediction = np.asarray(result.model.predict(data.x_valid))
    value = score_metric(objective.metric, objective.task, data.y_valid, prediction)
    return TrialOutcome(
        value=value,
        history=result.history,
        best_iteration=result.best_iteration,
        seconds=time.perf_counter() - started,
        facts=dict(result.facts),
    )


#: The native library each flavor trains with: loaded before the thread limit is applied
_LIBRARIES = {"lightgbm": "lightgbm", "xgboost": "xgboost", "mlp": "torch"}


@contextmanager
def _thread_limit(flavor: str, threads: int | None) -> Iterator[None]:
    """At most ``threads`` OpenMP/BLAS threads while a trial trains. Parallel trials want one
    thread each, and on a busy machine OpenMP threads spin-waiting for each other make a
    two-thread LightGBM fit many times slower than a one-thread fit."""
    if threads is None:
        yield
        return
    import importlib

    from threadpoolctl import threadpool_limits

    library = _LIBRARIES.get(flavor)
    if library is not None:
        # the limit applies to runtimes already loaded; a missing extra is the trainer's to report
        with suppress(ImportError):
            importlib.import_module(library)
    with threadpool_limits(limits=threads):
        yield


def _fit(
    objective: Objective,
    data: TrialData,
    params: Mapping[str, Any],
    on_iteration: Callable[[int, Mapping[str, float]], None] | None,
) -> FitResult:
    from keel.train import fit

    return fit(
        data.x,
        data.y,
        flavor=objective.flavor,
        task=objective.task,
        params=decode_params({**objective.base_params, **params}, objective.json_params),
        seed=objective.seed,
        x_valid=data.x_valid,
        y_valid=data.y_valid,
        sample_weight=data.sample_weight,
        early_stopping_rounds=objective.early_stopping_rounds,
        on_iteration=on_iteration,
    )


def parse_space(space: Mapping[str, Mapping[str, Any]]) -> dict[str, SearchParam]:
    """Search-space dicts as validated :class:`SearchParam` objects."""
    return {name: SearchParam.model_validate(dict(p)) for name, p in space.items()}


def grid_of(space: Mapping[str, SearchParam]) -> dict[str, list[Any]]:
    """Every value of each parameter of a finite (grid) space."""
    grid: dict[str, list[Any]] = {}
    for name, p in space.items():
        if p.type == "categorical":
            assert p.choices is not None
            grid[name] = list(p.choices)
        else:
            assert p.low is not None and p.high is not None and p.step is not None
            values = np.arange(p.low, p.high + p.step / 2, p.step)
            grid[name] = [int(v) for v in values] if p.type == "int" else [float(v) for v in values]
    return grid


def decode_params(params: Mapping[str, Any], json_names: tuple[str, ...]) -> dict[str, Any]:
    """``params`` with the values named in ``json_names`` decoded from JSON text."""
    import orjson

    return {
        name: orjson.loads(value) if name in json_names and isinstance(value, str) else value
        for name, value in params.items()
    }
