"""Schema inference from statistics, and the schema.yaml round trip."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from keel.errors import ConfigError
from keel.validate.evolution import diff_schemas
from keel.validate.schema import (
    ColumnSchema,
    Schema,
    infer_schema,
    read_schema,
    write_schema,
)
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
    # 5.64% null in adult.data -> allowance 2x + 1 point; a column with no nulls gets the 5% floor
    assert adult_schema.columns["workclass"].max_null_fraction == pytest.approx(0.1228)
    assert adult_schema.columns["age"].max_null_fraction == 0.05


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
    # the line of the key (or of the deepest part of it that is there)
    with pytest.raises(ConfigError, match=r"schema\.yaml:\d+: .*Fix it or delete it") as info:
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
    with pytest.raises(dataclasses.FrozenInstanceError):
        column.type = "float"  # type: ignore[misc]
    data: dict[str, Any] = {"type": "int", "colour": "red"}
    with pytest.raises(ConfigError, match="colour"):
        ColumnSchema.from_dict(data)
    with pytest.raises(ConfigError, match=r"type: 'integer' is not one of int, float"):
        ColumnSchema(type="integer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"js_warn: must be >= 0.0, got -1"):
        ColumnSchema(type="int", js_warn=-1)
    with pytest.raises(ConfigError, match=r"nullable: expected true or false"):
        ColumnSchema(type="int", nullable="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"severities: unknown anomaly kind 'duplicates'"):
        Schema(columns={}, severities={"duplicates": "error"})  # type: ignore[dict-item]
    # YAML numbers and unquoted values come out as the contract's types
    loose = ColumnSchema.from_dict({"type": "string", "min": 1, "categories": [1, True, "a"]})
    assert loose.min == 1.0 and isinstance(loose.min, float)
    assert loose.categories == ["1", "true", "a"]


# --- roles, new fields, old files -------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
BIKE = [
    REPO / "tests" / "data" / "fixtures" / "hour.csv",
    REPO.parent / "shared" / "data" / "bike-sharing" / "hour.csv",
]


@pytest.fixture(scope="module")
def bike_csv() -> Path:
    found = next((p for p in BIKE if p.exists()), None)
    if found is None:
        pytest.skip("bike-sharing hour.csv not available")
    return found


def test_roles_guessed_on_bike_sharing(bike_csv: Path) -> None:
    schema = infer_schema(compute_statistics(pv.read_csv(bike_csv)), target="cnt")
    roles = {name: column.role for name, column in schema.columns.items()}
    assert roles.pop("dteday") == "timestamp"
    assert roles.pop("instant") == "entity"
    assert roles.pop("cnt") == "target"
    assert set(roles.values()) == {"feature"}
    assert schema.columns["dteday"].type == "date"
    assert schema.columns["temp"].type == "float"
    assert "instant" not in schema.features() and "dteday" not in schema.features()


def test_adult_gets_no_guessed_roles(adult_statistics: dict[str, Any]) -> None:
    schema = infer_schema(adult_statistics, target="income")
    assert {c.role for n, c in schema.columns.items() if n != "income"} == {"feature"}


def _stats_of(**columns: list[Any]) -> dict[str, Any]:
    return compute_statistics(pa.table(columns))


def test_roles_from_names_and_values() -> None:
    n = 200
    stats = _stats_of(
        user_id=[f"u{i}" for i in range(n)],
        customerKey=list(range(1000, 1000 + n)),
        contact=[f"person{i}@example.com" for i in range(n)],
        phone_number=[f"+1 555 010 {i:04d}" for i in range(n)],
        tax=[f"{100 + i:03d}-45-{6789 + i:04d}" for i in range(n)],
        created_at=[f"2024-01-{1 + i % 28:02d}" for i in range(n)],
        day=[f"2024-02-{1 + i % 28:02d}T10:00:00" for i in range(n)],
        paid=[i % 2 for i in range(n)],
        level=[i % 5 for i in range(n)],
        row=list(range(n)),
        score=[float(i) / 3 for i in range(n)],
    )
    schema = infer_schema(stats)
    roles = {name: column.role for name, column in schema.columns.items()}
    assert roles == {
        "user_id": "entity",
        "customerKey": "entity",
        "contact": "pii",
        "phone_number": "pii",
        "tax": "pii",
        "created_at": "timestamp",
        "day": "timestamp",
        "paid": "feature",  # ends in 'id' but far from unique
        "level": "feature",
        "row": "entity",  # 0..n-1: a row number
        "score": "feature",  # unique but not integers
    }


def test_configured_roles_win_over_guesses() -> None:
    stats = _stats_of(email=["a@b.co", "c@d.co", "e@f.co"], order_id=[1, 2, 3])
    schema = infer_schema(stats, target="order_id", sensitive=["email"])
    assert schema.columns["email"].role == "sensitive"
    assert schema.columns["order_id"].role == "target"


def test_high_cardinality_strings_get_no_category_set() -> None:
    stats = _stats_of(city=[f"c{i % 400}" for i in range(2000)], colour=["red", "blue"] * 1000)
    schema = infer_schema(stats)
    assert schema.columns["city"].categories is None
    assert schema.columns["colour"].categories == ["blue", "red"]


def test_thresholds_and_severities_round_trip(tmp_path: Path) -> None:
    schema = Schema(
        columns={
            "a": ColumnSchema(
                type="float",
                js_warn=0.05,
                wasserstein_error=1.0,
                severities={"unseen_category": "warning", "out_of_range": "error"},
            ),
            "t": ColumnSchema(type="timestamp", role="timestamp"),
        },
        severities={"duplicate_rows": "warning"},
    )
    path = tmp_path / "schema.yaml"
    write_schema(schema, path)
    loaded = read_schema(path)
    assert loaded == schema
    assert loaded.severity_of("unseen_category", "error", column="a") == "warning"
    assert loaded.severity_of("duplicate_rows", "error") == "warning"
    assert loaded.severity_of("duplicate_rows", "error", column="a") == "warning"
    assert loaded.severity_of("row_count", "error", column="t") == "error"
    text = path.read_text(encoding="utf-8")
    assert "js_warn: 0.05" in text and "js_error" not in text.split("columns:")[1]


def test_unknown_anomaly_kind_in_severities_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("columns:\n  a:\n    type: int\n    severities: {typo_kind: warning}\n")
    with pytest.raises(ConfigError, match=r"columns\.a\.severities"):
        read_schema(path)


OLD_SCHEMA = """\
# Inferred by keel; review and edit. It is the contract for data and requests.
columns:
  age:
    type: int
    max_null_fraction: 0.5
    min: 17.0
    max: 90.0
    psi_warn: 0.2
  sex:
    type: string
    role: sensitive
    max_null_fraction: 0.5
    categories:
    - Female
    - Male
  income:
    type: string
    role: target
    nullable: false
    max_null_fraction: 0.0
    categories:
    - <=50K
    - '>50K'
