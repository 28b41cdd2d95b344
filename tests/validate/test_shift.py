"""Shift distances: their laws, the noise gate, and the thresholds a schema sets."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.validate.schema import ColumnSchema, Schema
from keel.validate.shift import (
    Thresholds,
    jensen_shannon,
    min_window,
    psi,
    psi_noise,
    quantile_grid,
    shift_anomalies,
    shift_metrics,
    shift_severity,
    thresholds,
    wasserstein,
)
from keel.validate.statistics import compute_statistics

counts = st.lists(st.integers(0, 1000), min_size=2, max_size=12)


@given(counts, counts)
def test_js_is_a_bounded_symmetric_distance(a: list[int], b: list[int]) -> None:
    size = min(len(a), len(b))
    p, q = np.array(a[:size], float), np.array(b[:size], float)
    if p.sum() == 0 or q.sum() == 0:
        return
    d = jensen_shannon(p, q)
    assert 0.0 <= d <= 1.0 + 1e-12
    assert d == pytest.approx(jensen_shannon(q, p), abs=1e-12)
    assert jensen_shannon(p, p) == pytest.approx(0.0, abs=1e-7)


def test_js_of_disjoint_supports_is_one_in_base_two() -> None:
    assert jensen_shannon(np.array([5.0, 0.0]), np.array([0.0, 7.0])) == pytest.approx(1.0)


def test_psi_matches_the_formula_and_floors_empty_bins() -> None:
    p, q = np.array([50.0, 50.0]), np.array([60.0, 40.0])
    expected = 0.1 * math.log(0.6 / 0.5) + (-0.1) * math.log(0.4 / 0.5)
    assert psi(p, q) == pytest.approx(expected)
    assert math.isfinite(psi(np.array([10.0, 0.0]), np.array([5.0, 5.0])))


def test_wasserstein_of_a_shift_is_the_shift_in_stds() -> None:
    ranks = np.linspace(0.01, 0.99, 99)
    base = np.quantile(np.random.default_rng(0).normal(size=100_000), ranks)
    assert wasserstein(base, base + 0.5, scale=1.0) == pytest.approx(0.5)
    assert wasserstein(base, base + 0.5, scale=2.0) == pytest.approx(0.25)
    assert wasserstein(base, base, scale=0.0) == 0.0
    assert wasserstein(base, base + 1, scale=0.0) == math.inf


def test_psi_noise_matches_a_no_drift_simulation() -> None:
    rng = np.random.default_rng(1)
    edges = np.quantile(rng.normal(size=50_000), np.linspace(0.1, 0.9, 9))
    ref = np.bincount(np.searchsorted(edges, rng.normal(size=2000)), minlength=10)
    values = [
        psi(ref.astype(float), np.bincount(np.searchsorted(edges, rng.normal(size=1000)),
                                           minlength=10).astype(float))
        for _ in range(2000)
    ]  # fmt: skip
    # 99th percentile of (1/N + 1/M) chi2_9: about 0.0326 (methods.md: p95 0.025)
    assert psi_noise(2000, 1000, 10) == pytest.approx(0.0325, abs=0.001)
    assert np.quantile(values, 0.99) == pytest.approx(psi_noise(2000, 1000, 10), rel=0.25)


def test_min_window_is_where_noise_meets_the_threshold() -> None:
    window = min_window(32561, 11, 0.1)
    assert window is not None
    assert psi_noise(32561, window, 11) <= 0.1 < psi_noise(32561, window - 1, 11)
    assert min_window(100, 11, 0.1) is None  # a 100-row reference is too small for any window


def test_severity_needs_both_an_effect_and_significance() -> None:
    limits = Thresholds()
    big = {"psi": 0.3, "js": 0.05, "wasserstein": None, "noise": 0.01}
    assert shift_severity(big, limits) == "error"
    assert shift_severity({**big, "psi": 0.15}, limits) == "warning"
    assert shift_severity({**big, "psi": 0.05, "wasserstein": 0.6}, limits) == "error"
    assert shift_severity({**big, "psi": 0.05}, limits) is None
    assert shift_severity({**big, "noise": 0.4}, limits) is None  # noise explains it


def test_thresholds_come_from_the_schema_column() -> None:
    column = ColumnSchema(type="float", psi_warn=0.2, psi_alert=0.4, wasserstein_error=1.0)
    got = thresholds(column)
    assert (got.psi_warn, got.psi_error, got.wasserstein_error) == (0.2, 0.4, 1.0)
    assert thresholds(None) == Thresholds()


def test_quantile_grid_reads_old_statistics_without_sketches() -> None:
    old = {"kind": "numeric", "min": 0.0, "max": 10.0, "quantiles": {"0.5": 5.0}}
    grid = quantile_grid(old, np.array([0.25, 0.5, 0.75]))
    assert grid is not None
    assert grid.tolist() == pytest.approx([2.5, 5.0, 7.5])


def _stats(values: np.ndarray, reference: dict | None = None) -> dict:  # type: ignore[type-arg]
    return compute_statistics(pa.table({"x": values}), reference=reference)


def test_shift_metrics_on_frozen_bins() -> None:
    rng = np.random.default_rng(2)
    ref = _stats(rng.normal(size=20_000))
    same = _stats(rng.normal(size=20_000), ref)
    moved = _stats(rng.normal(0.5, 1, size=20_000), ref)
    quiet = shift_metrics(ref["columns"]["x"], same["columns"]["x"])
    loud = shift_metrics(ref["columns"]["x"], moved["columns"]["x"])
    assert quiet["psi"] < 0.01 and quiet["wasserstein"] < 0.05
    assert loud["psi"] > 0.2 and loud["wasserstein"] == pytest.approx(0.5, abs=0.06)


def test_small_windows_are_noted_not_flagged() -> None:
    rng = np.random.default_rng(3)
    ref = _stats(rng.normal(size=5000))
    schema = Schema(columns={"x": ColumnSchema(type="float")})
    notes: list[str] = []
    tiny = _stats(rng.normal(3, 1, size=20), ref)  # a real shift, but 20 rows
    assert shift_anomalies(tiny, ref, schema, None, "d", notes) == []
    assert len(notes) == 1 and "too few" in notes[0]
    notes.clear()
    found = shift_anomalies(_stats(rng.normal(3, 1, size=2000), ref), ref, schema, None, "d", notes)
    assert [(a.column, a.kind, a.severity) for a in found] == [("x", "distribution_shift", "error")]
    assert notes == []
