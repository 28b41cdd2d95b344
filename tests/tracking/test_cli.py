"""`keel runs list | show | compare` as a user runs them: exit codes, JSON, text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.project import Project


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = keel.init(tmp_path_factory.mktemp("cli") / "adult", example="adult")
    ids = []
    with Project(root) as proj:
        for i, leaves in enumerate((15, 31, 63)):
            run = proj.metadata.start_run("train", cache_key=f"k{i}", config_hash="c",
                                          code_version="v")  # fmt: skip
            facts = {
                "params": {"num_leaves": leaves, "learning_rate": 0.1},
                "metrics": {"roc_auc": 0.88 + i * 0.01},
                "history": {"auc": [0.8, 0.85, 0.88 + i * 0.01]},
                "tags": {"team": "risk"},
            }
            proj.metadata.finish_run(run.id, status="succeeded", facts=facts)
            ids.append(run.id)
    return root, ids


def test_list_json_with_filter_and_sort(project: tuple[Path, list[str]]) -> None:
    root, ids = project
    done = keel_cli("runs", "list", "--filter", "metrics.roc_auc > 0.885 and tags.team = 'risk'",
                    "--sort", "metrics.roc_auc desc", "--format", "json", cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["runs"]
    assert [r["id"] for r in listed] == [ids[2], ids[1]]
    assert listed[0]["params"] == {"num_leaves": 63, "learning_rate": 0.1}


def test_list_text_shows_the_filtered_metric(project: tuple[Path, list[str]]) -> None:
    root, ids = project
    done = keel_cli("runs", "list", "--limit", "2", cwd=root)
    assert done.returncode == 0, done.stderr
    assert ids[2][:12] in done.stdout and "roc_auc" in done.stdout and "2 run(s)" in done.stdout


def test_bad_filter_exits_2_with_position(project: tuple[Path, list[str]]) -> None:
    root, _ = project
    done = keel_cli("runs", "list", "--filter", "metrics.roc_auc >> 1", cwd=root)
    assert done.returncode == 2
    assert "position 18" in done.stderr and "valid forms" in done.stderr
    assert "Traceback" not in done.stderr


def test_show_and_compare(project: tuple[Path, list[str]]) -> None:
    root, ids = project
    shown = keel_cli("runs", "show", ids[0][:8], "-f", "json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["curves"] == {"auc": [0.8, 0.85, 0.88]} and record["environment"]["python"]
    text = keel_cli("runs", "show", ids[0][:8], cwd=root)
    assert "learning curves" in text.stdout and "num_leaves = 15" in text.stdout
    compared = keel_cli("runs", "compare", ids[0], ids[2][:8], cwd=root)
    assert compared.returncode == 0, compared.stderr
    assert "* num_leaves" in compared.stdout and "* roc_auc" in compared.stdout
    assert "* learning_rate" not in compared.stdout


def test_unknown_run_exits_1(project: tuple[Path, list[str]]) -> None:
    root, ids = project
    missing = keel_cli("runs", "show", "feedbeef", cwd=root)
    assert missing.returncode == 1 and "feedbeef" in missing.stderr
    short = keel_cli("runs", "compare", ids[0], cwd=root)
    assert short.returncode == 2 and "compare needs 2" in short.stderr


def test_list_at_80_columns_keeps_step_names_whole(tmp_path: Path) -> None:
    root = keel.init(tmp_path / "adult", example="adult")
    steps = ("ingest_train", "feature_views", "tune/trial", "evaluate")
    with Project(root) as proj:
        for i, step in enumerate(steps):
            run = proj.metadata.start_run(step, cache_key=f"k{i}", config_hash="c",
                                          code_version="v")  # fmt: skip
            metrics = {"validation_multi_logloss": 0.5, "validation_roc_auc": 0.9, "roc_auc": 0.91}
            proj.metadata.finish_run(run.id, status="succeeded", facts={"metrics": metrics})
    env = os.environ | {"COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "keel.cli", "runs", "list"], cwd=root, env=env,
                          text=True, capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), done.stdout
    assert "…" not in done.stdout
    for step in steps:
        assert any(f" {step} " in line for line in lines), (step, done.stdout)
    assert "succeeded" in done.stdout and "4 run(s)" in done.stdout
    assert "left out at this width" in done.stdout
