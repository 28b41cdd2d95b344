"""Anomalies of Adult against its inferred schema: clean data passes, each mutation is caught."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.anomalies import Anomaly, validate_table
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
    # the default schema allows up to 50% nulls in a feature
    assert validate_table(with_nulls(adult_train_table, "age", 0.3), adult_schema) == []
    found = validate_table(with_nulls(adult_train_table, "age", 0.6), adult_schema)
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
