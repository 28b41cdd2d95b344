"""Permutation importance: seeded and deterministic, large for an informative column and about
zero for noise, vectorised metrics equal scikit-learn's, stored with the evaluation."""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pytest

from keel.evaluate.evaluation import Evaluation, evaluate_predictions, with_importance
from keel.evaluate.explain import ModelParts
from keel.evaluate.importance import (
    PermutationImportance,
    _auc,
    _rmse,
    permutation_importance,
)
from keel.features.pipeline import FeaturePipeline
from keel.train.lightgbm import LightGBMTrainer
from keel.train.sklearn import SklearnTrainer


@cache  # one fit per task and size for the whole module
def _synthetic(task: str, n: int = 3000) -> tuple[ModelParts, np.ndarray, np.ndarray]:
    """``signal`` decides the label, ``noise`` and the category ``color`` do not."""
    rng = np.random.default_rng(1)
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    table = pa.table({"signal": signal, "noise": noise, "color": color})
    pipe = FeaturePipeline(inputs={"signal": "float", "noise": "float", "color": "string"})
    pipe.fit(table)
    x = pipe.transform(table)
    if task == "regression":
        y = 3.0 * signal + rng.normal(scale=0.5, size=n)
    elif task == "binary":
        y = (signal + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    else:
        y = np.digitize(signal + rng.normal(scale=0.3, size=n), [-0.5, 0.5]).astype(np.int64)
    model = LightGBMTrainer(task=task, params={"n_estimators": 30}, seed=0).fit(x, y)
    classes = (
        ["a", "b", "c"] if task == "multiclass" else ([] if task == "regression" else ["0", "1"])
    )
    return ModelParts(pipe, model, task, "lightgbm", classes), x, y


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_an_informative_column_drops_more_than_noise(task: str) -> None:
    parts, x, y = _synthetic(task)
    found = permutation_importance(parts, x, y, repeats=5, rows=2000, seed=0)
    assert found.metric == {"binary": "roc_auc", "multiclass": "accuracy",
                            "regression": "rmse"}[task]  # fmt: skip
    assert found.rows == 2000 and found.repeats == 5
    assert set(found.mean) == {"signal", "noise", "color"} == set(found.std)
    assert found.ranked()[0] == "signal"
    assert found.mean["signal"] > 10 * max(abs(found.mean["noise"]), abs(found.mean["color"]))
    assert found.mean["signal"] > 0.1 and found.std["signal"] > 0  # repeats differ
    assert abs(found.mean["noise"]) < 0.05 * (10 if task == "regression" else 1)


def test_the_same_seed_gives_the_same_numbers_and_another_seed_others() -> None:
    parts, x, y = _synthetic("binary")
    first = permutation_importance(parts, x, y, seed=7)
    assert first == permutation_importance(parts, x, y, seed=7)
    assert first.mean != permutation_importance(parts, x, y, seed=8).mean
    assert PermutationImportance.from_json(first.to_json()) == first


def test_every_flavor_gets_it_through_predict_alone() -> None:
    parts, x, y = _synthetic("binary")
    logistic = SklearnTrainer(
        task="binary", params={"estimator": "sklearn.linear_model.LogisticRegression"}, seed=0
    ).fit(x, y)
    sklearn_parts = ModelParts(parts.pipeline, logistic, "binary", "sklearn", ["0", "1"])
    found = permutation_importance(sklearn_parts, x, y, repeats=3, rows=500)
    assert found.ranked()[0] == "signal"


def test_vectorised_metrics_equal_scikit_learns() -> None:
    from sklearn.metrics import mean_squared_error, roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(np.int64)
    predictions = np.round(rng.random((4, 500)), 2)  # with ties
    expected = [roc_auc_score(y, p) for p in predictions]
    np.testing.assert_allclose(_auc(y, predictions), expected, rtol=0, atol=1e-12)
    values = rng.normal(size=500)
    expected = [np.sqrt(mean_squared_error(values, p)) for p in predictions]
    np.testing.assert_allclose(_rmse(values, predictions), expected, rtol=0, atol=1e-12)


def test_bad_settings_are_refused() -> None:
    parts, x, y = _synthetic("binary", n=200)
    with pytest.raises(ValueError, match="at least 1"):
        permutation_importance(parts, x, y, repeats=0)
    with pytest.raises(ValueError, match="rows"):
        permutation_importance(parts, x, y[:10])


def test_stored_with_the_evaluation_next_to_mean_shap() -> None:
    parts, x, y = _synthetic("binary")
    proba = parts.model.predict(x)
    evaluation = with_importance(
        evaluate_predictions("binary", y, proba, classes=["0", "1"]), parts, x, y
    )
    assert evaluation.permutation is not None and evaluation.importance
    stored = evaluation.to_json()
    assert next(iter(stored["permutation_importance"]["columns"])) == "signal"
    again = Evaluation.from_json(stored)
    assert again.permutation == evaluation.permutation
    assert dict(again.importance) == dict(evaluation.importance)
    # the thinned ROC and PR points a card draws are stored too
    assert again.curves is not None and len(again.curves.roc[0].x) <= 201


def test_an_undefined_headline_metric_stores_no_permutation_importance() -> None:
    parts, x, y = _synthetic("binary")
    ones = np.ones_like(y)  # one class only: ROC AUC is undefined
    evaluation = evaluate_predictions("binary", ones, parts.model.predict(x), classes=["0", "1"])
    explained = with_importance(evaluation, parts, x, ones)
    assert explained.permutation is None and explained.importance
    assert Evaluation.from_json(explained.to_json()).permutation is None
