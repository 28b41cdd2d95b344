"""What the README promises about tracked runs and registered models holds on a real run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import keel

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = keel.init(tmp_path_factory.mktemp("readme") / "adult", example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 80, "learning_rate": 0.15})
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root, keel.run(root)


def test_the_readme_runs_filter_example_finds_the_train_run(
    ran: tuple[Path, dict[str, Any]],
) -> None:
    root, summary = ran
    text = README.read_text(encoding="utf-8")
    found = re.search(r"keel runs list --filter '([^']+)'\s*\\\s*--sort \"([^\"]+)\"", text)
    assert found, "the README's runs filter example moved; update this test"
    runs = keel.runs(found.group(1), sort=found.group(2), project=root)
    train = next(s["run_id"] for s in summary["steps"] if s["step"] == "train")
    assert [r["id"] for r in runs] == [train]


def test_models_show_json_has_the_metrics_per_slice(ran: tuple[Path, dict[str, Any]]) -> None:
    root, _ = ran
    shown = "keel models show adult@production --format json  # versions, metrics and fairness"
    assert shown in README.read_text(encoding="utf-8")
    command = [sys.executable, "-m", "keel.cli", "models", "show", "adult@production", "-f", "json"]
    done = subprocess.run(command, cwd=root, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (version,) = json.loads(done.stdout)["versions"]
    slices = version["slices"]
    assert set(slices) == {"sex", "race"}
    assert {"Female", "Male", "_gap"} <= set(slices["sex"])
    assert 0.5 < slices["sex"]["Female"]["roc_auc"] <= 1.0
    assert "selection_rate_difference" in slices["sex"]["_gap"]
    text = subprocess.run([sys.executable, "-m", "keel.cli", "models", "show", "adult@1"],
                          cwd=root, text=True, capture_output=True, timeout=120)  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "slice sex" in text.stdout and "Female: roc_auc=" in text.stdout
