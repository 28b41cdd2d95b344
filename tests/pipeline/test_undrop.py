"""Taking a column out of keel.yaml's ``data.drop`` puts it back in the model on the next run:
schema.yaml remembers the role ``data.drop`` took away (``role_before_drop``), the run gives it
back and says so, and the model trains on it; a column a reviewer made ``ignored`` by hand
stays ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.errors import ConfigError
from keel.pipeline.contract import restore_undropped, update_schema
from keel.project import Project
from keel.validate.schema import (
    ColumnSchema,
    Schema,
    infer_schema,
    read_schema,
    write_schema,
)

ADULT = Path(__file__).resolve().parents[2] / "examples" / "adult" / "data" / "adult.data"
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
           "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
           "hours-per-week", "native-country", "income"]  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A `keel init` project on 3,000 Adult rows."""
    table = pcsv.read_csv(ADULT, read_options=pcsv.ReadOptions(column_names=COLUMNS))
    pcsv.write_csv(table.slice(0, 3000), tmp_path / "adult.csv")
    made = init_from_file(tmp_path / "adult", tmp_path / "adult.csv", "income")
    assert made.dropped == ()
    return made.directory


def set_drop(root: Path, drop: list[str]) -> None:
    config = root / "keel.yaml"
    text = config.read_text()
    before = next(line for line in text.splitlines() if line.startswith("  drop:"))
    config.write_text(text.replace(before, f"  drop: {drop}"))


def step(summary: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [s for s in summary["steps"] if s["step"] == name]
    return found


def test_a_column_taken_out_of_drop_is_trained_on_again(project: Path) -> None:
    set_drop(project, ["workclass"])
    first = keel.run(project)
    column = read_schema(project / "schema.yaml").columns["workclass"]
    assert (column.role, column.role_before_drop) == ("ignored", "feature")
    assert step(first, "features")["facts"]["inputs"] == 13  # 14 columns less workclass
    set_drop(project, [])
    done = subprocess.run([sys.executable, "-m", "keel.cli", "run"], cwd=project, text=True,
                          capture_output=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = " ".join((done.stdout + done.stderr).split())
    assert "workclass: back in the model (removed from data.drop)" in said
    column = read_schema(project / "schema.yaml").columns["workclass"]
    assert (column.role, column.role_before_drop) == ("feature", None)
    with Project(project) as proj:
        [features, *_] = proj.metadata.list_runs(step="features", limit=1)
        [train, *_] = proj.metadata.list_runs(step="train", limit=1)
    assert features.status == "succeeded" and features.params["facts"]["inputs"] == 14
    assert train.status == "succeeded"  # a new model, trained with workclass
    again = keel.run(project)  # nothing changed since: every step is reused
    assert [step(again, name)["status"] for name in ("schema", "train")] == ["cached", "cached"]


def test_dropping_again_and_a_reviewers_own_ignored_column(project: Path) -> None:
    set_drop(project, ["workclass"])
    keel.run(project)
    path = project / "schema.yaml"
    schema = read_schema(path)
    reviewed = dict(schema.columns)
    reviewed["fnlwgt"] = ColumnSchema(type="int", role="ignored")  # by hand: no note
    write_schema(Schema(columns=reviewed, severities=schema.severities), path)
    set_drop(project, ["occupation"])  # workclass back, occupation out
    summary = keel.run(project)
    assert step(summary, "schema")["warnings"] == [
        "workclass: back in the model (removed from data.drop)"
    ]
    columns = read_schema(path).columns
    assert columns["workclass"].role == "feature"
    assert (columns["occupation"].role, columns["occupation"].role_before_drop) == (
        "ignored",
        "feature",
    )
    assert columns["fnlwgt"].role == "ignored"  # the reviewer's choice stands
    assert step(summary, "features")["facts"]["inputs"] == 12  # less occupation and fnlwgt


def test_a_column_dropped_when_the_schema_was_inferred_gets_its_guessed_role(
    project: Path, adult_statistics: dict[str, Any]
) -> None:
    statistics = {**adult_statistics, "columns": dict(adult_statistics["columns"])}
    statistics["columns"]["row_id"] = {**statistics["columns"]["fnlwgt"], "distinct": 10**6,
                                       "count": 10**6, "nulls": 0}  # fmt: skip
    statistics["rows"] = 10**6
    schema = infer_schema(statistics, target="income", drop=["row_id", "age"])
    assert (schema.columns["row_id"].role, schema.columns["row_id"].role_before_drop) == (
        "ignored",
        "entity",
    )
    assert schema.columns["age"].role_before_drop == "feature"
    assert schema.columns["sex"].role_before_drop is None
    path = project / "schema.yaml"
    write_schema(schema, path)
    text = path.read_text()
    assert "role: ignored\n    role_before_drop: entity\n" in text  # reviewable in the file
    with Project(project) as proj:  # keel.yaml drops nothing: both come back
        assert restore_undropped(proj, path) == {"row_id": "entity", "age": "feature"}
        assert restore_undropped(proj, path) == {}
    columns = read_schema(path).columns
    assert (columns["row_id"].role, columns["age"].role) == ("entity", "feature")


def test_keel_schema_infer_update_gives_roles_back_too(project: Path) -> None:
    set_drop(project, ["workclass"])
    keel.run(project)
    set_drop(project, [])
    with Project(project) as proj:
        update = update_schema(proj)
    assert update.notes[0] == "workclass: back in the model (removed from data.drop)"
    assert read_schema(project / "schema.yaml").columns["workclass"].role == "feature"


def test_a_bad_role_before_drop_is_named() -> None:
    with pytest.raises(ConfigError, match=r"columns\.a\.role_before_drop: 'target' is not one of"):
        Schema.from_dict(
            yaml.safe_load("columns: {a: {type: int, role: ignored, role_before_drop: target}}")
        )
