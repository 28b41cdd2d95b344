"""LightGBM training on Adult: quality, the text model round trip, and class weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from keel.config import KeelConfig, LightGBMParams, ModelConfig
from keel.features import FeaturePipeline
from keel.train.lightgbm import _balanced_weights, load_booster, train_lightgbm
from keel.validate.schema import Schema

FAST = {"n_estimators": 60, "learning_rate": 0.2}


def model_config(**params: Any) -> ModelConfig:
    stopping = params.pop("early_stopping_rounds", 10)
    return ModelConfig(
        name="adult", params=LightGBMParams(**(FAST | params)), early_stopping_rounds=stopping
    )


def labels(table: pa.Table, config: KeelConfig) -> np.ndarray:
    values = np.asarray(table.column(config.data.target).to_pylist(), dtype=object)
    return (values == config.data.positive_label).astype(np.int64)


@pytest.fixture(scope="module")
def pipeline(adult_schema: Schema, adult_train_table: pa.Table) -> FeaturePipeline:
    inputs = {name: adult_schema.columns[name].type for name in adult_schema.features()}
    return FeaturePipeline(inputs=inputs).fit(adult_train_table)


@pytest.fixture(scope="module")
def xy(
    pipeline: FeaturePipeline, adult_train_table: pa.Table, adult_config: KeelConfig
) -> tuple[np.ndarray, np.ndarray]:
    return pipeline.transform(adult_train_table), labels(adult_train_table, adult_config)


@pytest.fixture(scope="module")
def trained(xy: tuple[np.ndarray, np.ndarray]) -> tuple[str, dict[str, Any]]:
    return train_lightgbm(*xy, model_config())


def test_quality_and_facts(
    trained: tuple[str, dict[str, Any]], xy: tuple[np.ndarray, np.ndarray]
) -> None:
    _, facts = trained
    assert facts["validation_auc"] > 0.9
    assert 0 < facts["validation_logloss"] < 0.4
    assert 1 <= facts["best_iteration"] <= FAST["n_estimators"]
    assert facts["train_rows"] + facts["validation_rows"] == len(xy[1])
    assert facts["validation_rows"] == pytest.approx(0.1 * len(xy[1]), abs=1)
    assert isinstance(facts["lightgbm_version"], str)


def test_text_model_is_the_best_iteration(
    trained: tuple[str, dict[str, Any]], xy: tuple[np.ndarray, np.ndarray]
) -> None:
    text, facts = trained
    x, y = xy
    _, x_val, _, y_val = train_test_split(x, y, test_size=0.1, random_state=0, stratify=y)
    booster = load_booster(text)
    assert booster.current_iteration() == facts["best_iteration"]
    assert roc_auc_score(y_val, booster.predict(x_val)) == pytest.approx(
        facts["validation_auc"], abs=1e-6
    )


def test_text_round_trip_predicts_identically(
    trained: tuple[str, dict[str, Any]], xy: tuple[np.ndarray, np.ndarray]
) -> None:
    text, _ = trained
    booster = load_booster(text)
    again = load_booster(booster.model_to_string())
    sample = xy[0][:2000]
    first, second = booster.predict(sample), again.predict(sample)
    assert first.tobytes() == second.tobytes()
    assert first.min() >= 0.0 and first.max() <= 1.0


def test_generalises_to_adult_test(
    trained: tuple[str, dict[str, Any]],
    pipeline: FeaturePipeline,
    adult_test_table: pa.Table,
    adult_config: KeelConfig,
) -> None:
    proba = load_booster(trained[0]).predict(pipeline.transform(adult_test_table))
    assert roc_auc_score(labels(adult_test_table, adult_config), proba) > 0.9


def test_training_is_deterministic(
    trained: tuple[str, dict[str, Any]], xy: tuple[np.ndarray, np.ndarray]
) -> None:
    text, facts = train_lightgbm(*xy, model_config())
    assert facts == trained[1]
    sample = xy[0][:500]
    assert np.array_equal(
        load_booster(text).predict(sample), load_booster(trained[0]).predict(sample)
    )


def test_progress_callback_and_no_early_stopping(xy: tuple[np.ndarray, np.ndarray]) -> None:
    seen: list[tuple[int, int]] = []
    x, y = xy
    text, facts = train_lightgbm(
        x[:5000],
        y[:5000],
        model_config(n_estimators=8, early_stopping_rounds=None),
        on_iteration=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(i, 8) for i in range(1, 9)]
    assert facts["best_iteration"] == 8
    assert load_booster(text).current_iteration() == 8


def test_balanced_class_weight(
    trained: tuple[str, dict[str, Any]], xy: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = xy
    text, facts = train_lightgbm(x, y, model_config(class_weight="balanced"))
    assert facts["validation_auc"] > 0.9
    sample = x[:5000]
    balanced = load_booster(text).predict(sample).mean()
    plain = load_booster(trained[0]).predict(sample).mean()
    # upweighting the minority class (24% positives) pushes probabilities towards 0.5
    assert balanced > plain + 0.1


def test_balanced_weights_equalise_the_classes() -> None:
    y = np.array([0, 0, 0, 1])
    weights = _balanced_weights(y)
    assert weights.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert weights[y == 0].sum() == pytest.approx(weights[y == 1].sum())
    assert weights.sum() == pytest.approx(len(y))
