"""Every flavor x every task on real data: quality, save/load round trip, reproducible bytes,
early stopping, learning curves, and loading without pickle."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from keel.evaluate.metrics import task_metrics
from keel.train import FLAVORS, FitResult, Trainer, fit, trainer_for
from keel.train.base import HISTORY_METRICS

from .conftest import Data

TASKS = ("binary", "multiclass", "regression")
PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("lightgbm", "*"): {"n_estimators": 80, "learning_rate": 0.2},
    ("xgboost", "*"): {"n_estimators": 80, "learning_rate": 0.3, "max_depth": 5},
    ("sklearn", "binary"): {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "max_iter": 300,
    },
    ("sklearn", "multiclass"): {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "max_iter": 300,
    },
    ("sklearn", "regression"): {
        "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
        "max_iter": 60,
    },
    ("mlp", "*"): {"epochs": 12, "hidden": [32], "learning_rate": 0.01},
}
# held-out quality each flavor must reach (the data are small subsets, the models tiny)
FLOOR = {"binary": ("roc_auc", 0.85), "multiclass": ("accuracy", 0.6), "regression": ("r2", 0.6)}
CASES = [(flavor, task) for flavor in FLAVORS for task in TASKS]


def params_for(flavor: str, task: str) -> dict[str, Any]:
    return dict(PARAMS.get((flavor, task)) or PARAMS[(flavor, "*")])


def train(data: Data, flavor: str, **kwargs: Any) -> FitResult:
    return fit(
        data.x,
        data.y,
        flavor=flavor,
        task=data.task,
        params=params_for(flavor, data.task),
        seed=3,
        x_valid=data.x_valid,
        y_valid=data.y_valid,
        **kwargs,
    )


@pytest.fixture(scope="session")
def fitted(task_data: dict[str, Data]) -> dict[tuple[str, str], FitResult]:
    results: dict[tuple[str, str], FitResult] = {}
    for flavor, task in CASES:
        results[(flavor, task)] = train(task_data[task], flavor, early_stopping_rounds=5)
    return results


@pytest.mark.parametrize(("flavor", "task"), CASES)
def test_quality_on_held_out_rows(
    flavor: str, task: str, fitted: dict[tuple[str, str], FitResult], task_data: dict[str, Data]
) -> None:
    data, result = task_data[task], fitted[(flavor, task)]
    prediction = result.model.predict(data.x_test)
    if task == "binary":
        assert prediction.shape == (len(data.y_test),)
        assert prediction.min() >= 0.0 and prediction.max() <= 1.0
    elif task == "multiclass":
        assert prediction.shape == (len(data.y_test), len(data.classes))
        assert np.allclose(prediction.sum(axis=1), 1.0)
    metric, floor = FLOOR[task]
    assert task_metrics(task, data.y_test, prediction)[metric] > floor


@pytest.mark.parametrize(("flavor", "task"), CASES)
def test_save_load_round_trip_predicts_identically(
    flavor: str, task: str, fitted: dict[tuple[str, str], FitResult], task_data: dict[str, Data]
) -> None:
    model = fitted[(flavor, task)].model
    files = model.save()
    assert all(isinstance(v, bytes) for v in files.values())
    assert getattr(model, "model_file", None) in files
    loaded = trainer_for(flavor).load(files)
    assert isinstance(loaded, Trainer) and loaded.task == task
    sample = task_data[task].x_test[:500]
    assert loaded.predict(sample).tobytes() == model.predict(sample).tobytes()
    if flavor != "sklearn":  # skops may lay out a loaded estimator's arrays differently
        assert loaded.save() == files


@pytest.mark.parametrize(("flavor", "task"), CASES)
def test_history_and_facts(
    flavor: str, task: str, fitted: dict[tuple[str, str], FitResult]
) -> None:
    result = fitted[(flavor, task)]
    assert set(result.history) == set(HISTORY_METRICS[task])
    lengths = {len(v) for v in result.history.values()}
    assert len(lengths) == 1 and lengths.pop() >= 1
    facts = result.facts
    assert facts["flavor"] == flavor and facts["task"] == task
    assert set(facts["metrics"]) == {f"validation_{m}" for m in HISTORY_METRICS[task]}
    assert all(isinstance(v, str | int | float) for v in facts["params"].values())
    assert facts["history"] == result.history


@pytest.mark.parametrize("flavor", FLAVORS)
def test_same_seed_same_bytes(flavor: str, task_data: dict[str, Data]) -> None:
    data = task_data["binary"]
    small = Data(
        "binary",
        data.x[:2000],
        data.y[:2000],
        data.x_valid[:500],
        data.y_valid[:500],
        data.x_test,
        data.y_test,
        data.classes,
    )
    first, second = train(small, flavor), train(small, flavor)
    assert first.model.save() == second.model.save()


@pytest.mark.parametrize("flavor", ["lightgbm", "xgboost", "mlp"])
def test_early_stopping_keeps_the_best_iteration(flavor: str, task_data: dict[str, Data]) -> None:
    data = task_data["regression"]
    params = params_for(flavor, "regression")
    # a learning rate high enough to overfit quickly, so that stopping triggers
    params |= (
        {"n_estimators": 300, "learning_rate": 0.9}
        if flavor != "mlp"
        else {"epochs": 60, "learning_rate": 0.05}
    )
    seen: list[int] = []
    result = fit(
        data.x[:3000],
        data.y[:3000],
        flavor=flavor,
        task="regression",
        params=params,
        seed=0,
        x_valid=data.x_valid,
        y_valid=data.y_valid,
        early_stopping_rounds=3,
        on_iteration=lambda i, m: seen.append(i),
    )
    rmse = result.history["rmse"]
    assert result.best_iteration is not None
    assert len(rmse) == len(seen) < (300 if flavor != "mlp" else 60)
    assert rmse[result.best_iteration - 1] == min(rmse)
    assert len(rmse) - result.best_iteration == 3  # stopped 3 iterations after the best
    kept = result.model.predict(data.x_valid)
    assert np.sqrt(np.mean((kept - data.y_valid) ** 2)) == pytest.approx(min(rmse), rel=1e-5)


@pytest.mark.parametrize("flavor", ["xgboost", "mlp", "sklearn"])
def test_sample_weights_shift_predictions(flavor: str, task_data: dict[str, Data]) -> None:
    data = task_data["binary"]
    params = params_for(flavor, "binary")
    if flavor == "sklearn":
        params["estimator"] = "sklearn.ensemble.HistGradientBoostingClassifier"
        params.pop("max_iter")
    plain = fit(data.x, data.y, flavor=flavor, task="binary", params=params, seed=0)
    weighted = fit(
        data.x,
        data.y,
        flavor=flavor,
        task="binary",
        params=params,
        seed=0,
        sample_weight=np.where(data.y == 1, 5.0, 1.0),
    )
    shift = weighted.model.predict(data.x_test).mean() - plain.model.predict(data.x_test).mean()
    assert shift > 0.1


@pytest.mark.parametrize("flavor", ["xgboost", "mlp"])
def test_balanced_class_weight(flavor: str, task_data: dict[str, Data]) -> None:
    data = task_data["binary"]
    params = params_for(flavor, "binary")
    plain = fit(data.x, data.y, flavor=flavor, task="binary", params=params, seed=0)
    balanced = fit(
        data.x,
        data.y,
        flavor=flavor,
        task="binary",
        seed=0,
        params=params | {"class_weight": "balanced"},
    )
    shift = balanced.model.predict(data.x_test).mean() - plain.model.predict(data.x_test).mean()
    # positives (24%) weigh ~3x: the mean probability moves towards 0.5
    assert shift > 0.05


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model load used pickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    yield


@pytest.mark.parametrize(("flavor", "task"), CASES)
def test_loading_never_unpickles(
    flavor: str, task: str, fitted: dict[tuple[str, str], FitResult], no_pickle: None
) -> None:
    files = fitted[(flavor, task)].model.save()
    for data in files.values():
        assert not data.startswith(b"\x80")  # not a pickle stream
    trainer_for(flavor).load(files)


class Pruned(Exception):
    """Stands for optuna.TrialPruned."""


@pytest.mark.parametrize("flavor", FLAVORS)
def test_on_iteration_sees_every_iteration_and_its_exceptions_propagate(
    flavor: str, task_data: dict[str, Data]
) -> None:
    data = task_data["multiclass"]
    params = params_for(flavor, "multiclass")
    seen: list[tuple[int, set[str]]] = []

    def record(i: int, metrics: Any) -> None:
        seen.append((i, set(metrics)))
        if i == 2:
            raise Pruned

    expect = pytest.raises(Pruned) if flavor != "sklearn" else pytest.raises(AssertionError)
    with expect:
        fit(
            data.x[:1500],
            data.y[:1500],
            flavor=flavor,
            task="multiclass",
            params=params,
            seed=0,
            x_valid=data.x_valid[:500],
            y_valid=data.y_valid[:500],
            on_iteration=record,
        )
        raise AssertionError("sklearn has one iteration: nothing to prune")
    assert seen[0] == (1, {"log_loss", "error"})
