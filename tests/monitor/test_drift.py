"""PSI and drift verdicts: hand examples, Adult test vs train, and a deliberately shifted copy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keel.errors import DataValidationError
from keel.monitor.drift import EPSILON, compute_drift, psi
from keel.validate.statistics import compute_statistics

COUNTS = hnp.arrays(np.float64, st.integers(1, 12), elements=st.integers(0, 10_000).map(float))


def features(table: pa.Table) -> list[str]:
    return [n for n in table.column_names if n != "income"]


def by_column(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["column"]: r for r in report["columns"]}


@given(COUNTS, st.integers(1, 50))
def test_psi_of_identical_distributions_is_zero(counts: np.ndarray, factor: int) -> None:
    assert psi(counts, counts) == 0.0
    assert psi(counts, counts * factor) == pytest.approx(0.0, abs=1e-12)


@given(COUNTS, st.data())
def test_psi_is_non_negative_and_symmetric(counts: np.ndarray, data: st.DataObject) -> None:
    other = data.draw(hnp.arrays(np.float64, counts.shape, elements=st.integers(0, 10_000)))
    value = psi(counts, other)
    assert value >= -1e-12
    assert value == pytest.approx(psi(other, counts))


def test_psi_hand_examples() -> None:
    expected = 0.3 * math.log(1.6) + 0.3 * math.log(0.5 / 0.2)
    assert psi(np.array([50.0, 50.0]), np.array([80.0, 20.0])) == pytest.approx(expected)
    # an empty reference bin gets the floor, so a brand-new category is large but finite
    floored = -0.5 * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    assert psi(np.array([100.0, 0.0]), np.array([50.0, 50.0])) == pytest.approx(floored)


def test_adult_test_is_stable(adult_statistics: dict[str, Any], adult_test_table: pa.Table) -> None:
    report = compute_drift(adult_statistics, adult_test_table, columns=features(adult_test_table))
    assert report["verdict"] == "stable"
    assert report["drifted_columns"] == []
    assert report["missing_columns"] == []
    assert report["rows"] == 16281 and report["reference_rows"] == 32561
    assert len(report["columns"]) == 14
    assert all(r["verdict"] == "stable" for r in report["columns"])
    assert all(0 <= r["psi"] < 0.1 for r in report["columns"])
    psis = [r["psi"] for r in report["columns"]]
    assert psis == sorted(psis, reverse=True)


def test_shifted_copy_drifts(adult_statistics: dict[str, Any], adult_test_table: pa.Table) -> None:
    shifted = adult_test_table.set_column(0, "age", pc.add(adult_test_table["age"], 15)).set_column(
        adult_test_table.schema.get_field_index("occupation"),
        "occupation",
        pa.array(["Sales"] * adult_test_table.num_rows),
    )
    report = compute_drift(adult_statistics, shifted, columns=features(shifted))
    assert report["verdict"] == "drift"
    assert set(report["drifted_columns"]) == {"age", "occupation"}
    columns = by_column(report)
    assert columns["age"]["kind"] == "numeric" and columns["age"]["psi"] >= 0.25
    assert columns["occupation"]["kind"] == "categorical"
    assert {r["column"] for r in report["columns"][:2]} == {"age", "occupation"}
    assert columns["sex"]["verdict"] == "stable"


def test_thresholds_choose_the_verdict(
    adult_statistics: dict[str, Any], adult_test_table: pa.Table
) -> None:
    columns = ["age"]
    top = by_column(compute_drift(adult_statistics, adult_test_table, columns=columns))["age"]
    value = top["psi"]
    assert value > 0
    # the test and train samples come from one population: age's tiny PSI is not significant,
    # so no threshold makes it drift while the false discovery rate is controlled
    assert top["p_adjusted"] > 0.05
    low = compute_drift(
        adult_statistics, adult_test_table, columns=columns, warn=value / 4, alert=value / 2
    )
    assert low["verdict"] == "stable"
    # fdr=1 accepts any p-value: the effect size alone decides
    moderate = compute_drift(
        adult_statistics, adult_test_table, columns=columns, warn=value / 2, alert=value * 2,
        fdr=1.0,
    )  # fmt: skip
    assert by_column(moderate)["age"]["verdict"] == "moderate"
    assert moderate["verdict"] == "stable"  # only 'drift' columns change the verdict
    alert = compute_drift(
        adult_statistics, adult_test_table, columns=columns, warn=value / 4, alert=value / 2,
        fdr=1.0,
    )  # fmt: skip
    assert alert["verdict"] == "drift"
    assert alert["thresholds"] == {
        "warn": value / 4, "alert": value / 2, "min_rows": 100, "fdr": 1.0
    }  # fmt: skip


def test_too_few_rows_is_insufficient_data(
    adult_statistics: dict[str, Any], adult_test_table: pa.Table
) -> None:
    small = adult_test_table.slice(0, 99)
    report = compute_drift(adult_statistics, small, columns=features(small), min_rows=100)
    assert report["verdict"] == "not_enough_data"
    assert report["rows"] == 99
    enough = compute_drift(adult_statistics, small, columns=features(small), min_rows=99)
    assert enough["verdict"] != "not_enough_data"


def test_all_null_and_missing_columns(adult_statistics: dict[str, Any]) -> None:
    current = pa.table(
        {
            "age": pa.nulls(200),
            "workclass": pa.nulls(200),
            "sex": ["Male"] * 134 + ["Female"] * 66,  # the training mix
        }
    )
    with pytest.raises(DataValidationError) as info:  # never "stable" on a column it lacks
        compute_drift(adult_statistics, current, columns=["age", "workclass", "sex", "race"])
    assert info.value.field == "race"
    assert "only some of the model's input columns" in info.value.message
    assert "missing ['race']" in info.value.message
    with pytest.raises(DataValidationError, match="none of the model's input columns"):
        compute_drift(adult_statistics, pa.table({"x": [1]}), columns=["age", "sex"])
    report = compute_drift(adult_statistics, current, columns=["age", "workclass", "sex"])
    assert report["missing_columns"] == []
    columns = by_column(report)
    assert set(columns) == {"age", "workclass", "sex"}
    # everything in the null bin, which was (nearly) empty in training: drift
    assert columns["age"]["verdict"] == "drift"
    assert columns["workclass"]["verdict"] == "drift"
    assert columns["sex"]["verdict"] == "stable"


def test_numbers_as_text_are_read_like_training(adult_statistics: dict[str, Any]) -> None:
    ages = adult_statistics["columns"]["age"]
    current = pa.table({"age": [str(int(v)) for v in np.linspace(20, 60, 300)]})
    report = compute_drift(adult_statistics, current, columns=["age"])
    assert by_column(report)["age"]["kind"] == ages["kind"] == "numeric"
    with pytest.raises(DataValidationError) as info:
        compute_drift(adult_statistics, pa.table({"age": ["old"] * 10}), columns=["age"])
    assert info.value.field == "age"


def test_counts_use_training_bins() -> None:
    # the whole current sample lands in one training bin, so PSI equals the hand computation
    reference = compute_statistics(pa.table({"x": list(range(100))}))
    current = pa.table({"x": [0] * 200})
    counts = np.asarray(reference["columns"]["x"]["counts"], float)
    expected = psi(counts, np.array([200.0] + [0.0] * (len(counts) - 1)))
    report = compute_drift(reference, current, columns=["x"])
    assert by_column(report)["x"]["psi"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_file_is_read_in_batches_with_the_same_report(
    adult_statistics: dict[str, Any],
    adult_test_table: pa.Table,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """A Parquet file by row-group batches, a CSV streamed (every CSV counts as large here)."""
    from keel.data import reader
    from keel.monitor import drift

    monkeypatch.setattr(reader, "STREAM_CSV_BYTES", 0)
    monkeypatch.setattr(drift, "BATCH_ROWS", 3000)
    batches: list[int] = []
    coerced = drift.coerced_columns

    def counted(table: pa.Table, *args: Any) -> Any:
        batches.append(table.num_rows)
        return coerced(table, *args)

    monkeypatch.setattr(drift, "coerced_columns", counted)
    shifted = adult_test_table.set_column(0, "age", pc.add(adult_test_table["age"], 15))
    path = tmp_path / f"current.{kind}"
    if kind == "parquet":
        pq.write_table(shifted, path, row_group_size=3000)
    else:
        pv.write_csv(shifted, path)
    columns = features(shifted)
    from_file = compute_drift(adult_statistics, path, columns=columns)
    assert len(batches) == 6 and sum(batches) == 16281  # read 3,000 rows at a time
    in_memory = compute_drift(adult_statistics, shifted, columns=columns)
    assert from_file == in_memory
    assert from_file["rows"] == 16281 and from_file["drifted_columns"] == ["age"]
    assert from_file["missing_columns"] == []


def test_too_few_rows_are_not_enough_data_for_any_column(adult_statistics: dict[str, Any]) -> None:
    current = pa.table({"age": [90], "sex": ["Female"]})
    report = compute_drift(adult_statistics, current, columns=["age", "sex"], min_rows=100)
    assert report["verdict"] == "not_enough_data"
    assert report["drifted_columns"] == []
    assert {c["verdict"] for c in report["columns"]} == {"not_enough_data"}
