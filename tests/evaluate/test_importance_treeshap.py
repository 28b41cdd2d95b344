"""The evaluate step's mean |SHAP| by Keel's TreeSHAP read from the model text changes no number:
``TreeShap.parse`` (``model_to_string()``) builds the same values as the independent reader in
``treeshap_reference`` (``dump_model()``), and the stored global importance equals
``pred_contrib``'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pytest

from keel.evaluate.evaluation import global_explanations, mean_abs_shap
from keel.evaluate.explain import ModelParts, global_importance
from keel.evaluate.treeshap import TreeShap
from keel.features.pipeline import FeaturePipeline
from keel.train.lightgbm import LightGBMTrainer
from tests.evaluate import treeshap_reference as reference

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
HOUSING = SHARED / "california-housing" / "housing.csv"


@pytest.fixture(scope="module")
def adult(adult_train_table: pa.Table, adult_test_table: pa.Table) -> tuple[Any, ...]:
    """A LightGBM model on Adult with early stopping (fewer trees kept than trained), its
    transformed test rows, labels and predictions."""
    inputs = {
        f.name: "int" if pa.types.is_integer(f.type) else (
            "float" if pa.types.is_floating(f.type) else "string")
        for f in adult_train_table.schema if f.name != "income"
    }  # fmt: skip
    pipe = FeaturePipeline(inputs=inputs).fit(adult_train_table)

    def labels(table: pa.Table) -> np.ndarray:
        raw = np.asarray(table.column("income").to_pylist(), dtype=object).astype(str)
        return (np.char.rstrip(np.char.strip(raw), ".") == ">50K").astype(np.int64)

    params = {"n_estimators": 80, "num_leaves": 31, "learning_rate": 0.1}
    model = LightGBMTrainer(task="binary", params=params, seed=0).fit(
        pipe.transform(adult_train_table), labels(adult_train_table)
    )
    parts = ModelParts(pipe, model, "binary", "lightgbm", ["<=50K", ">50K"])
    test = adult_test_table.slice(0, 3000)
    x = pipe.transform(test)
    return parts, x, labels(test), model.predict(x)


def _both(booster: Any) -> tuple[TreeShap, TreeShap]:
    parsed = TreeShap.parse(booster.model_to_string())
    built = reference.build(booster.dump_model())
    assert parsed is not None and built is not None
    return parsed, built


def _numeric(table: pa.Table, drop: str) -> np.ndarray:
    columns = []
    for name in table.column_names:
        if name == drop:
            continue
        values = table.column(name).to_pylist()
        if pa.types.is_string(table.column(name).type):
            codes = {v: float(i) for i, v in enumerate(sorted({v for v in values if v}))}
            columns.append([codes[v] if v else np.nan for v in values])
        else:
            columns.append([np.nan if v is None else float(v) for v in values])
    return np.array(columns, dtype=np.float64).T


def _train(x: np.ndarray, y: np.ndarray, rounds: int = 40, **params: Any) -> Any:
    import lightgbm as lgb

    settings = {"verbose": -1, "num_leaves": 15, "seed": 0, **params}
    return lgb.train(settings, lgb.Dataset(x, y, params={"verbose": -1}), rounds)


def test_parsed_text_equals_the_dump_on_adult(adult: tuple[Any, ...]) -> None:
    parts, x, _, _ = adult
    booster = parts.model.booster_
    parsed, built = _both(booster)
    assert (parsed.features, parsed.outputs) == (built.features, built.outputs)
    np.testing.assert_allclose(parsed.bias, built.bias, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.sort(parsed.threshold), np.sort(built.threshold))
    rows = x[:200]
    np.testing.assert_allclose(parsed(rows), built(rows), rtol=0, atol=1e-12)
    theirs = booster.predict(rows, pred_contrib=True).reshape(len(rows), 1, -1)
    np.testing.assert_allclose(parsed(rows), theirs, rtol=0, atol=1e-9)


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False}])
def test_parsed_text_equals_the_dump_with_each_missing_rule(params: dict[str, Any]) -> None:
    table = pv.read_csv(HOUSING)
    y = np.asarray(table.column("median_house_value").to_pylist(), dtype=np.float64) / 1e5
    x = _numeric(table, "median_house_value")
    x[::7, 4], x[::11, 2] = 0.0, np.nan
    booster = _train(x, y, objective="regression", **params)
    parsed, built = _both(booster)
    rows = x[np.isnan(x).any(axis=1) | (x == 0.0).any(axis=1)][:200]
    np.testing.assert_allclose(parsed(rows), built(rows), rtol=0, atol=1e-12)


def test_parsed_multiclass_with_a_single_leaf_tree_and_best_iteration() -> None:
    import lightgbm as lgb

    table = pv.read_csv(PENGUINS)
    species = np.asarray(table.column("species").to_pylist())
    y = np.searchsorted(np.unique(species), species)
    x = _numeric(table, "species")
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_leaves": 8,
              "min_data_in_leaf": 20, "learning_rate": 0.3, "min_gain_to_split": 1}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(x, y, params={"verbose": -1}), 30)
    trees = booster.dump_model()["tree_info"][: 12 * 3]  # the 12 rounds kept below
    assert any("split_index" not in t["tree_structure"] for t in trees)  # single leaves
    booster.best_iteration = 12  # as early stopping leaves it: predictions use 12 rounds
    shap = TreeShap.of(booster, x.shape[1])  # the best iteration's trees only
    assert shap is not None
    theirs = booster.predict(x, pred_contrib=True).reshape(len(x), 3, -1)
    np.testing.assert_allclose(shap(x), theirs, rtol=0, atol=1e-9)


def test_text_it_does_not_cover_gives_none() -> None:
    import lightgbm as lgb

    table = pv.read_csv(PENGUINS)
    x = _numeric(table, "species")
    y = (np.asarray(table.column("species").to_pylist()) == "Gentoo").astype(np.int64)
    categorical = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
        lgb.Dataset(x, y, categorical_feature=[0], params={"verbose": -1}), 20,
    )  # fmt: skip
    assert TreeShap.parse(categorical.model_to_string()) is None
    filled = np.nan_to_num(x)
    linear = _train(filled, y.astype(np.float64), objective="regression", linear_tree=True)
    assert TreeShap.parse(linear.model_to_string()) is None
    forest = _train(filled, y, objective="binary", boosting="rf", bagging_freq=1,
                    bagging_fraction=0.5)  # fmt: skip
    assert TreeShap.parse(forest.model_to_string()) is None


def test_stored_importance_equals_pred_contrib(adult: tuple[Any, ...]) -> None:
    parts, x, y, prediction = adult
    ours = mean_abs_shap(parts, x, prediction)
    theirs = global_importance(parts, x, prediction=prediction)  # pred_contrib: > 16 rows
    assert list(ours) == list(theirs)  # the same columns, largest first
    np.testing.assert_allclose(list(ours.values()), list(theirs.values()), rtol=1e-12, atol=0)
    for concurrent in (False, True):
        shap, permutation = global_explanations(parts, x, y, prediction=prediction,
                                                concurrent=concurrent)  # fmt: skip
        assert shap == ours and permutation is not None


def test_other_flavors_go_through_global_importance(adult: tuple[Any, ...]) -> None:
    from sklearn.linear_model import LogisticRegression

    parts, x, y, _ = adult
    model = LogisticRegression(max_iter=200).fit(np.nan_to_num(x[:500]), y[:500])
    linear = ModelParts(parts.pipeline, model, "binary", "sklearn", parts.classes)
    assert mean_abs_shap(linear, x, None) == {}  # no exact contributions: permutation covers it
