"""Keel's leaf-mask predictions equal LightGBM's ``predict`` on real data, and permutation
importance computed with them equals the one LightGBM predicts.

Adult (binary, the Keel pipeline's features, with NaN and zero injected), Palmer penguins
(multiclass, missing values), California housing (regression under each missing-value rule),
and the models it leaves to LightGBM.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pytest

from keel.evaluate import importance
from keel.evaluate.explain import ModelParts, fold_matrix
from keel.evaluate.importance import permutation_importance
from keel.evaluate.leafmask import LeafMasks
from keel.evaluate.lgbm_text import Forest
from tests.evaluate.test_treeshap import HOUSING, PENGUINS, _numeric, _train


@pytest.fixture(scope="module")
def adult(adult_parts: ModelParts, adult_test_table: pa.Table) -> tuple[ModelParts, Any]:
    """The shared Adult model (conftest), with 3,000 transformed test rows and their labels."""
    test = adult_test_table.slice(0, 3000)
    labels = np.asarray(test.column("income").to_pylist(), dtype=object).astype(str)
    y_test = (np.char.rstrip(np.char.strip(labels), ".") == ">50K").astype(np.int64)
    return adult_parts, (adult_parts.pipeline.transform(test), y_test)


def _groups(parts: ModelParts) -> list[np.ndarray]:
    _, fold = fold_matrix(parts.pipeline)
    return [np.flatnonzero(fold[:, i] > 0) for i in range(fold.shape[1])]


def _check_swaps(booster: Any, x: np.ndarray, groups: list[np.ndarray], seed: int = 0) -> None:
    """Known rows and rows with each group swapped in from other rows, against predict."""
    masks = LeafMasks.of(booster, x.shape[1])
    assert masks is not None
    known = masks.known_rows(x, groups)
    assert known is not None
    expected = booster.predict(x)
    np.testing.assert_allclose(known.predict(), expected, rtol=0, atol=1e-12)
    rng = np.random.default_rng(seed)
    for g, features in enumerate(groups):
        np.testing.assert_allclose(known.baseline(g), expected, rtol=0, atol=1e-12)
        rows, donors = rng.integers(0, len(x), 500), rng.integers(0, len(x), 500)
        swapped = x[rows].copy()
        swapped[:, features] = x[donors][:, features]
        np.testing.assert_allclose(known.swapped(g, rows, donors), booster.predict(swapped),
                                   rtol=0, atol=1e-12)  # fmt: skip


def test_adult_predictions_and_swaps_equal_lightgbms(adult: tuple[ModelParts, Any]) -> None:
    parts, (x, _) = adult
    booster = parts.model.booster_
    _check_swaps(booster, x[:1500], _groups(parts))
    odd = x[:600].copy()  # missing and zero values where the data has none
    odd[::3, :6] = np.nan
    odd[1::3, :6] = 0.0
    odd[2::5, 6:] = np.nan
    _check_swaps(booster, odd, _groups(parts), seed=1)


def test_penguins_multiclass_with_missing_values() -> None:
    table = pv.read_csv(PENGUINS)
    species = np.asarray(table.column("species").to_pylist())
    y = np.searchsorted(np.unique(species), species)
    x = _numeric(table, "species")
    booster = _train(x, y, objective="multiclass", num_class=3, num_leaves=8, min_data_in_leaf=5)
    groups = [np.array([i]) for i in range(x.shape[1] - 1)]  # the last column in no group
    _check_swaps(booster, x, groups)


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False}])
def test_housing_regression_with_each_missing_value_rule(params: dict[str, Any]) -> None:
    table = pv.read_csv(HOUSING)
    y = np.asarray(table.column("median_house_value").to_pylist(), dtype=np.float64) / 1e5
    x = _numeric(table, "median_house_value")
    x[::7, 4] = 0.0
    x[::11, 2] = np.nan
    booster = _train(x, y, objective="regression", num_leaves=63, **params)
    groups = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5]), np.array([6, 7, 8])]
    _check_swaps(booster, x[:2000], groups)


def test_models_it_does_not_cover_are_left_to_lightgbm() -> None:
    import lightgbm as lgb

    table = pv.read_csv(HOUSING)
    y = np.asarray(table.column("median_house_value").to_pylist(), dtype=np.float64) / 1e5
    x = _numeric(table, "median_house_value")[:3000]
    y = y[:3000]
    wide = _train(x, y, objective="regression", num_leaves=100, rounds=5)  # 64+ leaves a tree
    assert LeafMasks.of(wide, x.shape[1]) is None
    poisson = _train(x, y, objective="poisson", rounds=5)  # an exp transform: not covered
    assert LeafMasks.of(poisson, x.shape[1]) is None
    data = lgb.Dataset(x, y, categorical_feature=[8], params={"verbose": -1})
    categorical = lgb.train({"objective": "regression", "verbose": -1}, data, 5)
    assert Forest.of(categorical) is None and LeafMasks.of(categorical, x.shape[1]) is None
    plain = _train(x, y, objective="regression", rounds=5)
    masks = LeafMasks.of(plain, x.shape[1])
    assert masks is not None and LeafMasks.of(plain, x.shape[1] + 1) is None
    assert masks.known_rows(x, [np.array([0, 1]), np.array([1, 2])]) is None  # overlapping


def test_permutation_importance_equals_the_one_lightgbm_predicts(
    adult: tuple[ModelParts, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, (x, y) = adult
    fast = permutation_importance(parts, x, y, repeats=3, rows=1500, seed=4)
    monkeypatch.setattr(importance, "_known_rows", lambda *_: None)
    slow = permutation_importance(parts, x, y, repeats=3, rows=1500, seed=4)
    assert fast.ranked() == slow.ranked()
    assert fast.baseline == pytest.approx(slow.baseline, abs=1e-12)
    # equal to rounding: near P = 1 the sigmoid maps raw sums one ulp apart to equal or to
    # adjacent probabilities, so a tie here and there (1 / (P x N) ~ 2.4e-6 of AUC each) may go
    # either way
    for column in fast.mean:
        assert fast.mean[column] == pytest.approx(slow.mean[column], abs=1e-5)
        assert fast.std[column] == pytest.approx(slow.std[column], abs=1e-5)
    assert max(fast.mean.values()) > 0.01  # the model uses its columns
