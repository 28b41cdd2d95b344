"""A stale schema.yaml: the run stops with the difference and the refresh command; ``keel schema
infer --update`` refreshes it keeping the reviewer's edits; ``schema: auto`` refreshes it itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from keel.config import load_config
from keel.errors import ConfigError, DataValidationError
from keel.pipeline.runner import StepResult, run_steps
from keel.pipeline.standard import default_steps
from keel.project import Project
from keel.validate.refresh import refresh_schema, stale_changes
from keel.validate.schema import ColumnSchema, Schema, read_schema

UP_TO_SCHEMA = ("ingest_train", "split", "profile", "schema")


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


def write_data(root: Path, *, extra: bool = False, text_a: bool = False) -> None:
    header = "a,b,c,y" + (",d" if extra else "")
    lines = [header]
    for i in range(200):
        a = f"k{i % 7}" if text_a else str(i % 50)
        row = f"{a},{i * 0.5},{'xyz'[i % 3]},{i % 2}" + (f",{i % 3}" if extra else "")
        lines.append(row)
    (root / "data.csv").write_text("\n".join(lines) + "\n")


def make_project(root: Path, **extra: object) -> Path:
    root.mkdir(parents=True)
    write_data(root)
    config = {
        "project": "stale",
        "data": {"train": {"path": "data.csv"}, "target": "y"},
        "model": {"name": "stale"},
        **extra,
    }
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def run_to_schema(root: Path) -> list[StepResult]:
    with Project(root) as project:
        steps = [s for s in default_steps(project) if s.name in UP_TO_SCHEMA]
        return run_steps(project, steps, console=Console(quiet=True))


def review(root: Path) -> None:
    """A reviewer's edits: a threshold, a role, a severity."""
    path = root / "schema.yaml"
    schema = yaml.safe_load(path.read_text())
    schema["columns"]["b"]["psi_warn"] = 0.2
    schema["columns"]["c"]["role"] = "ignored"
    schema["columns"]["a"]["severities"] = {"out_of_range": "error"}
    path.write_text(yaml.safe_dump(schema, sort_keys=False))


def test_refresh_keeps_edits_and_takes_new_columns_and_types() -> None:
    reviewed = Schema(
        columns={
            "a": ColumnSchema(type="int", min=0, max=9, psi_warn=0.3, role="entity"),
            "b": ColumnSchema(type="float", min=0, max=1, js_warn=0.05),
            "gone": ColumnSchema(type="string"),
        },
        severities={"duplicate_rows": "error"},
    )
    inferred = Schema(
        columns={
            "new": ColumnSchema(type="float", min=1, max=2),
            "b": ColumnSchema(type="int", min=5, max=7),  # whole numbers: float still takes them
            "a": ColumnSchema(type="string", categories=["u", "v"]),
        }
    )
    changes = stale_changes(reviewed, inferred)
    assert [(c.column, c.change) for c in changes] == [
        ("a", "type_changed"),
        ("gone", "column_removed"),
        ("new", "column_added"),
    ]
    merged = refresh_schema(reviewed, inferred)
    assert list(merged.columns) == ["a", "b", "new"]  # reviewed order, then new columns
    assert merged.columns["b"] == reviewed.columns["b"]
    a = merged.columns["a"]
    assert (a.type, a.categories, a.min, a.max) == ("string", ["u", "v"], None, None)
    assert (a.role, a.psi_warn) == ("entity", 0.3)
    assert merged.columns["new"] == inferred.columns["new"]
    assert merged.severities == {"duplicate_rows": "error"}
    assert stale_changes(merged, inferred) == []


def test_text_booleans_kept_as_string_are_not_stale() -> None:
    reviewed = Schema(columns={"yes": ColumnSchema(type="string", categories=["No", "Yes"])})
    inferred = Schema(
        columns={"yes": ColumnSchema(type="bool", true_values=["Yes"], false_values=["No"])}
    )
    assert stale_changes(reviewed, inferred) == []


def test_a_stale_schema_stops_the_run_with_the_difference_and_the_fix(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    run_to_schema(root)
    review(root)
    run_to_schema(root)  # the edits alone are not staleness
    write_data(root, extra=True, text_a=True)
    with pytest.raises(DataValidationError) as caught:
        run_to_schema(root)
    message = caught.value.message
    assert "schema.yaml no longer matches the training data (2 difference(s))" in message
    assert "'a' type int -> string" in message and "column 'd' added" in message
    assert "keel schema infer --update" in message and "schema: auto" in message
    with Project(root) as project:
        (last,) = project.metadata.list_runs(limit=1)
        assert (last.step, last.status) == ("schema", "failed")
    done = keel_cli("run", cwd=root)
    assert done.returncode != 0 and "keel schema infer --update" in done.stderr
    assert "Traceback" not in done.stderr


def test_schema_infer_update_refreshes_and_keeps_the_edits(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    run_to_schema(root)
    review(root)
    write_data(root, extra=True, text_a=True)
    done = keel_cli("schema", "infer", "--update", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "refreshed, 2 change(s)" in done.stdout and "'a' type int -> string" in done.stdout
    schema = read_schema(root / "schema.yaml")
    assert list(schema.columns) == ["a", "b", "c", "y", "d"]
    assert schema.columns["b"].psi_warn == 0.2 and schema.columns["c"].role == "ignored"
    a = schema.columns["a"]
    assert a.type == "string" and a.severities == {"out_of_range": "error"}
    assert schema.columns["d"].type == "int"
    statuses = {r.step: r.status for r in run_to_schema(root)}
    assert statuses["schema"] == "succeeded"
    again = keel_cli("schema", "infer", "--update", "-f", "json", cwd=root)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changes"] == []


def test_schema_infer_update_from_a_named_file_and_without_a_schema(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    created = keel_cli("schema", "infer", "--update", cwd=root)
    assert created.returncode == 0 and "inferred (there was none)" in created.stdout
    assert read_schema(root / "schema.yaml").target() == "y"
    other = tmp_path / "other.csv"
    other.write_text("a,b,c,y,e\n1,0.5,x,0,q\n2,1.5,y,1,r\n")
    done = keel_cli("schema", "infer", str(other), "--update", "-f", "json", cwd=root)
    assert done.returncode == 0, done.stderr
    changes = json.loads(done.stdout)["changes"]
    assert [(c["column"], c["change"]) for c in changes] == [("e", "column_added")]


def test_schema_infer_needs_data_or_update(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    done = keel_cli("schema", "infer", cwd=root)
    assert done.returncode == 2 and "--update" in done.stderr and "Traceback" not in done.stderr


def test_schema_auto_refreshes_and_warns(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", schema="auto")
    run_to_schema(root)
    review(root)
    write_data(root, extra=True, text_a=True)
    results = {r.step: r for r in run_to_schema(root)}
    schema_run = results["schema"]
    assert schema_run.status == "succeeded"
    assert "refreshed from the data (schema: auto), 2 change(s)" in schema_run.warnings[0]
    schema = read_schema(root / "schema.yaml")
    assert "d" in schema.columns and schema.columns["b"].psi_warn == 0.2


def test_schema_setting_is_checked(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", schema="automatic")
    with pytest.raises(ConfigError, match="schema: Input should be 'reviewed' or 'auto'"):
        load_config(root)
    (root / "keel.yaml").write_text((root / "keel.yaml").read_text().replace("schema:", "schem:"))
    with pytest.raises(ConfigError, match="Did you mean 'schema'"):
        load_config(root)
    assert load_config(make_project(tmp_path / "q")).schema_mode == "reviewed"
