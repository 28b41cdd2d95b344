"""Schema inference from statistics, and the schema.yaml round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from keel.errors import ConfigError
from keel.validate.schema import ColumnSchema, Schema, infer_schema, read_schema, write_schema
from keel.validate.statistics import compute_statistics


def test_roles_on_adult(adult_schema: Schema) -> None:
    roles = {name: column.role for name, column in adult_schema.columns.items()}
    assert roles.pop("income") == "target"
    assert roles.pop("sex") == "sensitive"
    assert roles.pop("race") == "sensitive"
    assert set(roles.values()) == {"feature"}
    assert adult_schema.target() == "income"
    assert adult_schema.features() == [n for n in adult_schema.columns if n != "income"]


def test_types_ranges_and_categories_on_adult(adult_schema: Schema) -> None:
    columns = adult_schema.columns
    assert {n for n, c in columns.items() if c.type == "int"} == {
        "age",
        "fnlwgt",
        "education-num",
        "capital-gain",
        "capital-loss",
        "hours-per-week",
    }
    assert {n for n, c in columns.items() if c.type == "string"} == {
        "workclass",
        "education",
        "marital-status",
        "occupation",
        "relationship",
        "race",
        "sex",
        "native-country",
        "income",
    }
    assert (columns["age"].min, columns["age"].max) == (17.0, 90.0)
    assert columns["age"].categories is None
    assert columns["sex"].categories == ["Female", "Male"]
    assert columns["income"].categories == ["<=50K", ">50K"]
    assert columns["race"].categories is not None and "White" in columns["race"].categories
    assert "?" not in (columns["workclass"].categories or [])


def test_nullability_on_adult(adult_schema: Schema) -> None:
    income = adult_schema.columns["income"]
    assert (income.nullable, income.max_null_fraction) == (False, 0.0)
    assert adult_schema.columns["workclass"].nullable
    assert adult_schema.columns["workclass"].max_null_fraction == 0.5


def test_observed_nulls_widen_the_allowance() -> None:
    table = pa.table({"x": [1, None, None, None], "y": ["a", "b", "a", None]})
    schema = infer_schema(compute_statistics(table), max_null_fraction=0.1)
    assert schema.columns["x"].max_null_fraction == pytest.approx(1.0)  # 75% seen
    assert schema.columns["y"].max_null_fraction == pytest.approx(0.51)  # 25% seen -> 2x + 0.01


def test_drop_marks_ignored_and_too_many_categories_means_open_domain() -> None:
    table = pa.table({"id": [f"u{i}" for i in range(60)], "n": list(range(60))})
    schema = infer_schema(compute_statistics(table), drop=["id"])
    assert schema.columns["id"].role == "ignored"
    assert schema.columns["id"].categories is None  # 60 distinct > top-k kept
    assert schema.features() == ["n"]
    assert schema.target() is None


def test_float_and_bool_types() -> None:
    table = pa.table({"f": [0.5, 1.5], "b": [True, False]})
    schema = infer_schema(compute_statistics(table))
    assert schema.columns["f"].type == "float"
    assert schema.columns["b"].type == "bool"
    assert schema.columns["b"].categories == ["false", "true"]


def test_write_read_round_trip(adult_schema: Schema, tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    write_schema(adult_schema, path)
    assert read_schema(path) == adult_schema
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.yaml"]  # no temp file left
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Inferred by keel")
    assert "psi_warn" not in text  # defaults are left out for a short review


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("stale", encoding="utf-8")
    schema = Schema(columns={"a": ColumnSchema(type="int", min=0.0, max=1.0)})
    write_schema(schema, path)
    assert read_schema(path) == schema
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.yaml"]


def test_reviewed_edits_take_effect(adult_schema: Schema, tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    write_schema(adult_schema, path)
    text = path.read_text(encoding="utf-8").replace("max: 90.0", "max: 120.0", 1)
    path.write_text(text, encoding="utf-8")
    assert read_schema(path).columns["age"].max == 120.0


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("columns:\n  age:\n    type: integer\n", "columns.age.type"),
        ("columns:\n  age:\n    type: int\n    rol: feature\n", "columns.age.rol"),
        ("columns:\n  age:\n    type: int\n    max_null_fraction: 2\n", "max_null_fraction"),
        ("colums: {}\n", "colums"),
    ],
)
def test_read_schema_errors_name_the_key(tmp_path: Path, body: str, names: str) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"schema\.yaml: .*Fix it or delete it") as info:
        read_schema(path)
    assert names in info.value.message


def test_read_schema_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("columns: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_schema(path)


def test_read_schema_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the schema"):
        read_schema(tmp_path / "schema.yaml")


def test_column_schema_is_frozen_and_strict() -> None:
    column = ColumnSchema(type="int")
    with pytest.raises(ValueError, match="frozen"):
        column.type = "float"  # type: ignore[misc]
    data: dict[str, Any] = {"type": "int", "colour": "red"}
    with pytest.raises(ValueError, match="colour"):
        ColumnSchema.model_validate(data)
