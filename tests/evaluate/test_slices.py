"""The worst-slice finder: a slice planted in real Adult predictions comes out on top;
Benjamini-Hochberg keeps false discoveries rare when the loss has no structure."""

from __future__ import annotations

import numpy as np
import pytest

from keel.evaluate.slices import benjamini_hochberg, find_worst_slices, row_loss
from tests.evaluate.conftest import AdultPredictions

COLUMNS = ("age", "workclass", "education", "marital-status", "occupation", "relationship",
           "race", "sex", "hours-per-week", "native-country")  # fmt: skip


def features(adult: AdultPredictions) -> dict[str, np.ndarray]:
    return {c: adult.table.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS}


def test_finds_a_planted_bad_slice(adult_predictions: AdultPredictions) -> None:
    adult = adult_predictions
    cols = features(adult)
    planted = (cols["occupation"] == "Sales") & (cols["sex"] == "Female")
    proba = adult.proba.copy()
    proba[planted] = 1.0 - proba[planted]  # the model is wrong on that slice
    loss = row_loss("binary", adult.y, proba)
    found, tested = find_worst_slices(cols, loss, min_size=30)
    assert tested > 500
    names = [f.name for f in found]
    assert any(set(f.predicates) == {("occupation", "Sales"), ("sex", "Female")}
               for f in found[:3]), names  # fmt: skip
    top = found[0]
    assert top.effect_size >= 0.8 and top.q_value < 1e-6 and top.loss > top.counterpart_loss
    assert top.rows >= 30
    assert [f.effect_size for f in found] == sorted((f.effect_size for f in found), reverse=True)


def test_no_structure_few_discoveries(adult_predictions: AdultPredictions) -> None:
    adult = adult_predictions
    loss = np.random.default_rng(3).exponential(size=len(adult.y))  # independent of the data
    found, tested = find_worst_slices(features(adult), loss, min_size=30, min_effect=0.0)
    assert tested > 500
    assert len(found) <= 0.05 * tested * 0.2  # BH: rare, far below alpha * tested


def test_numeric_columns_are_binned_and_ids_skipped() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    age = rng.integers(18, 90, n).astype(float)
    loss = np.where(age >= 80, 3.0, 0.5) + rng.random(n)
    ids = np.array([f"id{i}" for i in range(n)], dtype=object)
    found, _ = find_worst_slices({"age": age, "id": ids}, loss, crossings=False)
    assert found and found[0].predicates[0][0] == "age"
    assert found[0].predicates[0][1].startswith("[")
    assert all(f.predicates[0][0] != "id" for f in found)


def test_benjamini_hochberg_by_hand() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.20])
    q = benjamini_hochberg(p)
    assert q == pytest.approx([0.04, 0.0533333, 0.0533333, 0.20], rel=1e-5)
    assert benjamini_hochberg(np.array([])).size == 0


def test_row_loss_per_task() -> None:
    y = np.array([1, 0])
    assert row_loss("binary", y, np.array([0.5, 0.5])) == pytest.approx([np.log(2)] * 2)
    proba = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    assert row_loss("multiclass", np.array([0, 2]), proba) == pytest.approx(
        [np.log(2), -np.log(0.8)]
    )
    assert row_loss("regression", np.array([1.0]), np.array([3.0])) == pytest.approx([4.0])
