"""`keel run` with search: and with model.flavor: auto on the Adult example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import keel
from keel.project import Project

SPACE = {
    "num_leaves": {"type": "int", "low": 8, "high": 64, "log": True},
    "min_child_samples": {"type": "int", "low": 5, "high": 80},
}


def make_project(root: Path, **sections: Any) -> Path:
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 60, "learning_rate": 0.2})
    config.update(sections)
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def step(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in summary["steps"] if s["step"] == name)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict]:
    root = make_project(
        tmp_path_factory.mktemp("search") / "adult", search={"trials": 3, "space": SPACE}
    )
    return root, keel.run(root), keel.run(root)


def test_the_tune_step_runs_before_train_and_train_uses_the_best_trial(
    searched: tuple[Path, dict[str, Any], dict],
) -> None:
    root, first, _ = searched
    names = [s["step"] for s in first["steps"]]
    assert names.index("features") < names.index("tune") == names.index("train") - 1
    tune = step(first, "tune")
    assert tune["facts"]["completed"] + tune["facts"]["pruned"] == 3
    with Project(root) as project:
        best = orjson.loads(project.artifacts.get(tune["outputs"]["best_params"]))
        assert best["flavor"] == "lightgbm"
        trained = step(first, "train")["facts"]["params"]
        for name in SPACE:
            assert trained[name] == best["params"][name]
        trials = project.metadata.list_runs(step="tune/trial", limit=10)
        assert len(trials) == 3
    assert first["model"]["version"] == 1 and first["model"]["metrics"]["roc_auc"] > 0.9


def test_a_second_run_reuses_the_study_and_the_model(
    searched: tuple[Path, dict[str, Any], dict],
) -> None:
    _, first, second = searched
    tune = step(second, "tune")
    assert tune["facts"]["trials_run"] == 0 and tune["facts"]["resumed_from"] == 3
    assert tune["outputs"]["best_params"] == step(first, "tune")["outputs"]["best_params"]
    assert step(second, "train")["status"] == "cached"
    assert second["model"]["version"] == 1


def test_flavor_auto_prints_and_stores_a_leaderboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.console import Console

    root = make_project(
        tmp_path / "adult",
        automl={"time_budget_seconds": 6, "families": ["linear", "lightgbm"]},
    )
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"] = {"name": "adult", "flavor": "auto", "early_stopping_rounds": 20}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = keel.run(root, console=Console(width=120))
    shown = capsys.readouterr().out
    assert "AutoML leaderboard" in shown and "linear" in shown and "lightgbm" in shown
    tune = step(summary, "tune")
    assert tune["facts"]["best_family"] in ("linear", "lightgbm")
    with Project(root) as project:
        report = orjson.loads(project.artifacts.get(tune["outputs"]["search"]))
        families = [row["family"] for row in report["automl"]]
        assert sorted(families) == ["lightgbm", "linear"]
        assert report["automl"][0]["value"] >= report["automl"][1]["value"] or (
            report["automl"][1]["value"] is None
        )
    assert summary["model"]["metrics"]["roc_auc"] > 0.85


def test_keel_tune_adds_trials_to_the_study(searched: tuple[Path, dict[str, Any], dict]) -> None:
    root, first, _ = searched
    command = [sys.executable, "-m", "keel.cli", "tune", "--trials", "2", "--format", "json"]
    done = subprocess.run(command, cwd=root, text=True, capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["trials_before"] == 3 and result["trials_run"] == 2
    assert result["study"] == step(first, "tune")["facts"]["study"]
    assert result["model"]["version"] in (1, 2)
    with Project(root) as project:
        assert len(project.metadata.list_runs(step="tune/trial", limit=20)) == 5


def test_keel_tune_without_search_is_a_usage_error(tmp_path: Path) -> None:
    root = keel.init(tmp_path / "adult", example="adult")
    command = [sys.executable, "-m", "keel.cli", "tune", "--trials", "2"]
    done = subprocess.run(command, cwd=root, text=True, capture_output=True, timeout=120)
    assert done.returncode == 2
    assert "add a 'search:' section" in done.stderr and "Traceback" not in done.stderr
