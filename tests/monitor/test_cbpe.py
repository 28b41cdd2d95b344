"""CBPE: estimated accuracy and ROC AUC track the realised ones on Adult, in file order and
sorted by age (covariate shift: the young earn less, so the class balance moves a lot)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keel.monitor.cbpe import estimate_performance, fit_calibration, score_bins

WINDOW = 2000
TOLERANCE = {"accuracy": 0.03, "roc_auc": 0.03}  # and within 3 sampling errors


def _frames(train_table: pa.Table, test_table: pa.Table) -> tuple[Any, Any]:
    """Both as pandas, text columns as categoricals over the training categories."""
    import pandas as pd

    train, test = train_table.to_pandas(), test_table.to_pandas()
    for field in train_table.schema:
        if pa.types.is_string(field.type) and field.name != "income":
            categories = sorted(set(train[field.name].dropna()))
            for frame in (train, test):
                frame[field.name] = pd.Categorical(frame[field.name], categories=categories)
    return train, test


@pytest.fixture(scope="module")
def scored(adult_train_table: pa.Table, adult_test_table: pa.Table) -> dict[str, Any]:
    """A LightGBM model fitted on 80% of adult.data; the other 20% is the reference."""
    lightgbm = pytest.importorskip("lightgbm")
    train, test = _frames(adult_train_table, adult_test_table)
    y = (train.pop("income") == ">50K").to_numpy(int)
    y_test = (test.pop("income") == ">50K").to_numpy(int)
    rng = np.random.default_rng(0)
    is_reference = rng.random(len(train)) < 0.2
    model = lightgbm.LGBMClassifier(n_estimators=150, learning_rate=0.1, verbose=-1)
    model.fit(train[~is_reference], y[~is_reference])
    return {
        "reference": (model.predict_proba(train[is_reference])[:, 1], y[is_reference]),
        "test": (model.predict_proba(test)[:, 1], y_test, test["age"].to_numpy()),
    }


def _realised(score: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    return float(accuracy_score(label, score >= 0.5)), float(roc_auc_score(label, score))


@pytest.mark.parametrize("order", ["file", "age"])
def test_estimate_tracks_the_realised_metrics(scored: dict[str, Any], order: str) -> None:
    calibration = fit_calibration(*scored["reference"])
    score, label, age = scored["test"]
    if order == "age":
        sort = np.argsort(age, kind="stable")
        score, label = score[sort], label[sort]
    errors: dict[str, list[float]] = {"accuracy": [], "roc_auc": []}
    realised_values = []
    for start in range(0, score.size - WINDOW + 1, WINDOW):
        window = slice(start, start + WINDOW)
        probability = score[window] if calibration is None else calibration(score[window])
        estimate = estimate_performance(score_bins(score[window], probability))
        accuracy, auc = _realised(score[window], label[window])
        realised_values.append(accuracy)
        for metric, realised, error in (
            ("accuracy", accuracy, estimate.accuracy_error),
            ("roc_auc", auc, estimate.roc_auc_error),
        ):
            value = getattr(estimate, metric)
            assert value is not None and error is not None
            gap = abs(value - realised)
            errors[metric].append(gap)
            assert gap <= max(TOLERANCE[metric], 3 * error), (metric, start, value, realised)
    assert len(realised_values) == 8
    if order == "age":  # the shift is real: accuracy moves by over 10 points across windows
        assert max(realised_values) - min(realised_values) > 0.1
    assert float(np.mean(errors["accuracy"])) < 0.015
    assert float(np.mean(errors["roc_auc"])) < 0.015


def test_realised_metrics_from_bins_match_sklearn(scored: dict[str, Any]) -> None:
    score, label, _ = scored["test"]
    realised = estimate_performance(score_bins(score, label))
    accuracy, auc = _realised(score, label)
    assert realised.accuracy == pytest.approx(accuracy, abs=2e-3)  # bins at 0.5 exactly
    assert realised.roc_auc == pytest.approx(auc, abs=1e-3)  # ties inside a bin


def test_calibration_is_monotone_and_skipped_when_useless() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random(20_000)
    label = (rng.random(truth.size) < truth).astype(int)
    skewed = truth**3  # under-confident scores: calibration must help
    calibration = fit_calibration(skewed, label)
    assert calibration is not None
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(calibration(grid)) >= 0)
    assert np.abs(calibration(skewed) - truth).mean() < 0.05
    assert fit_calibration(truth, np.zeros(truth.size, dtype=int)) is None  # one class


@given(hnp.arrays(np.float64, st.integers(2, 200), elements=st.floats(0, 1)))
def test_an_empty_class_gives_no_auc(scores: np.ndarray) -> None:
    estimate = estimate_performance(score_bins(scores, np.zeros(scores.size)))
    assert estimate.roc_auc is None and estimate.rows == scores.size
    assert estimate.accuracy == pytest.approx(float(np.mean(np.minimum(scores * 500, 499) < 250)))
