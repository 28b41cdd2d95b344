from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import keel
from keel.errors import ConfigError, ConflictError, DataValidationError
from keel.project import Project


def make_project(root: Path, **model_params: object) -> Path:
    """The Adult example with a smaller model so the pipeline runs in a couple of seconds."""
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 80, "learning_rate": 0.15, **model_params})
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    root = make_project(tmp_path_factory.mktemp("pipe") / "adult")
    first = keel.run(root)
    second = keel.run(root)
    return root, first, second


def test_first_run_executes_every_step_and_promotes(ran: tuple[Path, dict, dict]) -> None:
    root, first, _ = ran
    assert [s["step"] for s in first["steps"]] == [
        "ingest_train", "ingest_test", "profile", "schema", "validate", "features", "train",
        "evaluate", "register",
    ]  # fmt: skip
    assert {s["status"] for s in first["steps"]} == {"succeeded"}
    assert first["model"]["metrics"]["roc_auc"] >= 0.9
    assert first["model"]["promoted"] and first["model"]["version"] == 1
    assert (root / "schema.yaml").exists()


def test_second_run_reuses_every_step(ran: tuple[Path, dict, dict]) -> None:
    root, first, second = ran
    assert {s["status"] for s in second["steps"]} == {"cached"}
    assert [s["outputs"] for s in second["steps"]] == [s["outputs"] for s in first["steps"]]
    assert second["model"]["version"] == 1
    with Project(root) as project:
        assert [v.version for v in project.metadata.list_versions("adult")] == [1]


def test_runs_and_lineage_are_recorded_and_hashes_verify(ran: tuple[Path, dict, dict]) -> None:
    root, first, _ = ran
    with Project(root) as project:
        register = project.metadata.get_run(first["steps"][-1]["run_id"])
        assert register.status == "succeeded"
        assert register.cpu_seconds is not None and register.peak_memory_mb
        assert set(register.inputs) >= {"model", "features", "statistics", "evaluation"}
        package = register.outputs["package"]
        edges = project.metadata.lineage(package)
        assert any(e.direction == "output" and e.run_id == register.id for e in edges)
        for step in first["steps"]:
            for sha in step["outputs"].values():
                data = project.artifacts.get(sha)
                assert hashlib.sha256(data).hexdigest() == sha


def test_changing_a_model_param_retrains_but_reuses_data_steps(tmp_path: Path) -> None:
    root = make_project(tmp_path / "adult")
    keel.run(root)
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["num_leaves"] = 15
    config["serve"]["port"] = 9999  # serving settings never invalidate training
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    status = {s["step"]: s["status"] for s in keel.run(root)["steps"]}
    assert status["ingest_train"] == status["features"] == "cached"
    assert status["train"] == status["evaluate"] == status["register"] == "succeeded"


def test_failing_gate_registers_without_moving_the_alias(tmp_path: Path) -> None:
    root = make_project(tmp_path / "adult")
    keel.run(root)
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["evaluate"]["gates"] = ["roc_auc >= 0.999"]
    config["model"]["params"]["num_leaves"] = 7
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = keel.run(root)
    assert summary["model"]["version"] == 2 and not summary["model"]["promoted"]
    assert summary["model"]["gates"][0]["passed"] is False
    assert keel.load_model("adult@production", project=root).version == 1
    assert keel.load_model("adult", project=root).version == 1
    assert keel.load_model("adult@2", project=root).version == 2


