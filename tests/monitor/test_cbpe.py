"""CBPE: estimated accuracy and ROC AUC track the realised ones on Adult, in file order and
sorted by age, hours per week and years of education (covariate shift: the young earn less, so
the class balance moves a lot); the calibration picks beta or isotonic by out-of-fold log loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keel.monitor.cbpe import Calibration, estimate_performance, fit_calibration, score_bins

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
        "test": (model.predict_proba(test)[:, 1], y_test),
        "shifts": {k: test[k].to_numpy() for k in ("age", "hours-per-week", "education-num")},
    }


def _realised(score: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    return float(accuracy_score(label, score >= 0.5)), float(roc_auc_score(label, score))


@pytest.mark.parametrize("order", ["file", "age", "hours-per-week", "education-num"])
def test_estimate_tracks_the_realised_metrics(scored: dict[str, Any], order: str) -> None:
    calibration = fit_calibration(*scored["reference"])
    assert calibration is not None and calibration.method == "beta"
    score, label = scored["test"]
    if order != "file":
        sort = np.argsort(scored["shifts"][order], kind="stable")
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
    # NannyML 0.13.1 on the same windows: 0.0069 / 0.0137 / 0.0072 / 0.0078 for ROC AUC and
    # 0.0057 / 0.0068 / 0.0057 / 0.0053 for accuracy (benchmarks/monitor/cbpe.py)
    assert float(np.mean(errors["accuracy"])) < 0.0065
    assert float(np.mean(errors["roc_auc"])) < 0.0110


def test_realised_metrics_from_bins_match_sklearn(scored: dict[str, Any]) -> None:
    score, label = scored["test"]
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
    assert fit_calibration(truth, truth > 0.5) is None  # separated: nothing to calibrate


def test_the_tails_keep_the_model_s_ranking(scored: dict[str, Any]) -> None:
    """The youngest 2,000 rows of adult.test sit almost all in the reference's lowest scores.
    Isotonic calibration maps that block to P = 0 and ties it, so CBPE saw a near-perfect
    ranking there (0.94-0.97 against a realised 0.87); the beta map keeps every score's own
    probability, strictly inside (0, 1) and strictly increasing."""
    calibration = fit_calibration(*scored["reference"])
    assert calibration is not None
    score, _ = scored["test"]
    youngest = score[np.argsort(scored["shifts"]["age"], kind="stable")[:WINDOW]]
    probability = calibration(np.sort(youngest))
    assert probability.min() > 0 and probability.max() < 1
    assert np.all(np.diff(probability) >= 0)
    assert np.unique(probability).size > 0.9 * np.unique(youngest).size


def test_a_smooth_distortion_gets_beta_and_a_step_gets_isotonic() -> None:
    rng = np.random.default_rng(2)
    score = rng.random(20_000)
    logit = np.log(score / (1 - score))
    truth = 1 / (1 + np.exp(-(2.0 * logit + 0.5)))  # over-cautious scores: Platt-shaped
    calibration = fit_calibration(score, rng.random(score.size) < truth)
    assert calibration is not None and calibration.method == "beta"
    assert np.abs(calibration(score) - truth).mean() < 0.01
    a, b, _ = calibration.parameters
    assert a == pytest.approx(2.0, abs=0.2) and b == pytest.approx(2.0, abs=0.2)
    step = np.where(score < 0.5, 0.1, 0.9)  # not smooth on the log-odds: beta cannot follow
    calibration = fit_calibration(score, rng.random(score.size) < step)
    assert calibration is not None and calibration.method == "isotonic"
    assert np.abs(calibration(score) - step).mean() < 0.02


def test_calibrated_scores_stay_put() -> None:
    rng = np.random.default_rng(3)
    score = rng.random(20_000)
    calibration = fit_calibration(score, rng.random(score.size) < score)
    assert calibration is not None and calibration.method == "beta"
    assert np.abs(calibration(score) - score).max() < 0.03


def test_a_useless_score_is_estimated_at_chance() -> None:
    rng = np.random.default_rng(4)
    score = rng.random(5_000)
    calibration = fit_calibration(score, rng.random(score.size) < 0.3)
    assert calibration is not None
    probability = calibration(score)
    assert np.all(np.diff(calibration(np.linspace(0, 1, 101))) >= 0)  # never decreasing
    estimate = estimate_performance(score_bins(score, probability))
    assert estimate.roc_auc is not None and estimate.roc_auc_error is not None
    assert abs(estimate.roc_auc - 0.5) < 3 * estimate.roc_auc_error
    assert float(probability.mean()) == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize(
    "calibration",
    [
        Calibration(method="beta", parameters=(0.9, 1.1, -0.2)),
        Calibration((0.1, 0.4, 0.6), (0.05, 0.3, 0.8)),
    ],
)
def test_calibration_round_trips_through_json(calibration: Calibration) -> None:
    import orjson

    again = Calibration.from_json(orjson.loads(orjson.dumps(calibration.to_json())))
    assert again == calibration
    grid = np.linspace(0, 1, 11)
    assert np.array_equal(again(grid), calibration(grid))


def test_a_cache_from_before_beta_is_read_as_isotonic(tmp_path: Path) -> None:
    """A version compacted with an isotonic map keeps it: its stored sketches summed it."""
    from keel.monitor.calibrate import _read

    cache = tmp_path / "calibration.json"
    cache.write_text('{"calibrated": true, "scores": [0.1, 0.9], "probabilities": [0.2, 0.7]}')
    calibration = _read(cache)
    assert calibration is not None and calibration.method == "isotonic"
    assert calibration(np.array([0.5]))[0] == pytest.approx(0.45)
    cache.write_text('{"calibrated": true, "method": "beta", "parameters": [1.0]}')
    assert _read(cache) is None  # malformed: uncalibrated, not a crash


@given(hnp.arrays(np.float64, st.integers(2, 200), elements=st.floats(0, 1)))
def test_an_empty_class_gives_no_auc(scores: np.ndarray) -> None:
    estimate = estimate_performance(score_bins(scores, np.zeros(scores.size)))
    assert estimate.roc_auc is None and estimate.rows == scores.size
    assert estimate.accuracy == pytest.approx(float(np.mean(np.minimum(scores * 500, 499) < 250)))
