"""Column statistics: counts that add up, frozen reference bins, histogram edge semantics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.validate.statistics import OTHER, TOP_K, column_kind, compute_statistics, histogram_counts


def test_counts_add_up_to_rows_on_adult(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any]
) -> None:
    assert adult_statistics["rows"] == adult_train_table.num_rows
    assert list(adult_statistics["columns"]) == adult_train_table.column_names
    for name, stats in adult_statistics["columns"].items():
        assert sum(stats["counts"]) == adult_train_table.num_rows, name
        assert stats["counts"][-1] == stats["nulls"] == adult_train_table.column(name).null_count
        if stats["kind"] == "numeric":
            assert len(stats["counts"]) == len(stats["edges"]) + 2  # bins + null bin
        else:
            assert len(stats["counts"]) == len(stats["categories"]) + 2  # + other + null


def test_numeric_summary_on_adult(adult_statistics: dict[str, Any]) -> None:
    age = adult_statistics["columns"]["age"]
    assert (age["kind"], age["dtype"]) == ("numeric", "int")
    assert (age["min"], age["max"]) == (17.0, 90.0)
    assert age["mean"] == pytest.approx(38.5816, abs=1e-3)
    assert age["quantiles"]["0.5"] == 37.0
    assert age["edges"] == sorted(set(age["edges"]))
    assert len(age["edges"]) == 9  # distinct deciles


def test_categorical_summary_on_adult(adult_statistics: dict[str, Any]) -> None:
    sex = adult_statistics["columns"]["sex"]
    assert (sex["kind"], sex["dtype"]) == ("categorical", "string")
    assert sex["categories"] == ["Male", "Female"]  # most frequent first
    assert sex["counts"] == [21790, 10771, 0, 0]
    workclass = adult_statistics["columns"]["workclass"]
    assert workclass["nulls"] == 1836
    assert workclass["categories"][0] == "Private"


def test_reference_bins_are_reused(
    adult_statistics: dict[str, Any], adult_test_table: pa.Table
) -> None:
    current = compute_statistics(adult_test_table, reference=adult_statistics)
    for name, stats in current["columns"].items():
        ref = adult_statistics["columns"][name]
        if stats["kind"] == "numeric":
            assert stats["edges"] == ref["edges"], name
        else:
            assert stats["categories"] == ref["categories"], name
        assert len(stats["counts"]) == len(ref["counts"]), name
        assert sum(stats["counts"]) == adult_test_table.num_rows, name


def test_values_outside_reference_go_to_other() -> None:
    reference = compute_statistics(pa.table({"c": ["a", "a", "b", None]}))
    assert reference["columns"]["c"]["counts"] == [2, 1, 0, 1]
    current = compute_statistics(pa.table({"c": ["z", "a", "y", "z", None]}), reference=reference)
    column = current["columns"]["c"]
    assert column["categories"] == ["a", "b"]
    assert column["counts"] == [1, 0, 3, 1]  # a, b, other, null
    assert column["top"] == {"z": 2, "a": 1, "y": 1}
    assert column["distinct"] == 3


def test_top_k_cap_puts_the_rest_in_other() -> None:
    values = [f"v{i:03d}" for i in range(TOP_K + 10) for _ in range(2)] + ["v000"]
    stats = compute_statistics(pa.table({"c": values}))["columns"]["c"]
    assert len(stats["categories"]) == TOP_K
    assert stats["categories"][0] == "v000"
    assert stats["counts"][-2] == 20  # ten categories of two rows each are 'other'
    assert sum(stats["counts"]) == len(values)
    assert OTHER == "__other__"


def test_boolean_columns() -> None:
    stats = compute_statistics(pa.table({"b": [True, False, True, None]}))["columns"]["b"]
    assert (stats["kind"], stats["dtype"]) == ("boolean", "bool")
    assert stats["categories"] == ["true", "false"]
    assert stats["counts"] == [2, 1, 0, 1]


def test_nan_counts_as_null_and_infinities_are_binned() -> None:
    column = pa.array([1.0, 2.0, float("nan"), float("inf"), -float("inf"), None, 3.0])
    stats = compute_statistics(pa.table({"x": column}))["columns"]["x"]
    assert stats["nulls"] == 2  # the null and the NaN
    assert sum(stats["counts"]) == 7
    assert stats["counts"][0] >= 1 and stats["counts"][-2] >= 1  # -inf and +inf in outer bins
    assert (stats["min"], stats["max"]) == (1.0, 3.0)  # summaries use finite values


def test_empty_and_all_null_columns() -> None:
    stats = compute_statistics(pa.table({"x": pa.array([None, None], pa.float64())}))
    column = stats["columns"]["x"]
    assert column["edges"] == []
    assert column["counts"] == [0, 2]
    assert "min" not in column
    empty = compute_statistics(pa.table({"x": pa.array([], pa.int64())}))
    assert empty["rows"] == 0
    assert empty["columns"]["x"]["counts"] == [0, 0]


def test_histogram_edge_goes_to_the_left_bin() -> None:
    edges = [1.0, 2.0, 3.0]
    values = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 3.0001, -np.inf, np.inf])
    # bins: (-inf, 1], (1, 2], (2, 3], (3, inf), then nulls
    assert histogram_counts(values, edges, 4) == [3, 2, 1, 2, 4]
    assert histogram_counts(np.array([]), [], 0) == [0, 0]
    assert histogram_counts(np.array([5.0]), [], 1) == [1, 1]


@given(
    st.lists(st.floats(allow_nan=False, width=64), max_size=50),
    st.lists(st.floats(-1e6, 1e6), max_size=10),
    st.integers(0, 5),
)
def test_histogram_counts_partition_the_values(
    values: list[float], edges: list[float], nulls: int
) -> None:
    cuts = sorted(set(edges))
    counts = histogram_counts(np.asarray(values, dtype=np.float64), cuts, nulls)
    assert len(counts) == len(cuts) + 2
    assert sum(counts) == len(values) + nulls
    bounds = [-np.inf, *cuts, np.inf]
    for i, count in enumerate(counts[:-1]):
        low, high = bounds[i], bounds[i + 1]
        inside = [v for v in values if (low < v or i == 0) and (v <= high or i == len(cuts))]
        assert count == len(inside)


@given(
    st.lists(st.one_of(st.none(), st.integers(-1000, 1000), st.floats(allow_nan=True)), max_size=40)
)
def test_numeric_counts_always_add_up(cells: list[float | int | None]) -> None:
    column = pa.array([None if c is None else float(c) for c in cells], pa.float64())
    stats = compute_statistics(pa.table({"x": column}))["columns"]["x"]
    assert sum(stats["counts"]) == len(cells)
    assert stats["count"] == len(cells)
    assert all(np.isfinite(stats["edges"]))
    assert stats["edges"] == sorted(set(stats["edges"]))


@pytest.mark.parametrize(
    ("data_type", "kind"),
    [
        (pa.int8(), "numeric"),
        (pa.float32(), "numeric"),
        (pa.bool_(), "boolean"),
        (pa.string(), "categorical"),
        (pa.large_string(), "categorical"),
    ],
)
def test_column_kind(data_type: pa.DataType, kind: str) -> None:
    assert column_kind(data_type) == kind
