"""Gates on dotted paths into a stored evaluation; the evaluation's JSON round trip; calibration
against scikit-learn; the paired challenger test on synthetic predictions."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from keel.config import EvaluateConfig
from keel.evaluate.calibration import calibration_of, residuals_of
from keel.evaluate.comparison import compare_models
from keel.evaluate.evaluation import Evaluation, evaluate_predictions
from keel.evaluate.gates import evaluate_gates, parse_gate


def data(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sex = rng.choice(np.array(["Female", "Male"], dtype=object), n)
    proba = np.clip(0.3 * y + 0.7 * rng.random(n) + 0.1 * (sex == "Male"), 0, 1)
    return y, proba, sex


def evaluation(*gates: str, **config: object) -> Evaluation:
    y, proba, sex = data()
    group = np.where(np.arange(len(y)) < 10, "Tiny", sex).astype(object)
    cfg = EvaluateConfig(
        slices=["sex", "group"], gates=list(gates), bootstrap={"resamples": 200}, **config
    )  # type: ignore[arg-type]
    return evaluate_predictions("binary", y, proba, config=cfg, classes=["no", "yes"],
                                slices={"sex": sex, "group": group}, sensitive={"sex": sex},
                                search={"sex": sex})  # fmt: skip


def test_dotted_paths_pass_and_fail() -> None:
    ev = evaluation(
        "roc_auc >= 0.5",
        "metrics.roc_auc.ci_low >= 0.99",
        "slices.sex=Female.recall > 0",
        "slices.sex.selection_rate_difference <= 0.01",
        "fairness.sex.demographic_parity_difference <= 0.5",
        "calibration.ece < 1",
        "worst_slices.count >= 0",
    )
    verdicts = {g.path: g.passed for g in ev.gates}
    assert verdicts == {
        "roc_auc": True,
        "metrics.roc_auc.ci_low": False,
        "slices.sex=Female.recall": True,
        "slices.sex.selection_rate_difference": False,
        "fairness.sex.demographic_parity_difference": True,
        "calibration.ece": True,
        "worst_slices.count": True,
    }
    auc = ev.overall.estimates["roc_auc"]
    assert auc.ci_low is not None and auc.ci_high is not None
    assert auc.ci_low < (auc.value or 0) < auc.ci_high
    ci_gate = ev.gates[1]
    assert ci_gate.value == auc.ci_low and ci_gate.bound == 0.99 and ci_gate.op == ">="
    assert "fails >= 0.99" in ci_gate.reason
    assert not ev.promoted


def test_latency_and_size_gates() -> None:
    from dataclasses import replace

    from keel.evaluate.footprint import Footprint

    ev = replace(evaluation(), footprint=Footprint(bytes=2048, rows=200, p50_ms=0.1, p99_ms=0.4))
    gates = [parse_gate(g) for g in ("latency.p99_ms <= 0.3", "size.bytes <= 4096",
                                     "latency.bytes <= 1")]  # fmt: skip
    first, second, third = evaluate_gates(ev, gates)
    assert (first.passed, first.value, second.passed, second.value) == (False, 0.4, True, 2048)
    assert not third.passed and "no latency measure 'bytes'" in third.reason
    stored = orjson.loads(orjson.dumps(ev.to_json()))
    assert Evaluation.from_json(stored).footprint == ev.footprint


def test_small_slices_are_reported_but_do_not_gate() -> None:
    ev = evaluation("slices.group=Tiny.accuracy >= 0.99")
    (gate,) = ev.gates
    assert gate.passed and gate.value is not None
    assert "10 rows < min_slice_size 30: reported, not gated" in gate.reason
    assert ev.slices["group"]["Tiny"].rows == 10


def test_unknown_paths_fail_naming_what_there_is() -> None:
    ev = evaluation("metrics.roc_acu >= 0.5", "fairness.race.demographic_parity_ratio >= 0.8",
                    "slices.sex=Other.recall >= 0")  # fmt: skip
    reasons = [g.reason for g in ev.gates]
    assert not any(g.passed for g in ev.gates)
    assert "no metric 'roc_acu'" in reasons[0] and "roc_auc" in reasons[0]
    assert "no sensitive feature 'race' (there is: sex)" in reasons[1]
    assert "values: Female, Male" in reasons[2]


def test_an_undefined_value_fails_with_its_reason() -> None:
    y, proba, sex = data()
    y = np.zeros_like(y)  # no positives: TPR undefined everywhere
    cfg = EvaluateConfig(gates=["fairness.sex.equalized_odds_difference <= 0.1"],
                         bootstrap={"resamples": 0})  # fmt: skip
    ev = evaluate_predictions("binary", y, proba, config=cfg, classes=["no", "yes"],
                              sensitive={"sex": sex})  # fmt: skip
    (gate,) = ev.gates
    assert not gate.passed and gate.value is None
    assert gate.reason.startswith("undefined: no group") and "tpr" in gate.reason
    assert ev.overall.estimates["roc_auc"].value is None


def test_round_trip_and_legacy_shape() -> None:
    ev = evaluation("roc_auc >= 0.5")
    stored = orjson.loads(orjson.dumps(ev.to_json()))
    again = Evaluation.from_json(stored)
    assert again.to_json() == stored
    assert stored["metrics"]["rows"] == 2000 and isinstance(stored["metrics"]["roc_auc"], float)
    assert set(stored["slices"]["sex"]) == {"Female", "Male", "_gap"}
    assert stored["gates"][0]["gate"] == "roc_auc >= 0.5" and stored["gates"][0]["passed"]
    assert b"NaN" not in orjson.dumps(stored)
    assert evaluate_gates(again, [parse_gate("roc_auc >= 0.5")]) == list(ev.gates)


def test_calibration_matches_sklearn() -> None:
    y, proba, _ = data()
    cal = calibration_of(y, proba, bins=10)
    observed, predicted = calibration_curve(y, proba, n_bins=10, strategy="uniform")
    assert [b[4] for b in cal.bins] == pytest.approx(observed)
    assert [b[3] for b in cal.bins] == pytest.approx(predicted)
    assert cal.brier == pytest.approx(brier_score_loss(y, proba))
    rows = np.array([b[2] for b in cal.bins])
    ece = float(np.sum(rows * np.abs(observed - predicted)) / len(y))
    assert cal.ece == pytest.approx(ece) and cal.mce == pytest.approx(
        np.abs(observed - predicted).max()
    )
    res = residuals_of(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 3.0, 2.0]))
    assert res.mean == -0.25 and res.max_abs == 2.0 and res.quantiles["p50"] == 0.0


def test_paired_comparison_refuses_worse_accepts_equal() -> None:
    y, proba, _ = data()
    noisy = np.clip(proba + np.random.default_rng(1).normal(0, 0.3, len(y)), 0, 1)
    worse = compare_models("binary", y, noisy, proba, metric="roc_auc", champion_ref="m@1")
    assert not worse.passed and worse.delta is not None and worse.delta < 0
    assert worse.p_value is not None and worse.p_value < 0.05
    same = compare_models("binary", y, proba, proba, metric="roc_auc", champion_ref="m@1")
    assert same.passed and same.delta == 0.0 and same.p_value == 1.0
    better = compare_models("binary", y, proba, noisy, metric="log_loss", champion_ref="m@1",
                            require="better")  # fmt: skip
    assert better.passed and better.delta is not None and better.delta > 0
    with pytest.raises(ValueError, match="not one of this task's metrics"):
        compare_models("binary", y, proba, proba, metric="rmse", champion_ref="m@1")


def test_config_names_the_field_and_allowed_values() -> None:
    with pytest.raises(ValueError, match="starts with one of metrics, slices, fairness"):
        EvaluateConfig(gates=["fairnes.sex.demographic_parity_difference <= 0.1"])
    with pytest.raises(ValueError, match="'not_worse' or 'better'"):
        EvaluateConfig(challenger_vs_champion={"metric": "roc_auc", "require": "best"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resamples"):
        EvaluateConfig(bootstrap={"resamples": -1})  # type: ignore[arg-type]
