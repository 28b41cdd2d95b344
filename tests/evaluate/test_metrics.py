"""Binary metrics against scikit-learn, slice gaps, and gates on plain metric names."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from keel.config import EvaluateConfig
from keel.evaluate.bootstrap import BootstrapSettings
from keel.evaluate.evaluation import Estimate, Evaluation, MetricSet
from keel.evaluate.gates import evaluate_gates
from keel.evaluate.metrics import binary_metrics, slice_metrics


def check_gates(metrics: dict[str, Any], gates: list[tuple[str, str, float]]) -> list[Any]:
    """The gates of an evaluation with these point metrics: ``{gate, value, passed}`` each."""
    estimates = {k: Estimate(v) for k, v in metrics.items()}
    ev = Evaluation("binary", "", (), 0.5, BootstrapSettings(0), 30, MetricSet(10, estimates))
    return [{"gate": g.gate, "value": g.value, "passed": g.passed}
            for g in evaluate_gates(ev, gates)]  # fmt: skip


def labelled(n: int = 500, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    proba = np.clip(0.35 * y + rng.random(n) * 0.65, 0.0, 1.0)
    return y, proba


def test_binary_metrics_match_sklearn() -> None:
    y, proba = labelled()
    predicted = (proba >= 0.5).astype(int)
    metrics = binary_metrics(y, proba)
    assert metrics["rows"] == 500
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, proba))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, proba))
    assert metrics["precision"] == pytest.approx(precision_score(y, predicted))
    assert metrics["recall"] == pytest.approx(recall_score(y, predicted))
    assert metrics["positive_rate"] == pytest.approx(predicted.mean())
    assert metrics["base_rate"] == pytest.approx(y.mean())
    assert 0.5 < metrics["roc_auc"] < 1.0


def test_threshold_moves_the_decisions() -> None:
    y, proba = labelled()
    low, high = binary_metrics(y, proba, threshold=0.2), binary_metrics(y, proba, threshold=0.8)
    assert low["positive_rate"] > high["positive_rate"]
    assert low["recall"] >= high["recall"]
    assert low["roc_auc"] == high["roc_auc"]  # threshold-free


def test_hand_example() -> None:
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    assert metrics["roc_auc"] == 0.75
    assert metrics["accuracy"] == 0.5
    assert metrics["precision"] == 0.5
    assert metrics["recall"] == 0.5


def test_single_class_has_no_auc_and_no_warning() -> None:
    metrics = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.7, 0.2]))
    assert metrics["roc_auc"] is None
    assert metrics["recall"] == 0.0
    assert metrics["precision"] == 0.0
    assert metrics["log_loss"] > 0


def test_extreme_probabilities_keep_log_loss_finite() -> None:
    metrics = binary_metrics(np.array([0, 1]), np.array([1.0, 0.0]))
    assert np.isfinite(metrics["log_loss"])
    assert metrics["accuracy"] == 0.0


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 40), elements=st.floats(0.0, 1.0)))
def test_agrees_with_sklearn_on_random_inputs(proba: np.ndarray) -> None:
    y = np.array([i % 2 for i in range(len(proba))])
    metrics = binary_metrics(y, proba)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, proba))
    predicted = (proba >= 0.5).astype(int)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["log_loss"] == pytest.approx(
        log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])
    )


def test_slice_metrics_groups_and_gaps() -> None:
    y = np.array([1, 0, 1, 0, 1, 0])
    proba = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.3])
    groups = {"sex": np.array(["M", "M", "M", "F", "F", "F"], dtype=object)}
    result = slice_metrics(y, proba, groups)["sex"]
    assert set(result) == {"M", "F", "_gap"}
    assert result["M"]["rows"] == 3 and result["M"]["accuracy"] == 1.0
    assert result["F"]["accuracy"] == pytest.approx(1 / 3)
    assert result["M"]["positive_rate"] == pytest.approx(2 / 3)
    assert result["F"]["positive_rate"] == pytest.approx(1 / 3)
    assert result["_gap"] == {
        "selection_rate_difference": pytest.approx(1 / 3),
        "accuracy_difference": pytest.approx(2 / 3),
    }
    # each slice equals the overall metrics computed on that subset
    mask = groups["sex"] == "F"
    assert result["F"] == binary_metrics(y[mask], proba[mask])


def test_slice_metrics_null_group_and_several_columns() -> None:
    y = np.array([1, 0, 1, 0])
    proba = np.array([0.9, 0.1, 0.8, 0.7])
    groups = {
        "race": np.array(["A", None, "A", "B"], dtype=object),
        "sex": np.array(["M", "M", "M", "M"], dtype=object),
    }
    result = slice_metrics(y, proba, groups)
    assert set(result["race"]) == {"A", "B", "<null>", "_gap"}
    assert result["race"]["<null>"]["rows"] == 1
    assert result["sex"]["_gap"] == {"selection_rate_difference": 0.0, "accuracy_difference": 0.0}


def test_gates_pass_and_fail() -> None:
    metrics = {"roc_auc": 0.91, "log_loss": 0.3, "accuracy": 0.85}
    gates = EvaluateConfig(
        gates=["roc_auc >= 0.9", "log_loss < 0.25", "accuracy == 0.85", "roc_auc > 0.91"]
    ).parsed_gates()
    assert check_gates(metrics, gates) == [
        {"gate": "roc_auc >= 0.9", "value": 0.91, "passed": True},
        {"gate": "log_loss < 0.25", "value": 0.3, "passed": False},
        {"gate": "accuracy == 0.85", "value": 0.85, "passed": True},
        {"gate": "roc_auc > 0.91", "value": 0.91, "passed": False},
    ]


def test_unknown_or_missing_metric_fails_the_gate() -> None:
    results = check_gates({"roc_auc": None}, [("roc_auc", ">=", 0.5), ("f1", ">=", 0.1)])
    assert [r["passed"] for r in results] == [False, False]
    assert results[1] == {"gate": "f1 >= 0.1", "value": None, "passed": False}


def test_no_gates_pass_trivially() -> None:
    assert check_gates({"roc_auc": 0.5}, []) == []


def test_multiclass_metrics_match_sklearn() -> None:
    from sklearn.metrics import f1_score

    from keel.evaluate.metrics import multiclass_metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = multiclass_metrics(y, proba)
    predicted = proba.argmax(axis=1)
    assert metrics["rows"] == 400
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, proba))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    assert 0.25 < metrics["accuracy"] < 1.0


def test_multiclass_auc_is_none_when_a_class_is_absent() -> None:
    from keel.evaluate.metrics import multiclass_metrics

    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    metrics = multiclass_metrics(np.array([0, 1, 0]), proba)
    assert metrics["roc_auc"] is None and metrics["accuracy"] == 1.0


def test_regression_metrics_by_hand() -> None:
    from keel.evaluate.metrics import regression_metrics

    metrics = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert metrics["rmse"] == pytest.approx(1.0)
    assert metrics["mae"] == pytest.approx(0.5)
    assert metrics["r2"] == pytest.approx(1 - 4 / 5)
    assert regression_metrics(np.array([2.0, 2.0]), np.array([1.0, 3.0]))["r2"] is None


def test_slices_and_gates_per_task() -> None:
    from keel.evaluate.metrics import task_metrics

    y = np.array([1.0, 2.0, 3.0, 10.0])
    prediction = np.array([1.0, 2.0, 3.0, 4.0])
    groups = {"city": np.array(["a", "a", "b", "b"], dtype=object)}
    result = slice_metrics(y, prediction, groups, task="regression")["city"]
    assert result["a"]["rmse"] == 0.0
    assert result["_gap"] == {"rmse_difference": pytest.approx(np.sqrt(18))}
    metrics = task_metrics("regression", y, prediction)
    gates = EvaluateConfig(gates=["rmse <= 5", "r2 >= 0.9"]).parsed_gates()
    assert [g["passed"] for g in check_gates(metrics, gates)] == [True, False]
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    codes = np.array([0, 1, 2, 0])
    per = slice_metrics(codes, proba, groups, task="multiclass")["city"]
    assert per["a"]["accuracy"] == 1.0 and per["b"]["accuracy"] == 0.5
    assert per["_gap"] == {"accuracy_difference": 0.5}
    multi = task_metrics("multiclass", codes, proba)
    assert check_gates(multi, [("macro_f1", ">=", 0.5)])[0]["passed"]
