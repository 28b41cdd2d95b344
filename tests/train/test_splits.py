"""Split invariants (Hypothesis for time and group) and cross-validation on real data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import ConfigError, DataValidationError
from keel.train import cross_validate
from keel.train.splits import fold_indices, validation_split

from .conftest import Data

timestamps = st.lists(st.integers(0, 40), min_size=10, max_size=200)
groups = st.lists(st.sampled_from("abcdefghij"), min_size=10, max_size=200)
fractions = st.floats(0.05, 0.45)


def partition(a: np.ndarray, b: np.ndarray, n: int) -> None:
    assert len(np.intersect1d(a, b)) == 0
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(n))


@settings(max_examples=80, deadline=None)
@given(timestamps, fractions)
def test_time_split_puts_validation_strictly_later(values: list[int], fraction: float) -> None:
    t = np.array(values)
    y = np.zeros(len(t))
    if len(np.unique(t)) < 2:
        with pytest.raises(DataValidationError, match="distinct timestamps"):
            validation_split(
                y,
                task="regression",
                fraction=fraction,
                seed=0,
                method="time",
                values=t,
                column="ts",
            )
        return
    try:
        fit, valid = validation_split(
            y, task="regression", fraction=fraction, seed=0, method="time", values=t, column="ts"
        )
    except DataValidationError:
        # only when the rows after the earliest timestamp cannot fill the validation share
        assert (t > t.min()).sum() < np.ceil(len(t) * fraction)
        return
    partition(fit, valid, len(t))
    assert len(fit) and len(valid)
    assert t[fit].max() < t[valid].min()
    assert len(valid) >= np.ceil(len(t) * fraction)
    assert np.all(np.diff(fit) > 0)  # training rows keep their order: nothing shuffled


@settings(max_examples=60, deadline=None)
@given(timestamps, st.integers(2, 5))
def test_time_folds_are_expanding_windows(values: list[int], folds: int) -> None:
    t = np.array(values)
    y = np.zeros(len(t))
    if len(np.unique(t)) < folds + 1:
        with pytest.raises(DataValidationError):
            fold_indices(y, task="regression", folds=folds, seed=0, method="time", values=t)
        return
    pairs = fold_indices(y, task="regression", folds=folds, seed=0, method="time", values=t)
    assert 1 <= len(pairs) <= folds
    previous = -1
    for train, held in pairs:
        assert len(train) and len(held)
        assert t[train].max() < t[held].min()
        assert len(train) > previous  # each window grows
        previous = len(train)


@settings(max_examples=80, deadline=None)
@given(groups, fractions, st.integers(0, 5))
def test_group_split_never_shares_a_group(values: list[str], fraction: float, seed: int) -> None:
    g = np.array(values, dtype=object)
    y = np.zeros(len(g))
    if len(set(values)) < 2:
        with pytest.raises(DataValidationError, match="one group"):
            validation_split(
                y,
                task="regression",
                fraction=fraction,
                seed=seed,
                method="group",
                values=g,
                column="user",
            )
        return
    fit, valid = validation_split(
        y, task="regression", fraction=fraction, seed=seed, method="group", values=g, column="user"
    )
    partition(fit, valid, len(g))
    assert not set(g[fit]) & set(g[valid])


@settings(max_examples=40, deadline=None)
@given(groups, st.integers(2, 4))
def test_group_folds_hold_each_group_out_once(values: list[str], folds: int) -> None:
    g = np.array(values, dtype=object)
    if len(set(values)) < folds:
        return
    pairs = fold_indices(
        np.zeros(len(g)), task="regression", folds=folds, seed=0, method="group", values=g
    )
    held = np.concatenate([b for _, b in pairs])
    assert sorted(held.tolist()) == list(range(len(g)))
    for train, test in pairs:
        assert not set(g[train]) & set(g[test])


def test_stratified_split_keeps_class_shares(multiclass_data: Data) -> None:
    y = multiclass_data.y
    fit, valid = validation_split(y, task="multiclass", fraction=0.2, seed=0)
    partition(fit, valid, len(y))
    share = np.bincount(y, minlength=6) / len(y)
    assert np.abs(np.bincount(y[valid], minlength=6) / len(valid) - share).max() < 0.01


def test_time_split_on_real_dates(bike_table: object) -> None:
    import pyarrow as pa

    assert isinstance(bike_table, pa.Table)
    days = np.asarray(bike_table.column("dteday").to_pylist(), dtype=object)
    days = np.array([str(d) for d in days], dtype=object)
    fit, valid = validation_split(
        np.zeros(len(days)),
        task="regression",
        fraction=0.1,
        seed=0,
        method="time",
        values=days,
        column="dteday",
    )
    assert max(days[fit]) < min(days[valid])
    assert 0.1 <= len(valid) / len(days) < 0.12


def test_method_errors_name_the_fix() -> None:
    y = np.zeros(10)
    with pytest.raises(ConfigError, match="classification"):
        validation_split(y, task="regression", fraction=0.2, seed=0, method="stratified")
    with pytest.raises(ConfigError, match=r"split\.column"):
        validation_split(y, task="regression", fraction=0.2, seed=0, method="time")
    with pytest.raises(DataValidationError, match="missing values"):
        validation_split(
            y,
            task="regression",
            fraction=0.2,
            seed=0,
            method="group",
            values=np.array([None, "a"] * 5, dtype=object),
            column="g",
        )


def test_cross_validate_reports_every_fold(regression_data: Data) -> None:
    data = regression_data
    cv = cross_validate(
        data.x,
        data.y,
        flavor="lightgbm",
        task="regression",
        params={"n_estimators": 40, "learning_rate": 0.2},
        seed=0,
        folds=3,
        early_stopping_rounds=5,
    )
    assert cv["method"] == "random" and [f["fold"] for f in cv["folds"]] == [1, 2, 3]
    assert sum(f["test_rows"] for f in cv["folds"]) == len(data.y)
    for fold in cv["folds"]:
        assert fold["metrics"]["r2"] > 0.6 and fold["best_iteration"] >= 1
    r2 = [f["metrics"]["r2"] for f in cv["folds"]]
    assert cv["mean"]["r2"] == pytest.approx(np.mean(r2))
    assert cv["std"]["r2"] == pytest.approx(np.std(r2))
