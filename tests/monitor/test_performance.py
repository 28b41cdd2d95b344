"""Realised performance from labels joined to a prediction log of Adult rows: per window, equal
to the metric computed directly on the joined rows; late labels change past windows; A/B arms
with a significance test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from keel.monitor.arms import compare_joined
from keel.monitor.feedback import LabelSpec, submit_labels
from keel.monitor.performance import join_labels, realised_performance
from keel.monitor.window import LogFilter, parse_window
from keel.store import MetadataStore
from keel.store.database import Database
from keel.store.feedback_store import read_live
from tests.monitor.conftest import DAY, T0

CLASSES = ("<=50K", ">50K")
SPEC = LabelSpec("adult", "binary", CLASSES, {})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        yield store.database


@pytest.fixture(scope="module")
def truth(adult_test_table: pa.Table) -> np.ndarray:
    return np.array(adult_test_table["income"].to_pylist(), dtype=object)


def write_requests(
    root: Path,
    rows: list[dict[str, Any]],
    scores: np.ndarray,
    *,
    prefix: str,
    version: str = "1",
    role: str = "primary",
    start: float = T0,
    gap: float = 600.0,
    per_request: int = 5,
) -> list[tuple[str, int, int]]:
    """Log ``rows`` as requests; returns (request id, instance, row index) of every row."""
    where = []
    for index, offset in enumerate(range(0, len(rows), per_request)):
        at = start + index * gap
        chunk = rows[offset : offset + per_request]
        p = scores[offset : offset + len(chunk)]
        rid = f"{prefix}{index:06d}"
        record = {
            "request_id": rid,
            "time": at,
            "model": "adult",
            "model_version": version,
            "role": role,
            "inputs": chunk,
            "predictions": [CLASSES[int(s >= 0.5)] for s in p],
            "probabilities": p.tolist(),
        }
        day = np.datetime64(int(at), "s").astype("datetime64[D]").astype(str)
        folder = root / "adult" / day
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{prefix}-{version}.jsonl").open("ab") as handle:
            handle.write(orjson.dumps(record) + b"\n")
        where.extend((rid, i, offset + i) for i in range(len(chunk)))
    return where


def scores_for(truth: np.ndarray, skill: float, seed: int) -> np.ndarray:
    """P(>50K) that ranks the true class higher with the given skill (0: random)."""
    rng = np.random.default_rng(seed)
    positive = (truth == ">50K").astype(float)
    return np.clip(skill * positive + (1 - skill) * rng.random(len(truth)), 0, 1)


def label(db: Database, where: list[tuple[str, int, int]], truth: np.ndarray, root: Path) -> None:
    items = [{"request_id": r, "instance": i, "label": truth[k]} for r, i, k in where]
    for start in range(0, len(items), 5000):
        result = submit_labels(db, SPEC, items[start : start + 5000], log_dir=root, now=T0 + DAY)
        assert result.counts["rejected"] == 0, result.items[0]


def test_realised_accuracy_per_window_equals_the_joined_rows(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], truth: np.ndarray
) -> None:
    root = tmp_path / "predictions"
    n = 1200
    scores = scores_for(truth[:n], 0.6, 1)
    where = write_requests(root, adult_rows[:n], scores, prefix="a")  # 240 requests, ~2 days
    labelled = where[::2]  # half the rows get their label
    label(db, labelled, truth, root)
    window = parse_window("1d")
    joined = join_labels(root, SPEC, read_live(db, "adult"), window=window)
    report = realised_performance(joined, SPEC, window, labels=len(labelled), min_rows=50)
    assert len(report.windows) == 2
    # directly: each labelled row's logged prediction against its true label, by request day
    rows = np.array([k for _, _, k in labelled])
    times = T0 + (rows // 5) * 600.0
    predicted = np.where(scores[rows] >= 0.5, ">50K", "<=50K")
    for index, got in enumerate(report.windows):
        inside = np.floor(times / DAY).astype(int) == int(T0 // DAY) + index
        expected = float(np.mean(predicted[inside] == truth[rows][inside]))
        accuracy = got.metrics["accuracy"]
        assert got.labelled == int(inside.sum())
        assert accuracy.value == pytest.approx(expected, abs=1e-12)
        assert accuracy.low is not None and accuracy.high is not None
        assert accuracy.low <= expected <= accuracy.high
        assert 0.5 < got.metrics["roc_auc"].value <= 1.0  # type: ignore[operator]
    assert report.overall.labelled == len(labelled)
    assert sum(w.rows for w in report.windows) == n


def test_a_late_label_changes_a_past_window(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], truth: np.ndarray
) -> None:
    root = tmp_path / "predictions"
    n = 600
    scores = scores_for(truth[:n], 0.5, 2)
    where = write_requests(root, adult_rows[:n], scores, prefix="b", gap=300.0)
    window = parse_window("1d")
    first_day = [w for w in where if w[2] < 300]
    label(db, first_day[:100], truth, root)
    before = realised_performance(
        join_labels(root, SPEC, read_live(db, "adult"), window=window),
        SPEC, window, labels=100, min_rows=150,
    )  # fmt: skip
    assert before.windows[0].status == "not_enough_labels"
    assert before.windows[0].labelled == 100 and not before.windows[0].metrics
    label(db, first_day[100:], truth, root)  # the rest of day one's labels arrive later
    after = realised_performance(
        join_labels(root, SPEC, read_live(db, "adult"), window=window),
        SPEC, window, labels=len(first_day), min_rows=150,
    )  # fmt: skip
    assert after.windows[0].start == before.windows[0].start
    assert after.windows[0].labelled == len(first_day)
    assert after.windows[0].status == "ok" and "accuracy" in after.windows[0].metrics


def test_row_windows_and_version_filter(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], truth: np.ndarray
) -> None:
    root = tmp_path / "predictions"
    scores = scores_for(truth[:400], 0.5, 3)
    one = write_requests(root, adult_rows[:200], scores[:200], prefix="v1x", version="1")
    two = write_requests(root, adult_rows[200:400], scores[200:], prefix="v2x", version="2",
                         start=T0 + 7)  # fmt: skip
    label(db, one + [(r, i, k + 200) for r, i, k in two], truth, root)
    window = parse_window("100rows")
    only_two = join_labels(root, SPEC, read_live(db, "adult"), select=LogFilter(version="2"),
                           window=window)  # fmt: skip
    report = realised_performance(only_two, SPEC, window, labels=400, min_rows=10)
    assert [w.labelled for w in report.windows] == [100, 100]
    assert set(only_two.version) == {"2"}


def test_two_arms_with_a_significance_test(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], truth: np.ndarray
) -> None:
    root = tmp_path / "predictions"
    n = 1500
    good = scores_for(truth[:n], 0.8, 4)
    bad = scores_for(truth[n : 2 * n], 0.1, 5)
    a = write_requests(root, adult_rows[:n], good, prefix="A", version="1")
    b = write_requests(root, adult_rows[n : 2 * n], bad, prefix="B", version="2")
    label(db, a + [(r, i, k + n) for r, i, k in b], truth, root)
    joined = join_labels(root, SPEC, read_live(db, "adult"))
    comparison = compare_joined("adult", "binary", CLASSES, joined, min_rows=100)
    assert [arm.name for arm in comparison.arms] == ["1/primary", "2/primary"]
    assert comparison.baseline == "1/primary"
    tests = {t.metric: t for t in comparison.tests}
    accuracy = tests["accuracy"]
    assert accuracy.method == "two-proportion z-test"
    assert accuracy.significant and accuracy.p_value is not None and accuracy.p_value < 1e-6
    first, second = (arm.metrics["accuracy"].value for arm in comparison.arms)
    assert accuracy.difference == pytest.approx(second - first)  # type: ignore[operator]
    auc = tests["roc_auc"]
    assert auc.method == "unpaired bootstrap of the difference"
    assert auc.significant and auc.difference is not None and auc.difference < 0
    assert auc.low is not None and auc.high is not None and auc.high < 0
    assert set(comparison.to_dict()) >= {"arms", "tests", "baseline", "alpha"}


def test_identical_arms_are_not_significant_and_a_shadow_is_paired(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], truth: np.ndarray
) -> None:
    root = tmp_path / "predictions"
    n = 800
    scores = scores_for(truth[:n], 0.5, 6)
    where = write_requests(root, adult_rows[:n], scores, prefix="S", version="1")
    write_requests(root, adult_rows[:n], scores, prefix="S", version="2", role="shadow")
    label(db, where, truth, root)  # one label per request id: joins both the primary and shadow
    joined = join_labels(root, SPEC, read_live(db, "adult"))
    comparison = compare_joined("adult", "binary", CLASSES, joined)
    tests = {t.metric: t for t in comparison.tests}
    assert tests["roc_auc"].method == "paired bootstrap of the difference"
    assert tests["roc_auc"].difference == pytest.approx(0.0)
    assert not tests["accuracy"].significant and tests["accuracy"].p_value == pytest.approx(1.0)


def test_regression_and_multiclass_metrics_match_numpy() -> None:
    from keel.evaluate.bootstrap import BootstrapSettings
    from keel.monitor.performance import Joined, metric_intervals

    rng = np.random.default_rng(7)
    n = 400
    y = rng.normal(10, 3, n)
    guess = y + rng.normal(0, 1, n)
    empty = np.zeros(n, dtype=object)
    joined = Joined(np.zeros(n, np.int64), y, guess, None, empty, empty, empty,
                    np.zeros(n, np.int64), {0: n})  # fmt: skip
    settings = BootstrapSettings(resamples=200, seed=0)
    metrics = metric_intervals("regression", (), joined, settings)
    rmse = float(np.sqrt(np.mean((guess - y) ** 2)))
    assert metrics["rmse"].value == pytest.approx(rmse)
    assert metrics["mae"].value == pytest.approx(float(np.mean(np.abs(guess - y))))
    assert metrics["rmse"].low < rmse < metrics["rmse"].high  # type: ignore[operator]
    classes = np.array(["a", "b", "c"], dtype=object)
    truth = classes[rng.integers(0, 3, n)]
    predicted = np.where(rng.random(n) < 0.7, truth, classes[rng.integers(0, 3, n)])
    joined = Joined(np.zeros(n, np.int64), truth, predicted, None, empty, empty, empty,
                    np.zeros(n, np.int64), {0: n})  # fmt: skip
    metrics = metric_intervals("multiclass", ("a", "b", "c"), joined, settings)
    assert set(metrics) == {"accuracy"}
    assert metrics["accuracy"].value == pytest.approx(float(np.mean(truth == predicted)))


def test_a_regression_log_joins_to_rmse_and_mae(db: Database, tmp_path: Path) -> None:
    from keel.store.feedback_store import LabelRow, store_labels

    root = tmp_path / "predictions" / "bikes" / "2023-11-15"
    root.mkdir(parents=True)
    rng = np.random.default_rng(8)
    truth = rng.normal(100, 20, 300)
    guess = truth + rng.normal(0, 5, 300)
    lines = [
        orjson.dumps({"request_id": f"q{i}", "time": T0 + i, "model": "bikes",
                      "model_version": "1", "inputs": [{"hour": i % 24}],
                      "predictions": [float(guess[i])], "probabilities": None})
        for i in range(300)
    ]  # fmt: skip
    (root / "1-x.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rows = [LabelRow(float(truth[i]), request_id=f"q{i}") for i in range(299)]
    rows.append(LabelRow("not a number", request_id="q299"))  # stored for another task
    store_labels(db, "bikes", rows, replace=False, source="test")
    spec = LabelSpec("bikes", "regression", (), {})
    joined = join_labels(tmp_path / "predictions", spec, read_live(db, "bikes"))
    report = realised_performance(joined, spec, parse_window(None), labels=300, min_rows=100)
    assert report.overall.labelled == 299
    error = guess[:299] - truth[:299]
    assert report.overall.metrics["rmse"].value == pytest.approx(np.sqrt(np.mean(error**2)))
    assert report.overall.metrics["mae"].value == pytest.approx(np.mean(np.abs(error)))
