"""Lineage up and down on a trained California-housing project, through served predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keel
from keel.cli import app
from keel.errors import ConfigError, NotFoundError
from keel.project import Project
from keel.serve.predlog import PredictionLog


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(
        keel.init(tmp_path_factory.mktemp("lineage") / "housing", example="california-housing")
    )
    keel.run(project=root)
    keel.run(project=root)  # all cached: the walk must still find one producer per artifact
    log = PredictionLog(Project(root).predictions_dir)
    rows = [{"median_income": 3.1}, {"median_income": 5.0}]
    for i in range(5):
        log.append(f"req-{i}", "california-housing", "1", rows, [1.0, 2.0], None)
    log.append("req-other", "other-model", "1", rows[:1], [1.0], None)
    log.flush()
    return root


def _snapshots(graph: Any) -> set[str]:
    return {n.attributes.get("split") for n in graph.of_kind("snapshot")}


def test_a_served_request_traces_up_to_the_data_that_made_it(project: Path) -> None:
    graph = keel.lineage("req-3", direction="up", project=project)
    assert graph.root == "prediction:req-3"
    assert _snapshots(graph) == {"train", "test"}
    sources = {n.id for n in graph.of_kind("source")}
    assert sources == {"source:data/housing-train.csv", "source:data/housing-test.csv"}
    steps = [n.attributes["step"] for n in graph.of_kind("run")]
    assert sorted(steps) == sorted(set(steps)), "one producing run per step, cached runs skipped"
    assert {"train", "register", "ingest_train"} <= set(steps)
    version = graph.node("version:california-housing@1")
    assert version.sha256 is not None and len(version.sha256) == 64
    assert any(e.source == version.id and e.target == graph.root for e in graph.edges)


def test_a_snapshot_traces_down_to_the_predictions_it_influenced(project: Path) -> None:
    up = keel.lineage("california-housing@production", project=project)
    train = next(n for n in up.of_kind("snapshot") if n.attributes.get("split") == "train")
    down = keel.lineage(str(train.sha256)[:10], direction="down", project=project)
    assert "version:california-housing@1" in {n.id for n in down.nodes}
    assert "alias:california-housing@production" in {n.id for n in down.nodes}
    served = {n.id for n in down.of_kind("prediction")}
    assert served == {f"prediction:req-{i}" for i in range(5)}, "other models' requests excluded"


def test_predictions_beyond_the_limit_are_counted(project: Path) -> None:
    from keel.registry.lineage import trace
    from keel.serve.lookup import LoggedPredictions

    proj = Project(project)
    source = LoggedPredictions(proj.predictions_dir)
    graph = trace(
        proj.metadata,
        "version:california-housing@1",
        direction="down",
        predictions=source,
        prediction_limit=2,
    )
    assert len(graph.of_kind("prediction")) == 2
    (more,) = graph.of_kind("predictions")
    assert more.attributes["total"] == 5


def test_unknown_and_ambiguous_references_say_what_to_give(project: Path) -> None:
    with pytest.raises(NotFoundError, match="request id"):
        keel.lineage("no-such-thing", project=project)
    with pytest.raises(NotFoundError, match="keel models list"):
        keel.lineage("california-housing@7", project=project)
    train = next(
        n
        for n in keel.lineage("req-0", project=project).of_kind("run")
        if n.attributes["step"] == "train"
    )
    run_prefix = train.id.removeprefix("run:")[:12]
    log = PredictionLog(Project(project).predictions_dir)
    log.append(run_prefix, "other-model", "1", [{"x": 1}], [0.0], None)  # a request id clash
    log.flush()
    with pytest.raises(ConfigError, match=f"run:{run_prefix}") as caught:
        keel.lineage(run_prefix, project=project)
    assert "prefix it with the kind" in caught.value.message
    assert keel.lineage(f"run:{run_prefix}", project=project).root == train.id
    with pytest.raises(NotFoundError, match="no artifact"):
        keel.lineage("artifact:abcdef0123", project=project)


def test_the_cli_prints_text_json_and_dot(project: Path) -> None:
    runner = CliRunner()
    base = ["lineage", "req-1", "--project", str(project)]
    text = runner.invoke(app, base)
    assert text.exit_code == 0, text.output
    assert "request req-1" in text.output and "source data/housing-train.csv" in text.output
    as_json = runner.invoke(app, [*base, "--format", "json"])
    document = json.loads(as_json.output)
    ids = {n["id"] for n in document["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in document["edges"])
    dot = runner.invoke(app, [*base, "--format", "dot"])
    assert dot.output.startswith("digraph lineage {")
    assert dot.output.count(" -> ") == len(document["edges"])
    both = runner.invoke(app, [*base, "--up", "--down"])
    assert isinstance(both.exception, ConfigError) and "not both" in str(both.exception)
