"""Keel's vectorised TreeSHAP equals LightGBM's ``pred_contrib`` on real data.

Adult (binary, the Keel pipeline's features), Palmer penguins (multiclass, missing values),
California housing (regression, missing values as NaN, as zero, and not handled), and the
fallback to ``pred_contrib`` for a model with categorical splits.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pytest

from keel.evaluate import explain, treeshap
from keel.evaluate.explain import ModelParts, explain_matrix
from keel.evaluate.treeshap import TreeShap
from tests.evaluate import treeshap_reference as reference

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
HOUSING = SHARED / "california-housing" / "housing.csv"


def _train(x: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    import lightgbm as lgb

    settings = {"verbose": -1, "num_leaves": 31, "learning_rate": 0.1, "seed": 0, **params}
    rounds = settings.pop("rounds", 60)
    return lgb.train(settings, lgb.Dataset(x, y, params={"verbose": -1}), rounds)


def _same(booster: Any, x: np.ndarray) -> np.ndarray:
    """Keel's values for every row against pred_contrib (to 1e-9) and the raw margin."""
    shap = TreeShap.of(booster, x.shape[1])
    assert shap is not None
    ours = shap(x)
    theirs = booster.predict(x, pred_contrib=True).reshape(ours.shape)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    margin = booster.predict(x, raw_score=True).reshape(len(x), -1)
    np.testing.assert_allclose(ours.sum(axis=2), margin, rtol=0, atol=1e-6)
    return ours


def _numeric(table: pa.Table, drop: str) -> np.ndarray:
    """Every column as float64: numbers as they are, strings as codes, nulls as NaN."""
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


def test_adult_1000_rows_every_column_equal_pred_contrib(
    adult_parts: ModelParts, adult_test_table: pa.Table
) -> None:
    x = adult_parts.pipeline.transform(adult_test_table.slice(0, 1000))
    ours = _same(adult_parts.model.booster_, x)
    assert np.count_nonzero(np.abs(ours[:, 0, :-1]).max(axis=0)) > 10  # many features used


def test_a_few_rows_are_explained_by_it_and_many_by_pred_contrib(
    adult_parts: ModelParts, adult_test_table: pa.Table
) -> None:
    x = adult_parts.pipeline.transform(adult_test_table.slice(0, explain.SMALL_BATCH + 1))
    few = explain_matrix(adult_parts, x[: explain.SMALL_BATCH])
    many = explain_matrix(adult_parts, x)
    assert (few.method, many.method) == ("keel.treeshap", "lightgbm.pred_contrib")
    np.testing.assert_allclose(few.contributions, many.contributions[:-1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(few.base_value, many.base_value, rtol=0, atol=1e-9)
    one = explain_matrix(adult_parts, x[:1])
    assert one.method == "keel.treeshap"
    np.testing.assert_array_equal(one.contributions[0], few.contributions[0])


def test_penguins_multiclass_with_missing_values() -> None:
    table = pv.read_csv(PENGUINS)
    species = np.asarray(table.column("species").to_pylist())
    y = np.searchsorted(np.unique(species), species)
    x = _numeric(table, "species")
    assert np.isnan(x).any()  # the penguins without measurements or sex
    booster = _train(x, y, objective="multiclass", num_class=3, num_leaves=8, min_data_in_leaf=5)
    ours = _same(booster, x)
    assert ours.shape == (len(x), 3, x.shape[1] + 1)


@pytest.mark.parametrize(
    ("params", "kind"),
    [({}, "NaN"), ({"zero_as_missing": True}, "Zero"), ({"use_missing": False}, "None")],
)
def test_housing_regression_with_each_missing_value_rule(params: dict[str, Any], kind: str) -> None:
    table = pv.read_csv(HOUSING)
    y = np.asarray(table.column("median_house_value").to_pylist(), dtype=np.float64) / 1e5
    x = _numeric(table, "median_house_value")
    x[::7, 4] = 0.0  # zeros beside the NaNs of total_bedrooms
    x[::11, 2] = np.nan
    booster = _train(x, y, objective="regression", **params)
    rules = {n["missing_type"] for t in booster.dump_model()["tree_info"] for n in _splits(t)}
    assert kind in rules
    _same(booster, x[:1000])
    _same(booster, x[np.isnan(x).any(axis=1) | (x == 0.0).any(axis=1)][:300])


def _splits(tree: dict[str, Any]) -> list[dict[str, Any]]:
    stack, found = [tree["tree_structure"]], []
    while stack:
        node = stack.pop()
        if "split_index" in node:
            found.append(node)
            stack += [node["left_child"], node["right_child"]]
    return found


def test_categorical_splits_fall_back_to_pred_contrib() -> None:
    import lightgbm as lgb

    table = pv.read_csv(PENGUINS)
    x = _numeric(table, "species")
    y = (np.asarray(table.column("species").to_pylist()) == "Gentoo").astype(np.int64)
    data = lgb.Dataset(x, y, categorical_feature=[0], params={"verbose": -1})
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_per_group": 5,
                         "cat_smooth": 1, "num_leaves": 8}, data, 30)  # fmt: skip
    assert any(n["decision_type"] == "==" for t in booster.dump_model()["tree_info"]
               for n in _splits(t))  # fmt: skip
    assert TreeShap.of(booster, x.shape[1]) is None
    model = SimpleNamespace(booster_=booster)
    for rows in (x[:1], x[:3]):
        raw, method = explain._tree_contributions(model, "lightgbm", rows, 1)
        assert method == "lightgbm.pred_contrib"
        expected = booster.predict(rows, pred_contrib=True).reshape(raw.shape)
        np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-12)
    assert booster in explain._SINGLE  # one row: LightGBM's single-row fast path


def test_a_model_of_other_width_or_too_large_is_not_explained_by_it(
    adult_parts: ModelParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    booster = adult_parts.model.booster_
    assert TreeShap.of(booster, booster.num_feature()) is not None
    assert TreeShap.of(booster, booster.num_feature() + 1) is None
    monkeypatch.setattr(treeshap, "_MAX_ELEMENTS", 1000)  # bounded memory: pred_contrib
    assert reference.build(booster.dump_model()) is None
