"""Column statistics: counts that add up, frozen reference bins, histogram edge semantics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import DataValidationError
from keel.validate import statistics
from keel.validate.sketches import KLL_RANK_ERROR
from keel.validate.statistics import (
    OTHER,
    TOP_K,
    column_cdf,
    column_kind,
    column_quantiles,
    compute_statistics,
    histogram_counts,
    merge_statistics,
)


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


# --- sketches: merging, streaming, round trips ------------------------------------------------


def _rank_ok(data: np.ndarray, value: float, rank: float, error: float) -> bool:
    """``value`` is a valid quantile at ``rank`` of ``data`` up to a normalised rank error."""
    below = np.count_nonzero(data < value) / data.size
    at_or_below = np.count_nonzero(data <= value) / data.size
    return below - error <= rank <= at_or_below + error


_cells = st.one_of(
    st.none(),
    st.integers(-50, 50).map(float),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.5, -0.0]),
)
_words = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e", "é", ""]))


def _pair_table(numbers: list[float | None], words: list[str | None]) -> pa.Table:
    size = min(len(numbers), len(words))
    return pa.table(
        {
            "x": pa.array(numbers[:size], pa.float64()),
            "c": pa.array(words[:size], pa.string()),
        }
    )


@given(
    st.lists(_cells, min_size=1, max_size=60),
    st.lists(_words, min_size=1, max_size=60),
    st.lists(_cells, max_size=60),
    st.lists(_words, max_size=60),
    st.lists(_cells, max_size=60),
    st.lists(_words, max_size=60),
)
def test_merged_statistics_equal_the_statistics_of_the_union(
    ref_x: list[float | None],
    ref_c: list[str | None],
    a_x: list[float | None],
    a_c: list[str | None],
    b_x: list[float | None],
    b_c: list[str | None],
) -> None:
    reference = compute_statistics(_pair_table(ref_x, ref_c))
    a, b = _pair_table(a_x, a_c), _pair_table(b_x, b_c)
    merged = merge_statistics(
        compute_statistics(a, reference=reference), compute_statistics(b, reference=reference)
    )
    union = compute_statistics(pa.concat_tables([a, b]), reference=reference)
    assert merged["rows"] == union["rows"] == a.num_rows + b.num_rows
    for name in ("x", "c"):
        got, want = merged["columns"][name], union["columns"][name]
        for key in ("kind", "dtype", "count", "nulls", "counts", "edges", "categories", "top"):
            assert got.get(key) == want.get(key), (name, key)
        assert got.get("distinct") == want.get("distinct"), name  # small: sketches are exact
    got, want = merged["columns"]["x"], union["columns"]["x"]
    assert (got.get("min"), got.get("max")) == (want.get("min"), want.get("max"))
    if "mean" in want:
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-9, abs=1e-12)
        assert got["std"] == pytest.approx(want["std"], rel=1e-9, abs=1e-9)
        assert got["quantiles"] == want["quantiles"]  # under k=200 values KLL keeps them all


def test_merge_is_associative_on_the_exact_parts() -> None:
    rng = np.random.default_rng(7)
    parts = [
        pa.table({"x": rng.normal(size=300), "c": rng.choice(list("pqrs"), 300)}) for _ in "abc"
    ]
    reference = compute_statistics(parts[0])
    a, b, c = (compute_statistics(p, reference=reference) for p in parts)
    left = merge_statistics(merge_statistics(a, b), c)["columns"]
    right = merge_statistics(a, merge_statistics(b, c))["columns"]
    for name in ("x", "c"):
        for key in ("count", "nulls", "counts", "min", "max", "top"):
            assert left[name].get(key) == right[name].get(key), (name, key)
    assert abs(left["x"]["distinct"] - 900) <= 3 * 0.016 * 900  # HLL: within its error
    assert left["x"]["mean"] == pytest.approx(right["x"]["mean"], rel=1e-12)
    assert left["x"]["std"] == pytest.approx(right["x"]["std"], rel=1e-12)


def test_merged_quantiles_stay_within_the_kll_bound() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(size=60_000), rng.normal(50, 5, size=40_000)])
    rng.shuffle(values)
    reference = compute_statistics(pa.table({"x": values[:5000]}))
    parts = np.array_split(values, 4)
    stats = [compute_statistics(pa.table({"x": p}), reference=reference) for p in parts]
    merged = stats[0]
    for more in stats[1:]:
        merged = merge_statistics(merged, more)
    column = merged["columns"]["x"]
    assert column["count"] == values.size
    assert column["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert column["std"] == pytest.approx(values.std(), rel=1e-9)
    assert (
        column["counts"][:-1]
        == histogram_counts(values, reference["columns"]["x"]["edges"], 0)[:-1]
    )
    for rank, value in column["quantiles"].items():
        assert _rank_ok(values, value, float(rank), KLL_RANK_ERROR), rank
    assert abs(column["distinct"] - values.size) <= 3 * 0.016 * values.size  # HLL after union


def test_merge_needs_the_same_reference_and_sketches() -> None:
    a = compute_statistics(pa.table({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "b"]}))
    b = compute_statistics(pa.table({"x": [10.0, 20.0, 30.0], "c": ["a", "b", "b"]}))
    with pytest.raises(DataValidationError, match="same reference") as info:
        merge_statistics(a, b)
    assert info.value.field == "x"
    old = copy.deepcopy(a)
    del old["columns"]["x"]["sketches"]
    with pytest.raises(DataValidationError, match="Recompute"):
        merge_statistics(old, a)
    with pytest.raises(DataValidationError, match="different columns"):
        merge_statistics(a, compute_statistics(pa.table({"y": [1]})))


def test_sketches_round_trip_through_json(adult_statistics: dict[str, Any]) -> None:
    loaded = orjson.loads(orjson.dumps(adult_statistics))
    assert loaded == adult_statistics
    age = loaded["columns"]["age"]
    # 73 distinct ages: exact counts; 21,648 distinct fnlwgt values: KLL
    assert set(age["sketches"]) == {"exact", "hll"}
    assert set(loaded["columns"]["fnlwgt"]["sketches"]) == {"kll", "hll"}
    assert set(loaded["columns"]["sex"]["sketches"]) == {"items", "hll"}
    ranks = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(
        column_quantiles(loaded["columns"]["age"], ranks),
        column_quantiles(adult_statistics["columns"]["age"], ranks),
    )
    doubled = merge_statistics(loaded, loaded)
    assert doubled["rows"] == 2 * adult_statistics["rows"]
    assert doubled["columns"]["sex"]["top"] == {"Male": 2 * 21790, "Female": 2 * 10771}
    assert doubled["columns"]["age"]["distinct"] == age["distinct"]  # same values, same HLL


def test_top_k_and_distinct_are_right_on_adult(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any]
) -> None:
    for name in adult_train_table.column_names:
        column = adult_train_table.column(name)
        exact = pc.count_distinct(column, mode="only_valid").as_py()
        estimate = adult_statistics["columns"][name]["distinct"]
        # HLL lg_k=12: relative standard error about 1.3%; allow three of them
        assert abs(estimate - exact) <= 3 * 0.013 * exact + 1, (name, estimate, exact)
        if column_kind(column.type) != "numeric":
            assert estimate == exact, name  # under 768 categories the items sketch is exact
            counted = pc.value_counts(column.drop_null())
            truth = dict(
                zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                )
            )
            assert adult_statistics["columns"][name]["top"] == truth, name


def test_quantiles_and_cdf_from_the_sketch_and_from_old_statistics(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any]
) -> None:
    values = adult_train_table.column("fnlwgt").to_numpy().astype(np.float64)
    column = adult_statistics["columns"]["fnlwgt"]
    ranks = np.linspace(0.0, 1.0, 21)
    quantiles = column_quantiles(column, ranks)
    assert quantiles.shape == ranks.shape and np.all(np.diff(quantiles) >= 0)
    for rank, value in zip(ranks[1:-1], quantiles[1:-1], strict=True):
        assert _rank_ok(values, value, rank, KLL_RANK_ERROR)
    points = np.quantile(values, [0.1, 0.5, 0.9])
    truth = np.array([np.mean(values <= p) for p in points])
    assert np.all(np.abs(column_cdf(column, points) - truth) <= KLL_RANK_ERROR)
    old = {k: v for k, v in column.items() if k not in ("sketches", "moments", "arrow_type")}
    np.testing.assert_allclose(
        column_quantiles(old, np.array([0.0, 0.5, 1.0])),
        [column["min"], column["quantiles"]["0.5"], column["max"]],
    )
    cdf = column_cdf(old, np.array([column["min"] - 1, column["quantiles"]["0.5"], column["max"]]))
    np.testing.assert_allclose(cdf, [0.0, 0.5, 1.0])
    assert np.isnan(column_quantiles(adult_statistics["columns"]["sex"], ranks)).all()


def test_streams_parquet_and_readers_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(11)
    n = 5000
    table = pa.table(
        {
            "i": pa.array(rng.integers(0, 40, n)),
            "f": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))),
            "s": pa.array(rng.choice(["x", "y", "z"], n)).cast(pa.large_string()),
            "b": pa.array(rng.random(n) < 0.3),
            "d": pa.array(rng.integers(0, 100, n).astype("datetime64[D]")),
        }
    )
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=700)
    monkeypatch.setattr(statistics, "BATCH_ROWS", 512)
    monkeypatch.setattr(statistics, "EXACT_VALUES", 100)  # 'f' needs the second pass
    whole = compute_statistics(table)
    from_file = compute_statistics(path)
    from_reader = compute_statistics(
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches(300))
    )
    for stats in (from_file, from_reader):
        assert stats["rows"] == n
        for name, want in whole["columns"].items():
            got = stats["columns"][name]
            for key in ("kind", "dtype", "count", "nulls", "min", "max", "categories", "top"):
                assert got.get(key) == want.get(key), (name, key)
            assert got["mean" if "mean" in want else "count"] == pytest.approx(
                want.get("mean", want["count"])
            )
            assert sum(got["counts"]) == n
    f = from_file["columns"]["f"]  # edges from its own sketch; exact counts by a second pass
    values = table.column("f").to_numpy()
    assert f["counts"] == histogram_counts(values[~np.isnan(values)], f["edges"], f["nulls"])
    assert from_reader["columns"]["f"]["counts_exact"] is False  # read once: estimated
    assert from_reader["columns"]["i"].get("counts_exact", True)  # few values: exact
    assert whole["columns"]["d"]["dtype"] == "date"
    assert whole["columns"]["s"]["arrow_type"] == "large_string"


def test_old_statistics_still_serve_as_reference(
    adult_statistics: dict[str, Any], adult_test_table: pa.Table
) -> None:
    old = copy.deepcopy(adult_statistics)
    for column in old["columns"].values():
        for key in ("sketches", "moments", "arrow_type"):
            column.pop(key, None)
    current = compute_statistics(adult_test_table, reference=old)
    new = compute_statistics(adult_test_table, reference=adult_statistics)
    for name, stats in current["columns"].items():
        assert stats["counts"] == new["columns"][name]["counts"], name


def test_high_cardinality_categories_use_the_sketch_bounds() -> None:
    rng = np.random.default_rng(5)
    heavy = np.repeat(["alpha", "beta", "gamma"], [5000, 3000, 2000])
    tail = np.array([f"id{i}" for i in range(20_000)])
    values = np.concatenate([heavy, tail])
    rng.shuffle(values)
    stats = compute_statistics(pa.table({"c": values}))["columns"]["c"]
    assert stats["categories"][:3] == ["alpha", "beta", "gamma"]
    assert all(c >= 0 for c in stats["counts"]) and sum(stats["counts"]) == values.size
    for name, truth in (("alpha", 5000), ("beta", 3000), ("gamma", 2000)):
        # estimation mode: lower bound <= truth <= estimate <= truth + 0.34% of the weight
        assert stats["counts"][stats["categories"].index(name)] <= truth <= stats["top"][name]
        assert stats["top"][name] <= truth + 0.0035 * values.size
    assert abs(stats["distinct"] - 20_003) <= 3 * 0.013 * 20_003


def test_odd_arrow_types() -> None:
    table = pa.table(
        {
            "n": pa.nulls(3),
            "u64": pa.array([1, 2, 2**64 - 1], pa.uint64()),
            "i8": pa.array([-128, 0, 127], pa.int8()),
            "f32": pa.array([1.5, None, float("nan")], pa.float32()),
            "dict": pa.array(["a", "b", None]).dictionary_encode(),
        }
    )
    stats = compute_statistics(table)["columns"]
    assert stats["n"]["counts"] == [0, 3]
    assert (stats["u64"]["dtype"], stats["u64"]["max"]) == ("int", float(2**64 - 1))
    assert (stats["i8"]["min"], stats["i8"]["max"]) == (-128.0, 127.0)
    assert (stats["f32"]["nulls"], stats["f32"]["mean"]) == (2, 1.5)
    assert (stats["dict"]["dtype"], stats["dict"]["top"]) == ("string", {"a": 1, "b": 1})
    with pytest.raises(DataValidationError, match="flat columns only") as info:
        compute_statistics(pa.table({"l": pa.array([[1], [2]])}))
    assert info.value.field == "l"


def test_low_cardinality_columns_keep_exact_counts_until_they_outgrow_them() -> None:
    from keel.validate.sketches import EXACT_MAX

    rng = np.random.default_rng(3)
    few = rng.integers(0, 90, 200_000)
    stats = compute_statistics(pa.table({"few": few}))["columns"]["few"]
    ranks = np.asarray([0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0])
    expected = np.quantile(few, ranks, method="inverted_cdf")
    np.testing.assert_array_equal(column_quantiles(stats, ranks), expected)
    assert [stats["quantiles"][str(q)] for q in (0.25, 0.5, 0.75)] == list(expected[2:5])
    points = np.asarray([-1.0, 0.0, 44.5, 89.0, np.nan])
    cdf = column_cdf(stats, points)
    np.testing.assert_allclose(cdf[:4], [(few <= p).mean() for p in points[:4]])
    assert np.isnan(cdf[4])
    # exact statistics are reproducible byte for byte (KLL compacts at random)
    again = compute_statistics(pa.table({"few": few}))["columns"]["few"]
    assert orjson.dumps(again) == orjson.dumps(stats)

    # two batches that together exceed EXACT_MAX values merge into a KLL sketch
    a = compute_statistics(pa.table({"x": np.arange(EXACT_MAX, dtype=np.float64)}))
    b = compute_statistics(
        pa.table({"x": np.arange(EXACT_MAX, 2 * EXACT_MAX, dtype=np.float64)}), reference=a
    )
    a = compute_statistics(pa.table({"x": np.arange(EXACT_MAX, dtype=np.float64)}), reference=a)
    assert "exact" in a["columns"]["x"]["sketches"]
    merged = merge_statistics(a, b)["columns"]["x"]
    assert set(merged["sketches"]) == {"kll", "hll"}
    assert abs(merged["quantiles"]["0.5"] - EXACT_MAX) <= 0.02 * 2 * EXACT_MAX
    # one pass over more values than EXACT_MAX switches to KLL too
    many = compute_statistics(pa.table({"x": np.arange(3 * EXACT_MAX)}))["columns"]["x"]
    assert set(many["sketches"]) == {"kll", "hll"} and many["max"] == 3 * EXACT_MAX - 1
