"""LightGBM on Adult through the Trainer protocol: quality, text model, weights, determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from keel.config import KeelConfig
from keel.errors import ConfigError
from keel.features import FeaturePipeline
from keel.train import FitResult, Trainer, fit, trainer_for
from keel.train.base import balanced_weights
from keel.train.lightgbm import MODEL_FILE, LightGBMTrainer, load_booster
from keel.train.splits import validation_split
from keel.validate.schema import Schema

FAST = {"n_estimators": 60, "learning_rate": 0.2}
XY = tuple[np.ndarray, np.ndarray]


def labels(table: pa.Table, config: KeelConfig) -> np.ndarray:
    values = np.asarray(table.column(config.data.target).to_pylist(), dtype=object)
    return (values == config.data.positive_label).astype(np.int64)


@pytest.fixture(scope="module")
def pipeline(adult_schema: Schema, adult_train_table: pa.Table) -> FeaturePipeline:
    inputs = {name: adult_schema.columns[name].type for name in adult_schema.features()}
    return FeaturePipeline(inputs=inputs).fit(adult_train_table)


@pytest.fixture(scope="module")
def xy(pipeline: FeaturePipeline, adult_train_table: pa.Table, adult_config: KeelConfig) -> XY:
    return pipeline.transform(adult_train_table), labels(adult_train_table, adult_config)


@pytest.fixture(scope="module")
def split(xy: XY) -> tuple[np.ndarray, np.ndarray]:
    return validation_split(xy[1], task="binary", fraction=0.1, seed=0)


def train(xy: XY, split: tuple[np.ndarray, np.ndarray], **params: Any) -> FitResult:
    x, y = xy
    a, b = split
    stopping = params.pop("early_stopping_rounds", 10)
    weights = params.pop("sample_weight", None)
    return fit(
        x[a],
        y[a],
        flavor="lightgbm",
        task="binary",
        params=FAST | params,
        seed=0,
        x_valid=x[b],
        y_valid=y[b],
        early_stopping_rounds=stopping,
        sample_weight=weights,
    )


@pytest.fixture(scope="module")
def trained(xy: XY, split: tuple[np.ndarray, np.ndarray]) -> FitResult:
    return train(xy, split)


def test_quality_facts_and_protocol(trained: FitResult, xy: XY) -> None:
    assert isinstance(trained.model, Trainer)
    facts = trained.facts
    assert facts["metrics"]["validation_roc_auc"] > 0.9
    assert 0 < facts["metrics"]["validation_log_loss"] < 0.4
    assert 1 <= facts["best_iteration"] <= FAST["n_estimators"]
    assert facts["train_rows"] + facts["validation_rows"] == len(xy[1])
    assert facts["params"] == FAST
    assert set(trained.history) == {"log_loss", "roc_auc"}
    best = trained.best_iteration
    assert best is not None
    assert min(trained.history["log_loss"]) == trained.history["log_loss"][best - 1]


def test_text_model_is_the_best_iteration(
    trained: FitResult, xy: XY, split: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = xy
    files = trained.model.save()
    assert list(files) == [MODEL_FILE]
    booster = load_booster(files[MODEL_FILE].decode())
    assert booster.current_iteration() == trained.best_iteration
    valid = split[1]
    assert roc_auc_score(y[valid], booster.predict(x[valid])) == pytest.approx(
        trained.facts["metrics"]["validation_roc_auc"], abs=1e-6
    )


def test_save_load_round_trip_predicts_identically(trained: FitResult, xy: XY) -> None:
    again = trainer_for("lightgbm").load(trained.model.save())
    assert again.task == "binary"
    sample = xy[0][:2000]
    first, second = trained.model.predict(sample), again.predict(sample)
    assert first.tobytes() == second.tobytes()
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert again.save() == trained.model.save()


def test_generalises_to_adult_test(
    trained: FitResult,
    pipeline: FeaturePipeline,
    adult_test_table: pa.Table,
    adult_config: KeelConfig,
) -> None:
    proba = trained.model.predict(pipeline.transform(adult_test_table))
    assert roc_auc_score(labels(adult_test_table, adult_config), proba) > 0.9


def test_training_is_byte_reproducible(
    trained: FitResult, xy: XY, split: tuple[np.ndarray, np.ndarray]
) -> None:
    again = train(xy, split)
    assert again.model.save() == trained.model.save()
    assert again.history == trained.history


def test_on_iteration_and_no_early_stopping(xy: XY) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    x, y = xy
    result = fit(
        x[:5000],
        y[:5000],
        flavor="lightgbm",
        task="binary",
        params={"n_estimators": 8},
        seed=0,
        x_valid=x[5000:7000],
        y_valid=y[5000:7000],
        on_iteration=lambda i, m: seen.append((i, dict(m))),
    )
    assert [i for i, _ in seen] == list(range(1, 9))
    assert set(seen[0][1]) == {"log_loss", "roc_auc"}
    assert result.best_iteration == 8
    assert load_booster(result.model.save()[MODEL_FILE].decode()).current_iteration() == 8


def test_exception_in_on_iteration_propagates(xy: XY) -> None:
    class Pruned(Exception):
        pass

    def prune(i: int, metrics: Any) -> None:
        if i == 3:
            raise Pruned

    x, y = xy
    with pytest.raises(Pruned):
        fit(
            x[:3000],
            y[:3000],
            flavor="lightgbm",
            task="binary",
            params={"n_estimators": 20},
            seed=0,
            x_valid=x[3000:4000],
            y_valid=y[3000:4000],
            on_iteration=prune,
        )


def test_balanced_class_weight(trained: FitResult, xy: XY, split: Any) -> None:
    balanced = train(xy, split, class_weight="balanced")
    assert balanced.facts["metrics"]["validation_roc_auc"] > 0.9
    sample = xy[0][:5000]
    # upweighting the minority class (24% positives) pushes probabilities towards 0.5
    assert balanced.model.predict(sample).mean() > trained.model.predict(sample).mean() + 0.1


def test_sample_weights_change_the_model(trained: FitResult, xy: XY, split: Any) -> None:
    x, y = xy
    a = split[0]
    heavy_positives = np.where(y[a] == 1, 5.0, 1.0)
    weighted = train(xy, split, sample_weight=heavy_positives)
    sample = x[:5000]
    assert weighted.model.predict(sample).mean() > trained.model.predict(sample).mean() + 0.1


def test_balanced_weights_equalise_the_classes() -> None:
    y = np.array([0, 0, 0, 1])
    weights = balanced_weights(y, 2)
    assert weights.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert weights[y == 0].sum() == pytest.approx(weights[y == 1].sum())
    assert weights.sum() == pytest.approx(len(y))


def test_misspelt_param_suggests_the_name(xy: XY) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'learning_rte'.*Did you mean 'learning_rate'"
    ):
        fit(
            xy[0][:100],
            xy[1][:100],
            flavor="lightgbm",
            task="binary",
            params={"learning_rte": 0.1},
            seed=0,
        )


def test_unknown_flavor_and_task_name_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'catboost'.*lightgbm, xgboost, sklearn, mlp"):
        trainer_for("catboost")
    x, y = np.zeros((4, 1)), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match=r"'ranking'.*binary, multiclass, regression"):
        fit(x, y, flavor="lightgbm", task="ranking", params={}, seed=0)


def test_unfitted_trainer_refuses_to_predict() -> None:
    from keel.errors import NotFittedError

    with pytest.raises(NotFittedError):
        LightGBMTrainer(task="binary", params={}).predict(np.zeros((1, 2)))
