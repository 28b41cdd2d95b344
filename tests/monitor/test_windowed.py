"""Drift of every window at once (keel.monitor.windowed) equals the per-window functions.

``per_window_reference`` is the report's former per-window loop (one ``column_drift`` per
feature per window, then ``decide``), kept here as the reference the vectorised path must
equal to 1e-12 on the Adult test set cut into 50 windows (benchmarks/monitor/windows.py times
both)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from keel.monitor.cbpe import estimate_performance
from keel.monitor.counts import PaneCounts, binning_of, count_panes
from keel.monitor.drift import (
    ColumnDrift,
    coerced_columns,
    column_drift,
    decide,
    prepare_columns,
)
from keel.monitor.report import MonitorSettings, judge_windows
from keel.monitor.significance import chi2_sf, chi2_sf_array
from keel.monitor.windowed import ColumnCounts, judge_columns

WINDOWS = 50


def adult_panes(reference: Any, table: pa.Table, windows: int = WINDOWS) -> dict[int, PaneCounts]:
    """The table's rows cut into ``windows`` consecutive panes of (nearly) equal size, counted
    as monitoring counts the log: inputs, the output (the labels as predictions) and scores."""
    inputs = table.drop_columns(["income"])
    prepared = prepare_columns(reference.statistics, list(reference.inputs), coercer=None)
    columns, invalid = coerced_columns(inputs, prepared)
    n = table.num_rows
    pane = (np.arange(n) * windows) // n
    output = binning_of("income", reference.statistics["columns"]["income"])
    panes: dict[int, PaneCounts] = {}
    count_panes(
        panes,
        pane,
        columns,
        prepared.binnings,
        times=np.arange(n, dtype=np.float64),
        invalid=invalid,
        output=(output, table.column("income")),
        scores=np.random.default_rng(1).random(n),
    )
    return panes


def per_window_reference(
    reference: Any, panes: dict[int, PaneCounts], settings: MonitorSettings
) -> list[tuple[list[ColumnDrift], ColumnDrift | None]]:
    """Each window's decided columns (largest PSI first) and output drift, one window and one
    feature at a time: what the report computed before it was vectorised."""
    prepared = prepare_columns(reference.statistics, list(reference.inputs), coercer=None)
    output = binning_of("income", reference.statistics["columns"]["income"])
    stats = reference.statistics["columns"]
    out = []
    for key in sorted(panes):
        counts = panes[key]
        drifts = [
            column_drift(
                prepared.binnings[name],
                np.asarray(stats[name]["counts"]),
                counts.columns.get(name, np.zeros(prepared.binnings[name].bins, dtype=np.int64)),
                counts.fine.get(name),
                prepared.limits[name],
                counts.invalid.get(name, 0),
            )
            for name in prepared.binnings
        ]
        decided = sorted(
            decide(drifts, counts.rows, min_rows=settings.min_rows, fdr=settings.fdr),
            key=lambda c: -c.psi,
        )
        raw = column_drift(
            output, np.asarray(stats["income"]["counts"]), counts.output, None, settings.prediction
        )
        prediction = decide([raw], counts.rows, min_rows=settings.min_rows, fdr=settings.fdr)[0]
        if counts.rows >= settings.min_rows and counts.scores is not None:
            estimate_performance(counts.scores)  # as the report's loop did (the benchmark)
        out.append((decided, prediction))
    return out


def vectorised(
    reference: Any, panes: dict[int, PaneCounts], settings: MonitorSettings
) -> list[tuple[list[ColumnDrift], ColumnDrift | None]]:
    prepared = prepare_columns(reference.statistics, list(reference.inputs), coercer=None)
    output = binning_of("income", reference.statistics["columns"]["income"])
    entries = [(key, panes[key]) for key in sorted(panes)]
    reports = judge_windows(reference, prepared, list(prepared.binnings), output, settings, entries)
    return [(list(r.columns), r.prediction) for r in reports]


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


FIELDS = ("psi", "js", "wasserstein", "statistic", "p_value", "p_adjusted", "cramers_v")


def assert_same(old: ColumnDrift, new: ColumnDrift) -> None:
    assert (old.column, old.kind, old.rows, old.test, old.verdict, old.invalid) == (
        new.column, new.kind, new.rows, new.test, new.verdict, new.invalid,
    )  # fmt: skip
    for name in FIELDS:
        before, after = getattr(old, name), getattr(new, name)
        assert _close(before, after), (old.column, name, before, after)


@pytest.mark.parametrize("order", ["as_read", "by_age"])
def test_every_window_equals_the_per_window_functions_on_adult(
    adult_reference: Any, adult_test_table: pa.Table, order: str
) -> None:
    table = adult_test_table
    if order == "by_age":  # windows of young to old people: most features drift, p near 0
        table = table.take(pa.array(np.argsort(table.column("age").to_numpy(), kind="stable")))
    panes = adult_panes(adult_reference, table)
    settings = MonitorSettings(min_rows=300)  # a window holds 325 or 326 rows
    old = per_window_reference(adult_reference, panes, settings)
    new = vectorised(adult_reference, panes, settings)
    assert len(old) == len(new) == WINDOWS
    verdicts = set()
    for (old_columns, old_output), (new_columns, new_output) in zip(old, new, strict=True):
        assert [c.column for c in old_columns] == [c.column for c in new_columns]
        for before, after in zip(old_columns, new_columns, strict=True):
            assert_same(before, after)
            verdicts.add(after.verdict)
        assert old_output is not None and new_output is not None
        assert_same(old_output, new_output)
    # the comparison covered decisions that matter
    assert ("drift" in verdicts) == (order == "by_age")
    assert "stable" in verdicts


def test_small_windows_are_not_judged_and_empty_columns_have_no_effect(
    adult_reference: Any, adult_test_table: pa.Table
) -> None:
    panes = adult_panes(adult_reference, adult_test_table.slice(0, 500), windows=10)
    panes[3].columns.pop("age")  # a window whose requests lacked a column
    panes[3].fine.pop("age")
    settings = MonitorSettings(min_rows=60)  # 50 rows a window: not_enough_data everywhere
    old = per_window_reference(adult_reference, panes, settings)
    new = vectorised(adult_reference, panes, settings)
    for (old_columns, _), (new_columns, _) in zip(old, new, strict=True):
        for before, after in zip(old_columns, new_columns, strict=True):
            assert after.verdict == "not_enough_data"
            assert_same(before, after)
    age = next(c for c in new[3][0] if c.column == "age")
    assert math.isnan(age.psi) and age.test is None and age.wasserstein is None


def test_chi2_sf_array_equals_the_scalar_function() -> None:
    rng = np.random.default_rng(7)
    dof = rng.integers(-1, 60, 2000)
    x = np.concatenate([rng.exponential(30.0, 1000), rng.uniform(0, 5000, 980),
                        [0.0, 1e-301, -1.0, np.inf, np.nan] * 4])  # fmt: skip
    got = chi2_sf_array(x, dof)
    for value, k, p in zip(x.tolist(), dof.tolist(), got.tolist(), strict=True):
        want = chi2_sf(value, k)
        assert math.isclose(p, want, rel_tol=1e-12, abs_tol=1e-300), (value, k, p, want)


def test_benjamini_hochberg_per_window_leaves_untested_columns_out(
    adult_reference: Any, adult_test_table: pa.Table
) -> None:
    panes = adult_panes(adult_reference, adult_test_table, windows=4)
    prepared = prepare_columns(adult_reference.statistics, list(adult_reference.inputs))
    stats = adult_reference.statistics["columns"]
    names = list(prepared.binnings)
    columns = [
        ColumnCounts(
            prepared.binnings[n],
            np.asarray(stats[n]["counts"]),
            np.stack([panes[k].columns[n] for k in sorted(panes)]),
            None,
            prepared.limits[n],
        )
        for n in names
    ]
    empty = np.zeros_like(columns[0].current)
    empty[1] = columns[0].current[1]  # the first column: no value in windows 0, 2 and 3
    columns[0] = ColumnCounts(columns[0].binning, columns[0].reference, empty, None,
                              columns[0].limits)  # fmt: skip
    rows = [panes[k].rows for k in sorted(panes)]
    decided = judge_columns(columns, rows, min_rows=10, fdr=0.05)
    for w, window in enumerate(decided):
        one = [column_drift(c.binning, c.reference, c.current[w], None, c.limits) for c in columns]
        expected = decide(one, rows[w], min_rows=10, fdr=0.05)
        assert (window[0].p_adjusted is None) == (w != 1)
        for before, after in zip(expected, window, strict=True):
            assert_same(before, after)
