"""Model-agnostic explanations (shap's Permutation explainer) for flavors without native
contributions: a scikit-learn logistic regression and the torch MLP on Adult, summing to the
model's raw output; the same row gets the same numbers alone or in a batch; clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from keel.errors import ConfigError, DataValidationError
from keel.evaluate.agnostic import TOLERANCE, raw_output
from keel.evaluate.explain import ModelParts, explain_matrix, explain_rows
from keel.features.pipeline import FeaturePipeline
from keel.train.background import BACKGROUND_FILE, BACKGROUND_ROWS
from keel.train.sklearn import SklearnTrainer
from tests.evaluate.test_explain import TARGET, _inputs, _labels

pytest.importorskip("shap")

LOGISTIC = {
    "estimator": "sklearn.pipeline.Pipeline",
    "steps": [
        ["scale", {"estimator": "sklearn.preprocessing.StandardScaler"}],
        ["clf", {"estimator": "sklearn.linear_model.LogisticRegression", "max_iter": 300}],
    ],
}


@pytest.fixture(scope="module")
def adult_pipe(adult_train_table: pa.Table) -> tuple[FeaturePipeline, np.ndarray, np.ndarray]:
    cross = [{"columns": ["sex", "race"], "steps": [{"kind": "cross"}]}]
    table = adult_train_table.slice(0, 6000)
    pipe = FeaturePipeline(inputs=_inputs(table), transforms=cross).fit(table)
    return pipe, pipe.transform(table), _labels(table)


@pytest.fixture(scope="module")
def logistic(adult_pipe: tuple[FeaturePipeline, np.ndarray, np.ndarray]) -> ModelParts:
    pipe, x, y = adult_pipe
    fitted = SklearnTrainer(task="binary", params=LOGISTIC, seed=0).fit(x, y)
    loaded = SklearnTrainer.load(fitted.save())  # the background travels with the model files
    return ModelParts(pipe, loaded, "binary", "sklearn", ["<=50K", ">50K"])


def test_logistic_regression_contributions_sum_to_its_log_odds(
    logistic: ModelParts, adult_test_table: pa.Table
) -> None:
    x = logistic.pipeline.transform(adult_test_table.slice(0, 5))
    explanation = explain_matrix(logistic, x)
    assert explanation.method == "shap.Permutation"
    assert explanation.columns == tuple(logistic.pipeline.inputs)
    assert explanation.contributions.shape == (5, 1, len(logistic.pipeline.inputs))
    total = explanation.base_value[0] + explanation.contributions[:, 0, :].sum(axis=1)
    log_odds = logistic.model.estimator_.decision_function(x)  # the model's own raw output
    np.testing.assert_allclose(explanation.margin[:, 0], log_odds, rtol=0, atol=1e-9)
    np.testing.assert_allclose(total, log_odds, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(explanation.prediction, logistic.model.predict(x), atol=1e-12)
    # the base value is the mean raw output over the background the model carries
    background = logistic.model.background_
    assert background is not None and background.shape == (BACKGROUND_ROWS, x.shape[1])
    expected = raw_output("binary", logistic.model.predict(background)).mean()
    assert explanation.base_value[0] == pytest.approx(expected, abs=1e-9)
    # a linear model on scaled features: the columns that move the log-odds most lead
    top = max(explanation.importance().items(), key=lambda kv: kv[1])[0]
    assert top in {"marital-status", "relationship", "capital-gain", "education", "occupation"}


def test_a_row_gets_the_same_numbers_alone_and_in_a_batch(
    logistic: ModelParts, adult_test_table: pa.Table
) -> None:
    rows = adult_test_table.slice(0, 3).drop([TARGET]).to_pylist()
    batch = explain_rows(logistic, rows)
    alone = explain_rows(logistic, rows[2:])
    np.testing.assert_array_equal(batch.contributions[2], alone.contributions[0])
    document = batch.to_json()
    first = document["rows"][0]
    assert first["margin"] == pytest.approx(
        document["base_value"] + sum(first["contributions"].values()), abs=TOLERANCE
    )


def test_the_torch_mlp_explains_its_logits_and_multiclass_sums_per_class(
    adult_pipe: tuple[FeaturePipeline, np.ndarray, np.ndarray], adult_test_table: pa.Table
) -> None:
    pytest.importorskip("torch")
    from keel.train.mlp import MLPTrainer

    pipe, x, y = adult_pipe
    x, y = x[:2000], y[:2000]
    params = {"hidden": [16], "epochs": 2}
    fitted = MLPTrainer(task="binary", params=params, seed=0).fit(x, y)
    model = MLPTrainer.load(fitted.save())
    assert BACKGROUND_FILE in fitted.save()
    parts = ModelParts(pipe, model, "binary", "mlp", ["<=50K", ">50K"])
    test = pipe.transform(adult_test_table.slice(0, 2))
    explanation = explain_matrix(parts, test)
    p = model.predict(test)
    total = explanation.base_value[0] + explanation.contributions[:, 0, :].sum(axis=1)
    np.testing.assert_allclose(total, np.log(p / (1 - p)), rtol=0, atol=TOLERANCE)
    # three classes: one set of contributions per class, each summing to its centred log-prob
    classes = (y + (x[:, 0] > np.median(x[:, 0]))).astype(np.int64)
    three = MLPTrainer(task="multiclass", params=params, seed=0).fit(x, classes)
    parts = ModelParts(pipe, three, "multiclass", "mlp", ["a", "b", "c"])
    explanation = explain_matrix(parts, test[:1])
    assert explanation.contributions.shape == (1, 3, len(pipe.inputs))
    total = explanation.base_value + explanation.contributions.sum(axis=2)
    np.testing.assert_allclose(total, raw_output("multiclass", three.predict(test[:1])),
                               atol=TOLERANCE)  # fmt: skip
    np.testing.assert_allclose(explanation.prediction, three.predict(test[:1]), atol=1e-9)
    assert set(explanation.to_json()["rows"][0]["contributions"]) == {"a", "b", "c"}


def test_without_shap_the_error_names_the_extra(
    logistic: ModelParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'keel\[explain\]'") as caught:
        explain_matrix(logistic, np.zeros((1, logistic.pipeline.n_features_)))
    assert caught.value.field == "flavor" and "'sklearn'" in caught.value.message


def test_bad_input_is_a_clear_error(logistic: ModelParts) -> None:
    with pytest.raises(DataValidationError) as caught:
        explain_rows(logistic, [{"age": "old"}])
    assert caught.value.field is not None and caught.value.field.startswith("instances[0]")
    with pytest.raises(ConfigError, match="features") as wrong:
        explain_matrix(logistic, np.zeros((1, 3)))
    assert wrong.value.field == "rows"


def test_a_model_saved_without_a_background_says_to_retrain(
    logistic: ModelParts, tmp_path: Path
) -> None:
    files = logistic.model.save()
    files.pop(BACKGROUND_FILE)  # a model saved before backgrounds were
    old = SklearnTrainer.load(files)
    assert old.background_ is None
    parts = ModelParts(logistic.pipeline, old, "binary", "sklearn", ["<=50K", ">50K"])
    with pytest.raises(ConfigError, match="re-train"):
        explain_matrix(parts, np.zeros((1, logistic.pipeline.n_features_)))
