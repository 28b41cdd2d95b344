"""Anomalies of Adult against its inferred schema: clean data passes, each mutation is caught."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.anomalies import Anomaly, validate_data, validate_table
from keel.validate.schema import ColumnSchema, Schema, infer_schema


def kinds(found: list[Anomaly]) -> set[tuple[str | None, str, str]]:
    return {(a.column, a.kind, a.severity) for a in found}


def with_nulls(table: pa.Table, name: str, fraction: float, seed: int = 0) -> pa.Table:
    mask = np.random.default_rng(seed).random(table.num_rows) < fraction
    column = pc.if_else(pa.array(mask), pa.scalar(None, table.schema.field(name).type), table[name])
    return table.set_column(table.schema.get_field_index(name), name, column)


def test_clean_train_has_no_anomaly(adult_train_table: pa.Table, adult_schema: Schema) -> None:
    assert validate_table(adult_train_table, adult_schema, name="train") == []


def test_clean_test_has_no_error(adult_test_table: pa.Table, adult_schema: Schema) -> None:
    found = validate_table(adult_test_table, adult_schema, name="test")
    assert [a for a in found if a.severity == "error"] == []
    # the one known oddity: a single fnlwgt above the training maximum
    assert kinds(found) == {("fnlwgt", "out_of_range", "warning")}
    assert found[0].details["above"] == 1
    assert found[0].message.startswith("test: column 'fnlwgt'")


def test_renamed_column(adult_train_table: pa.Table, adult_schema: Schema) -> None:
    names = ["Age" if n == "age" else n for n in adult_train_table.column_names]
    found = validate_table(adult_train_table.rename_columns(names), adult_schema)
    assert kinds(found) == {
        ("age", "missing_column", "error"),
        ("Age", "unexpected_column", "warning"),
    }


def test_injected_nulls_above_the_allowance(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any]
) -> None:
    strict = infer_schema(adult_statistics, target="income", max_null_fraction=0.1)
    mutated = with_nulls(adult_train_table, "hours-per-week", 0.3)
    found = validate_table(mutated, strict)
    assert kinds(found) == {("hours-per-week", "null_fraction", "error")}
    assert found[0].details["null_fraction"] == mutated["hours-per-week"].null_count / 32561
    assert 0.28 < found[0].details["null_fraction"] < 0.32
    assert found[0].details["allowed"] == 0.1


def test_nulls_within_the_default_allowance_pass(
    adult_train_table: pa.Table, adult_schema: Schema
) -> None:
    # a column with no nulls in the reference may be up to 5% null by default, not 30%
    assert validate_table(with_nulls(adult_train_table, "age", 0.03), adult_schema) == []
    found = validate_table(with_nulls(adult_train_table, "age", 0.3), adult_schema)
    assert kinds(found) == {("age", "null_fraction", "error")}


def test_any_null_in_the_target_is_an_error(
    adult_train_table: pa.Table, adult_schema: Schema
) -> None:
    found = validate_table(with_nulls(adult_train_table, "income", 0.001), adult_schema)
    assert kinds(found) == {("income", "null_fraction", "error")}


def test_numbers_as_text_is_a_type_mismatch(
    adult_train_table: pa.Table, adult_schema: Schema
) -> None:
    index = adult_train_table.schema.get_field_index("age")
    mutated = adult_train_table.set_column(index, "age", adult_train_table["age"].cast(pa.string()))
    found = validate_table(mutated, adult_schema)
    assert kinds(found) == {("age", "type_mismatch", "error")}
    assert found[0].details == {"expected": "int", "found": "string"}


def test_text_as_numbers_is_a_type_mismatch() -> None:
    schema = Schema(columns={"c": ColumnSchema(type="string", categories=["a"])})
    found = validate_table(pa.table({"c": [1, 2]}), schema)
    assert kinds(found) == {("c", "type_mismatch", "error")}


def test_int_data_satisfies_a_float_column() -> None:
    schema = Schema(columns={"x": ColumnSchema(type="float", min=0.0, max=10.0)})
    assert validate_table(pa.table({"x": [1, 2, 3]}), schema) == []


def test_new_category_is_unseen(adult_train_table: pa.Table, adult_schema: Schema) -> None:
    values = adult_train_table["workclass"].to_pylist()
    values[:7] = ["Astronaut"] * 5 + ["Pirate"] * 2
    index = adult_train_table.schema.get_field_index("workclass")
    mutated = adult_train_table.set_column(index, "workclass", pa.array(values))
    found = validate_table(mutated, adult_schema)
    assert kinds(found) == {("workclass", "unseen_category", "warning")}
    assert found[0].details == {"rows": 7, "values": ["Astronaut", "Pirate"]}


def test_out_of_range_counts_both_sides() -> None:
    schema = Schema(columns={"x": ColumnSchema(type="int", min=0.0, max=10.0)})
    found = validate_table(pa.table({"x": [-1, -2, 5, 11, None]}), schema)
    assert kinds(found) == {("x", "out_of_range", "warning")}
    assert found[0].details == {"below": 2, "above": 1, "fraction": 0.6}


def test_non_nullable_column_rejects_a_single_null() -> None:
    schema = Schema(columns={"x": ColumnSchema(type="int", nullable=False)})
    assert validate_table(pa.table({"x": [1, 2]}), schema) == []
    found = validate_table(pa.table({"x": [1, None]}), schema)
    assert kinds(found) == {("x", "null_fraction", "error")}


def test_to_dict_is_json_ready() -> None:
    anomaly = Anomaly("x", "out_of_range", "warning", "msg", {"below": 1})
    assert anomaly.to_dict() == {
        "column": "x",
        "kind": "out_of_range",
        "severity": "warning",
        "message": "msg",
        "details": {"below": 1},
    }


def test_empty_table_does_not_divide_by_zero(adult_schema: Schema) -> None:
    empty = pa.table({n: pa.array([], pa.int64()) for n in ["age"]})
    found = validate_table(empty, Schema(columns={"age": adult_schema.columns["age"]}))
    assert found == []


# --- validate_data: statistics and the reference ------------------------------------------------


def test_held_out_split_has_no_error(
    adult_test_table: pa.Table, adult_statistics: dict[str, Any], adult_schema: Schema
) -> None:
    report = validate_data(
        adult_test_table, schema=adult_schema, reference=adult_statistics, name="test"
    )
    assert report.ok and report.errors == []
    assert report.rows == 16281 and report.reference_rows == 32561
    # a random split: no column shifts past a warning threshold
    assert not [a for a in report.anomalies if a.kind in ("distribution_shift", "label_shift")]
    assert {p.name for p in report.profiles} == set(adult_test_table.column_names)


def test_report_to_dict_has_exactly_the_documented_keys(adult_train_table: pa.Table) -> None:
    report = validate_data(adult_train_table.slice(0, 100), reference=adult_train_table)
    body = report.to_dict()
    assert list(body) == ["ok", "rows", "anomalies"]
    assert body["rows"] == 100
    assert {k for a in body["anomalies"] for k in a} == {
        "column", "kind", "severity", "message", "details",
    }  # fmt: skip
    assert [a["kind"] for a in body["anomalies"]] == ["row_count"]  # 100 of 32561 rows
    assert report.notes  # and too few rows to judge shift, said rather than flagged


def test_schema_is_inferred_from_the_reference_when_not_given(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any]
) -> None:
    mutated = with_nulls(adult_train_table, "age", 0.7)
    report = validate_data(mutated, reference=adult_statistics, target="income")
    assert ("age", "null_fraction", "error") in kinds(report.anomalies)
    assert not report.ok


def test_duplicates_are_counted_with_row_ids() -> None:
    table = pa.table({"a": [1, 2, 1, 3, 1], "b": ["x", "y", "x", "y", "z"]})
    found = [a for a in validate_data(table).anomalies if a.kind == "duplicate_rows"]
    assert len(found) == 1
    assert found[0].details["rows"] == 1 and found[0].details["row_ids"] == [2]
    assert found[0].severity == "warning" and found[0].column is None


def test_constant_column_only_when_the_reference_varied() -> None:
    ref = pa.table({"a": [1, 2, 3] * 100, "k": [7] * 300})
    cur = pa.table({"a": [5] * 300, "k": [7] * 300})
    found = validate_data(cur, reference=ref).anomalies
    constant = [a for a in found if a.kind == "constant_column"]
    assert [(a.column, a.severity) for a in constant] == [("a", "warning")]


def test_row_count_against_the_reference() -> None:
    ref = pa.table({"a": np.arange(1000)})
    assert [a.kind for a in validate_data(ref.slice(0, 600), reference=ref).anomalies] == []
    few = validate_data(ref.slice(0, 400), reference=ref).anomalies
    assert [(a.kind, a.severity) for a in few if a.kind == "row_count"] == [
        ("row_count", "warning")
    ]
    empty = validate_data(ref.slice(0, 0), reference=ref)
    assert ("row_count", "error") in {(a.kind, a.severity) for a in empty.anomalies}
    assert not empty.ok


def test_shifted_column_is_a_distribution_shift(adult_train_table: pa.Table) -> None:
    index = adult_train_table.schema.get_field_index("hours-per-week")
    longer = pc.add(adult_train_table["hours-per-week"], 15)
    shifted = adult_train_table.set_column(index, "hours-per-week", longer)
    report = validate_data(shifted, reference=adult_train_table)
    shifts = [a for a in report.anomalies if a.kind == "distribution_shift"]
    assert [(a.column, a.severity) for a in shifts] == [("hours-per-week", "error")]
    metrics = shifts[0].details["metrics"]
    assert metrics["psi"] > 0.25 and metrics["wasserstein"] > 1.0


def test_severities_from_the_schema_override_the_defaults(
    adult_train_table: pa.Table, adult_schema: Schema
) -> None:
    relaxed = dataclasses.replace(
        adult_schema, severities={"missing_column": "warning", "duplicate_rows": "error"}
    )
    renamed = adult_train_table.rename_columns(
        ["Age" if n == "age" else n for n in adult_train_table.column_names]
    )
    report = validate_data(renamed, schema=relaxed)
    assert ("age", "missing_column", "warning") in kinds(report.anomalies)
    assert (None, "duplicate_rows", "error") in kinds(report.anomalies)  # Adult repeats 24 rows
    assert [a.kind for a in report.errors] == ["duplicate_rows"]


def test_type_mismatch_column_is_not_compared(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any]
) -> None:
    index = adult_train_table.schema.get_field_index("age")
    text = adult_train_table.set_column(index, "age", adult_train_table["age"].cast(pa.string()))
    report = validate_data(text, reference=adult_statistics)
    assert {a.kind for a in report.anomalies if a.column == "age"} == {"type_mismatch"}


def test_a_parquet_path_is_streamed_with_the_same_findings_as_the_table(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any], tmp_path: Any
) -> None:
    import pyarrow.parquet as pq

    from keel.validate import statistics

    schema = infer_schema(adult_statistics, target="income")
    mutated = with_nulls(adult_train_table, "occupation", 0.3)
    mutated = pa.concat_tables([mutated, mutated.slice(0, 50)])  # 50 duplicated rows
    workclass = pc.if_else(
        pc.equal(mutated["workclass"], "Private"), "Privat", mutated["workclass"]
    )  # a misspelt category in most rows
    mutated = mutated.set_column(1, "workclass", workclass)
    ages = pc.if_else(pc.equal(mutated["age"], 90), 190, mutated["age"])
    mutated = mutated.set_column(0, "age", ages)
    path = tmp_path / "mutated.parquet"
    pq.write_table(mutated, path, row_group_size=10_000)  # several batches
    statistics.BATCH_ROWS, saved = 10_000, statistics.BATCH_ROWS
    try:
        streamed = validate_data(path, schema=schema, reference=adult_statistics, name="x")
    finally:
        statistics.BATCH_ROWS = saved
    in_memory = validate_data(mutated, schema=schema, reference=adult_statistics, name="x")
    assert streamed.to_dict() == in_memory.to_dict()
    found = {a.kind: a for a in streamed.anomalies if a.column in (None, "age", "workclass")}
    repeated = mutated.to_pandas().duplicated(keep="first").to_numpy()
    assert found["duplicate_rows"].details["rows"] == int(repeated.sum()) >= 50
    assert found["duplicate_rows"].details["row_ids"] == np.flatnonzero(repeated)[:20].tolist()
    assert found["out_of_range"].details["above"] == int(pc.sum(pc.equal(ages, 190)).as_py())
    assert found["unseen_category"].details["values"][0] == "Privat"
    assert ("occupation", "null_fraction", "error") in kinds(streamed.anomalies)
