"""Explanations: exact TreeSHAP folded to input columns, summing to the raw margin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

import keel
from keel.api.projects import _project
from keel.data.sources import read_table
from keel.errors import ConfigError, DataValidationError
from keel.evaluate.evaluation import Evaluation
from keel.evaluate.explain import ModelParts, explain_matrix, explain_rows, global_importance
from keel.features.pipeline import FeaturePipeline
from keel.train.lightgbm import LightGBMTrainer

TARGET = "income"
SMALL = {"n_estimators": 30, "num_leaves": 15, "learning_rate": 0.2}


def _inputs(table: pa.Table) -> dict[str, str]:
    kinds = {}
    for field in table.schema:
        if field.name == TARGET:
            continue
        kinds[field.name] = "int" if pa.types.is_integer(field.type) else (
            "float" if pa.types.is_floating(field.type) else "string"
        )  # fmt: skip
    return kinds


def _labels(table: pa.Table) -> np.ndarray:
    raw = np.asarray(table.column(TARGET).to_pylist(), dtype=object).astype(str)
    return (np.char.rstrip(np.char.strip(raw), ".") == ">50K").astype(np.int64)


@pytest.fixture(scope="module")
def adult_parts(adult_train_table: pa.Table) -> ModelParts:
    cross = [{"columns": ["sex", "race"], "steps": [{"kind": "cross"}]}]
    pipe = FeaturePipeline(inputs=_inputs(adult_train_table), transforms=cross)
    pipe.fit(adult_train_table)
    x = pipe.transform(adult_train_table)
    model = LightGBMTrainer(task="binary", params=SMALL, seed=0).fit(x, _labels(adult_train_table))
    return ModelParts(pipe, model, "binary", "lightgbm", ["<=50K", ">50K"])


def test_contributions_sum_to_the_raw_margin_on_1000_adult_rows(
    adult_parts: ModelParts, adult_test_table: pa.Table
) -> None:
    x = adult_parts.pipeline.transform(adult_test_table.slice(0, 1000))
    explanation = explain_matrix(adult_parts, x)
    margin = adult_parts.model.booster_.predict(x, raw_score=True)
    total = explanation.base_value[0] + explanation.contributions[:, 0, :].sum(axis=1)
    np.testing.assert_allclose(total, margin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(explanation.margin[:, 0], margin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(explanation.prediction, adult_parts.model.predict(x), atol=1e-9)
    assert explanation.columns == tuple(adult_parts.pipeline.inputs)  # folded to the inputs
    assert explanation.contributions.shape == (1000, 1, len(adult_parts.pipeline.inputs))
    assert explanation.method == "lightgbm.pred_contrib"


def test_a_few_rows_take_keels_treeshap_with_the_same_numbers(
    adult_parts: ModelParts, adult_test_table: pa.Table
) -> None:
    from keel.evaluate import treeshap

    x = adult_parts.pipeline.transform(adult_test_table.slice(0, 3))
    batch = explain_matrix(adult_parts, x, threads=1)
    assert batch.method == "keel.treeshap"
    contrib = adult_parts.model.booster_.predict(x, pred_contrib=True)  # LightGBM's own
    np.testing.assert_allclose(batch.margin[:, 0], contrib.sum(axis=1), rtol=0, atol=1e-9)
    for i in range(3):
        alone = explain_matrix(adult_parts, x[i : i + 1])
        np.testing.assert_allclose(alone.contributions[0], batch.contributions[i], atol=1e-12)
        np.testing.assert_allclose(alone.margin[0], batch.margin[i], atol=1e-12)
        np.testing.assert_array_equal(alone.base_value, batch.base_value)
    assert adult_parts.model.booster_ in treeshap._CACHE  # made once, kept with the booster


def test_one_hot_and_crossed_features_fold_to_their_inputs(adult_parts: ModelParts) -> None:
    sources = adult_parts.pipeline.feature_inputs()
    names = adult_parts.pipeline.feature_names()
    assert len(sources) == len(names)
    assert {sources[i] for i, n in enumerate(names) if n.startswith("workclass")} == {
        ("workclass",)
    }
    crossed = {sources[i] for i, n in enumerate(names) if n.startswith("sex*race")}
    assert crossed == {("race", "sex")}  # in input order: race comes before sex in Adult


def test_rows_and_matrix_paths_agree_and_serialize(
    adult_parts: ModelParts, adult_test_table: pa.Table
) -> None:
    rows = adult_test_table.slice(0, 5).drop([TARGET]).to_pylist()
    by_rows = explain_rows(adult_parts, rows)
    by_matrix = explain_matrix(adult_parts, adult_parts.pipeline.transform(adult_test_table[:5]))
    np.testing.assert_array_equal(by_rows.contributions, by_matrix.contributions)
    document = by_rows.to_json()
    assert set(document["rows"][0]["contributions"]) == set(adult_parts.pipeline.inputs)
    assert isinstance(document["base_value"], float)
    first = document["rows"][0]
    assert first["margin"] == pytest.approx(
        document["base_value"] + sum(first["contributions"].values()), abs=1e-9
    )


def test_a_value_that_does_not_convert_names_the_field(adult_parts: ModelParts) -> None:
    with pytest.raises(DataValidationError) as caught:
        explain_rows(adult_parts, [{"age": "old"}])
    assert caught.value.field is not None and caught.value.field.startswith("instances[0]")


def test_global_importance_is_stored_with_the_evaluation(
    adult_parts: ModelParts, adult_test_table: pa.Table
) -> None:
    x = adult_parts.pipeline.transform(adult_test_table)
    importance = global_importance(adult_parts, x)
    assert list(importance) == sorted(importance, key=lambda c: -importance[c])
    assert set(importance) == set(adult_parts.pipeline.inputs)
    assert importance["relationship"] > importance["native-country"]
    stored = {"task": "binary", "metrics": {"rows": 1}, "importance": importance}
    assert dict(Evaluation.from_json(stored).importance) == importance


def test_multiclass_contributions_per_class_lightgbm_and_xgboost() -> None:
    from keel.train.xgboost import XGBoostTrainer

    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    y = (np.asarray(table["a"]) > 0).astype(np.int64) + (np.asarray(table["b"]) > 1)
    pipe = FeaturePipeline(inputs={"a": "float", "b": "float"}).fit(table)
    x = pipe.transform(table)
    for flavor, trainer in (("lightgbm", LightGBMTrainer), ("xgboost", XGBoostTrainer)):
        model = trainer(task="multiclass", params={"n_estimators": 10}, seed=0).fit(x, y)
        parts = ModelParts(pipe, model, "multiclass", flavor, ["x", "y", "z"])
        explanation = explain_matrix(parts, x)
        total = explanation.base_value + explanation.contributions.sum(axis=2)
        np.testing.assert_allclose(total, explanation.margin, atol=1e-6)
        np.testing.assert_allclose(explanation.prediction, model.predict(x), atol=1e-6)
        assert set(explanation.to_json()["rows"][0]["contributions"]) == {"x", "y", "z"}
        one = explain_matrix(parts, x[:1])  # LightGBM's single-row path, per class
        np.testing.assert_allclose(one.contributions[0], explanation.contributions[0], atol=1e-9)
        np.testing.assert_allclose(one.margin[0], explanation.margin[0], atol=1e-9)


def test_a_flavor_without_exact_contributions_goes_model_agnostic(
    adult_parts: ModelParts,
) -> None:
    pytest.importorskip("shap")
    parts = ModelParts(adult_parts.pipeline, adult_parts.model, "binary", "sklearn", [])
    # shap's Permutation explainer (tests/evaluate/test_agnostic.py) needs the background a
    # scikit-learn or MLP model carries; this booster has none
    with pytest.raises(ConfigError, match="without a background sample"):
        explain_matrix(parts, np.zeros((1, adult_parts.pipeline.n_features_)))
    assert global_importance(parts, np.zeros((1, 1))) == {}  # too costly for the step


def test_a_regression_model_explains_in_its_own_units(tmp_path: Path) -> None:
    root = keel.init(tmp_path / "housing", example="california-housing")
    config = root / "keel.yaml"
    config.write_text(config.read_text().replace("n_estimators: 2000", "n_estimators: 40"))
    config.write_text(config.read_text().replace("r2 >= 0.8", "r2 >= 0.5"))
    keel.run(root)
    model = keel.load_model("california-housing", project=root)
    test = read_table(root / "data" / "housing-test.csv").slice(0, 200)
    explanation = model.explain(test.drop(["median_house_value"]))
    margin = model.package.predict(test)
    np.testing.assert_allclose(explanation.margin[:, 0], margin, rtol=1e-9)
    total = explanation.base_value[0] + explanation.contributions[:, 0, :].sum(axis=1)
    np.testing.assert_allclose(total, margin, rtol=0, atol=1e-6)
    assert explanation.outputs == ("value",)
    with _project(root) as project:  # the run stored mean |SHAP| with the evaluation
        manifest = orjson.loads(project.artifacts.get(model.package.sha256))
        stored = orjson.loads(project.artifacts.get(manifest["lineage"]["artifacts"]["evaluation"]))
    assert set(stored["importance"]) == set(explanation.columns)
    importance = stored["importance"]
    assert max(importance, key=importance.__getitem__) == "median_income"
