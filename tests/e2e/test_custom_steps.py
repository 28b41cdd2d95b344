"""Custom steps on a real dataset: one between features and train that adds a derived column,
one after evaluate that fails the run below a metric bound; `keel run --explain` after editing
only the first step's helper function re-runs that step and what depends on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from keel.project import Project

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here"),
]

STEPS = """
import pyarrow as pa
import pyarrow.compute as pc

import keel
from keel.errors import GateError


def ratio(table: pa.Table) -> pa.Array:
    return pc.divide(pc.cast(table["bill_length_mm"], "double"),
                     pc.cast(table["bill_depth_mm"], "double"))


@keel.step(inputs={"train_snapshot": "snapshot"}, outputs={"train_snapshot": "snapshot"})
def add_ratio(ctx, train_snapshot):
    table = ctx.read_table(train_snapshot)
    enriched = table.append_column("bill_ratio", ratio(table))
    return {"train_snapshot": ctx.put_table(enriched, parent=train_snapshot)}


@keel.step(inputs={"evaluation": "evaluation"}, outputs={"quality": "report"})
def quality_gate(ctx, evaluation):
    accuracy = ctx.read_json(evaluation)["metrics"]["accuracy"]
    bound = ctx.params["min_accuracy"]
    if accuracy < bound:
        raise GateError(f"accuracy {accuracy:.4f} is below the bound {bound}")
    return {"quality": ctx.put_json({"accuracy": accuracy, "bound": bound}, kind="report")}
"""
PIPELINE = """
pipeline:
  steps:
    - function: my_steps:add_ratio
      after: [features]
    - function: my_steps:quality_gate
      after: [evaluate]
      params: {min_accuracy: %s}
"""


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                            capture_output=True, timeout=600)  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def run_json(project: Path, *extra: str) -> dict[str, Any]:
    result = keel_cli("run", "--format", "json", *extra, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("custom")
    source = SHARED / "palmer-penguins" / "penguins.csv"
    made = keel_cli("init", "pg", "--from", str(source), "--target", "species", cwd=root)
    assert made.returncode == 0, made.stderr
    project = root / "pg"
    (project / "my_steps.py").write_text(STEPS, encoding="utf-8")
    with (project / "keel.yaml").open("a", encoding="utf-8") as handle:
        handle.write(PIPELINE % "0.8")
    return project


def test_custom_steps_run_in_place_and_feed_the_next_steps(project: Path) -> None:
    summary = run_json(project)
    order = [s["step"] for s in summary["steps"]]
    assert order.index("features") < order.index("add_ratio") < order.index("train")
    assert order.index("evaluate") < order.index("quality_gate") < order.index("register")
    steps = {s["step"]: s for s in summary["steps"]}
    assert summary["model"]["version"] == 1
    with Project(project) as proj:
        train = proj.metadata.get_run(steps["train"]["run_id"])
        enriched = steps["add_ratio"]["outputs"]["train_snapshot"]
        assert train.inputs["train_snapshot"] == enriched  # train read the refined snapshot
        table = pq.read_table(proj.artifacts.local_path(enriched))
        assert "bill_ratio" in table.column_names
        features = proj.metadata.get_run(steps["features"]["run_id"])
        assert features.inputs["train_snapshot"] != enriched  # features ran before it


def test_explain_after_editing_only_the_helper(project: Path) -> None:
    run_json(project)
    again = run_json(project, "--explain")
    assert {s["status"] for s in again["steps"]} == {"cached"}
    assert {s["explain"] for s in again["steps"]} == {"hit"}
    code = (project / "my_steps.py").read_text(encoding="utf-8")
    edited = code.replace('pc.cast(table["bill_depth_mm"], "double"))',
                          'pc.add(pc.cast(table["bill_depth_mm"], "double"), 1.0))')  # fmt: skip
    assert edited != code
    (project / "my_steps.py").write_text(edited, encoding="utf-8")
    after = {s["step"]: s for s in run_json(project, "--explain")["steps"]}
    assert after["add_ratio"]["status"] == "succeeded"
    assert "the step's code changed" in after["add_ratio"]["explain"]
    assert after["train"]["status"] == "succeeded"
    assert after["train"]["explain"] == "miss: input 'train_snapshot' changed"
    before_it = ["ingest_train", "split", "profile", "schema", "validate", "features"]
    assert all(after[name]["explain"] == "hit" for name in before_it)
    # the derived column is not a model input: the model bytes are equal, so evaluate hits and
    # register (which records the refined snapshot in its lineage) registers nothing new
    assert after["evaluate"]["explain"] == "hit"
    assert after["register"]["explain"] == "miss: input 'train_snapshot' changed"
    assert after["register"]["facts"]["unchanged"] is True
    assert after["register"]["facts"]["version"] == 1


def test_a_gate_step_fails_the_run_below_its_bound(project: Path) -> None:
    text = (project / "keel.yaml").read_text(encoding="utf-8")
    (project / "keel.yaml").write_text(text.replace("min_accuracy: 0.8", "min_accuracy: 1.01"))
    try:
        result = keel_cli("run", cwd=project)
        assert result.returncode != 0
        assert "below the bound 1.01" in result.stderr
    finally:
        (project / "keel.yaml").write_text(text, encoding="utf-8")


def test_a_broken_graph_is_refused_before_anything_runs(project: Path) -> None:
    text = (project / "keel.yaml").read_text(encoding="utf-8")
    (project / "keel.yaml").write_text(text.replace("after: [features]", "after: [featrues]"))
    try:
        result = keel_cli("run", cwd=project)
        assert result.returncode == 2
        assert "after 'featrues', which is not a step" in result.stderr
        assert "keel.yaml:" in result.stderr  # the line of the custom step
    finally:
        (project / "keel.yaml").write_text(text, encoding="utf-8")