"""


def test_issue_2_schema_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(OLD_SCHEMA, encoding="utf-8")
    schema = read_schema(path)
    assert schema.target() == "income"
    assert schema.columns["age"].psi_warn == 0.2
    assert schema.columns["age"].js_warn == 0.1  # new thresholds take their defaults
    assert schema.columns["sex"].severities == {}
    assert schema.severities == {}


# --- diff ---------------------------------------------------------------------------------------


def _changes(old: Schema, new: Schema) -> dict[tuple[str | None, str], bool]:
    return {(c.column, c.change): c.breaking for c in diff_schemas(old, new)}


BASE = Schema(
    columns={
        "age": ColumnSchema(type="int", min=17.0, max=90.0),
        "sex": ColumnSchema(type="string", role="sensitive", categories=["Female", "Male"]),
        "city": ColumnSchema(type="string"),
        "income": ColumnSchema(type="string", role="target", nullable=False, max_null_fraction=0.0),
    }
)


def _edit(name: str, **changes: Any) -> Schema:
    columns = dict(BASE.columns)
    columns[name] = dataclasses.replace(columns[name], **changes)
    return Schema(columns=columns)


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (_edit("age", max=120.0), {("age", "range_widened"): False}),
        (_edit("age", min=18.0), {("age", "range_narrowed"): True}),
        (_edit("age", min=None), {("age", "range_widened"): False}),
        (_edit("age", type="float"), {("age", "type_changed"): False}),
        (_edit("age", type="string"), {("age", "type_changed"): True}),
        (
            _edit("sex", categories=["Female", "Male", "Other"]),
            {("sex", "categories_added"): False},
        ),
        (_edit("sex", categories=["Male"]), {("sex", "categories_removed"): True}),
        (_edit("sex", categories=None), {("sex", "domain_opened"): False}),
        (_edit("city", categories=["Paris"]), {("city", "domain_closed"): True}),
        (_edit("sex", role="feature"), {("sex", "role_changed"): False}),
        (_edit("city", role="ignored"), {("city", "role_changed"): True}),
        (_edit("income", role="feature"), {("income", "role_changed"): True}),
        (_edit("city", nullable=False), {("city", "nullability_changed"): True}),
        (_edit("income", nullable=True), {("income", "nullability_changed"): False}),
        (_edit("city", max_null_fraction=0.1), {("city", "null_fraction_changed"): True}),
        (_edit("age", psi_warn=0.2), {("age", "setting_changed"): False}),
        (_edit("age", severities={"out_of_range": "warning"}), {("age", "setting_changed"): False}),
    ],
)
def test_diff_classifies_each_change(new: Schema, expected: dict[tuple[str, str], bool]) -> None:
    assert _changes(BASE, new) == expected


def test_diff_added_and_removed_columns() -> None:
    columns = {k: v for k, v in BASE.columns.items() if k != "city"}
    columns["zip"] = ColumnSchema(type="string")
    columns["id"] = ColumnSchema(type="int", role="entity", nullable=False)
    assert _changes(BASE, Schema(columns=columns)) == {
        ("city", "column_removed"): True,
        ("zip", "column_added"): False,
        ("id", "column_added"): True,
    }
    assert diff_schemas(BASE, BASE) == []


# --- CLI ----------------------------------------------------------------------------------------


def _keel(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "keel.cli", *(str(a) for a in args)]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_schema_infer_yaml_and_json(bike_csv: Path, tmp_path: Path) -> None:
    done = _keel(
        "schema", "infer", bike_csv, "--target", "cnt", "--sensitive", "holiday", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Inferred by keel")
    path = tmp_path / "schema.yaml"
    path.write_text(done.stdout, encoding="utf-8")
    schema = read_schema(path)
    assert (schema.target(), schema.columns["holiday"].role) == ("cnt", "sensitive")
    assert schema.columns["dteday"].role == "timestamp"
    as_json = _keel(
        "schema",
        "infer",
        bike_csv,
        "--target",
        "cnt",
        "--sensitive",
        "holiday",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert as_json.returncode == 0, as_json.stderr
    assert Schema.from_dict(json.loads(as_json.stdout)) == schema


def test_cli_schema_infer_parquet_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3], "y": ["a", "b", None]}), data)
    done = _keel("schema", "infer", data, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "categories:" in done.stdout
    missing = _keel("schema", "infer", data, "--target", "nope", cwd=tmp_path)
    assert missing.returncode == 2
    assert "no column 'nope'" in missing.stderr
    nothing = _keel("schema", "infer", "nothing.csv", cwd=tmp_path)
    assert nothing.returncode == 2
    assert "neither a file nor a snapshot" in nothing.stderr


def test_cli_schema_diff_exit_codes(tmp_path: Path) -> None:
    old, new, same = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    write_schema(BASE, old)
    write_schema(_edit("sex", categories=["Male"]), new)
    write_schema(_edit("age", max=120.0), same)
    breaking = _keel("schema", "diff", old, new, cwd=tmp_path)
    assert breaking.returncode == 1
    assert "categories_removed" in breaking.stdout and "Female" in breaking.stdout
    fine = _keel("schema", "diff", old, same, "--format", "json", cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    body = json.loads(fine.stdout)
    assert body["breaking"] is False
    assert body["changes"][0]["change"] == "range_widened"
    bad = _keel("schema", "diff", old, tmp_path / "missing.yaml", cwd=tmp_path)
    assert bad.returncode == 2


def test_cli_schema_infer_from_a_snapshot(adult_root: Path, tmp_path: Path) -> None:
    from keel.project import Project

    root = tmp_path / "proj"
    shutil.copytree(adult_root, root, ignore=shutil.ignore_patterns(".keel", "schema.yaml"))
    data = tmp_path / "snap.parquet"
    pq.write_table(pa.table({"age": [30, 40, 50], "sex": ["Male", "Female", "Male"]}), data)
    with Project(root) as project:
        artifact = project.artifacts.put(data, kind="snapshot")
        project.metadata.record_artifact(artifact)
    done = _keel("schema", "infer", artifact.sha256[:12], "--format", "json", cwd=root)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["columns"]["sex"]["categories"] == ["Female", "Male"]
    assert body["columns"]["age"]["max"] == 50.0