def test_blocking_anomaly_stops_the_run_before_training(tmp_path: Path) -> None:
    root = make_project(tmp_path / "adult")
    keel.run(root)
    schema = yaml.safe_load((root / "schema.yaml").read_text())
    # the reviewed contract now disagrees with the data (not stale: a reviewer's stricter range)
    schema["columns"]["age"].update(max=30, severities={"out_of_range": "error"})
    (root / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    with pytest.raises(DataValidationError, match="age"):
        keel.run(root)
    with Project(root) as project:
        runs = project.metadata.list_runs(limit=20)
        assert runs[0].step == "validate" and runs[0].status == "failed"
        assert [v.version for v in project.metadata.list_versions("adult")] == [1]


def test_no_cache_reruns_and_the_same_seed_gives_the_same_model_bytes(tmp_path: Path) -> None:
    root = make_project(tmp_path / "adult")
    first = keel.run(root)
    again = keel.run(root, cache=False)
    assert {s["status"] for s in again["steps"]} == {"succeeded"}
    # the same bytes: the register step registers nothing new (still version 1)
    assert (first["model"]["version"], again["model"]["version"]) == (1, 1)
    register = next(s for s in again["steps"] if s["step"] == "register")
    assert register["facts"]["unchanged"] is True
    versions = keel.show_model("adult", project=root)["versions"]
    assert len(versions) == 1
    model = next(s for s in again["steps"] if s["step"] == "train")["outputs"]["model"]
    assert model == next(s for s in first["steps"] if s["step"] == "train")["outputs"]["model"]
    with Project(root) as project:
        data = project.artifacts.get(versions[0]["model_sha256"])
    assert hashlib.sha256(data).hexdigest() == versions[0]["model_sha256"]


def test_reproduce_a_training_run_from_its_recorded_inputs(ran: tuple[Path, dict, dict]) -> None:
    root, first, second = ran
    train = next(s for s in first["steps"] if s["step"] == "train")
    result = keel.reproduce(train["run_id"][:10], project=root)
    assert result["match"] and not result["code_changed"]
    assert result["outputs"]["model"]["recorded"] == train["outputs"]["model"]
    cached_train = next(s for s in second["steps"] if s["step"] == "train")
    assert keel.reproduce(cached_train["run_id"], project=root)["run"] == train["run_id"]


def test_reproduce_refuses_register_and_changed_config(tmp_path: Path) -> None:
    root = make_project(tmp_path / "adult")
    summary = keel.run(root)
    runs = {s["step"]: s["run_id"] for s in summary["steps"]}
    with pytest.raises(ConfigError, match="which registers"):
        keel.reproduce(runs["register"], project=root)
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["num_leaves"] = 9
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConflictError, match="changed since run"):
        keel.reproduce(runs["train"], project=root)
    assert keel.reproduce(runs["features"], project=root)["match"]


def test_reproduce_cli_exit_codes(ran: tuple[Path, dict, dict]) -> None:
    root, first, _ = ran
    # (not 'profile': its KLL quantile sketch compacts at random, so its bytes differ per run)
    features = next(s for s in first["steps"] if s["step"] == "features")["run_id"]
    done = subprocess.run([sys.executable, "-m", "keel.cli", "reproduce", features, "-f", "json"],
                          cwd=root, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["match"] is True
    missing = subprocess.run([sys.executable, "-m", "keel.cli", "reproduce", "feedbeef"],
                             cwd=root, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 1 and "feedbeef" in missing.stderr


def test_every_run_is_tracked_with_environment_and_learning_curves(
    ran: tuple[Path, dict, dict],
) -> None:
    root, first, second = ran
    for step in first["steps"] + second["steps"]:
        shown = keel.get_run(step["run_id"], project=root)
        env = shown["environment"]
        assert env is not None and env["python"] and "lightgbm" in env["packages"], step["step"]
        assert shown["duration_seconds"] is not None and shown["duration_seconds"] >= 0
    train = keel.get_run(next(s["run_id"] for s in first["steps"] if s["step"] == "train"),
                         project=root)  # fmt: skip
    assert train["params"]["learning_rate"] == 0.15 and train["params"]["n_estimators"] == 80
    assert train["curves"] and all(len(v) >= 1 for v in train["curves"].values())
    assert train["history"]["roc_auc"]["max"] > 0.85
    assert set(train["snapshots"]) == {"train_snapshot"} and train["cpu_seconds"] > 0
    found = keel.runs('step = "evaluate" and metrics.roc_auc > 0.9', project=root)
    evaluate = [s["run_id"] for s in first["steps"] if s["step"] == "evaluate"]
    assert [r["id"] for r in found] == evaluate
    best = keel.runs(sort="metrics.roc_auc desc", limit=1, project=root)[0]
    assert best["step"] == "evaluate" and best["metrics"]["roc_auc"] >= 0.9


def test_a_failing_step_is_recorded_failed_with_its_facts(tmp_path: Path) -> None:
    from rich.console import Console

    from keel.pipeline.runner import Step, StepContext, run_steps

    def broken(ctx: StepContext) -> dict:
        ctx.facts["metrics"] = {"partial": 0.5}
        raise RuntimeError("disk on fire")

    root = keel.init(tmp_path / "adult", example="adult")
    with Project(root) as project:
        with pytest.raises(RuntimeError, match="disk on fire"):
            run_steps(project, [Step("broken", broken)], console=Console(quiet=True))
        (run,) = project.metadata.search_runs()
        assert (run.run.status, run.metrics) == ("failed", {"partial": 0.5})
        assert "disk on fire" in (run.run.error or "")
