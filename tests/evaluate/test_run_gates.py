"""Gates that say no, in a real ``keel run`` on a small Adult project: a fairness gate the model
fails keeps the alias where it was (exit 1, value and bound printed); ``challenger_vs_champion``
refuses a deliberately weaker challenger and accepts an equal one; ``keel models show``
lists each version's gates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import keel

FAST = {"n_estimators": 40, "learning_rate": 0.2, "num_leaves": 15}


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300)  # fmt: skip


def configure(root: Path, *, params: dict[str, Any], seed: int, **evaluate: Any) -> None:
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"] = params
    config["model"]["seed"] = seed
    config["model"].pop("early_stopping_rounds", None)
    config["evaluate"] = {"slices": ["sex", "race"], "bootstrap": {"resamples": 200}, **evaluate}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keel.init(tmp_path_factory.mktemp("gates") / "adult", example="adult")


def test_a_failed_fairness_gate_blocks_the_alias(project: Path) -> None:
    gate = "fairness.sex.demographic_parity_difference <= 0.05"
    budget = ["latency.p99_ms <= 1000", "size.bytes > 1000"]
    configure(project, params=FAST, seed=1, gates=["roc_auc >= 0.8", gate, *budget])
    result = keel_cli("run", cwd=project)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert f"gate {gate}: FAIL" in out and "gate roc_auc >= 0.8: pass" in out
    assert all(f"gate {b}: pass" in out for b in budget)
    line = next(line for line in out.splitlines() if gate in line)
    value = float(line.split("value ")[1].rstrip(")"))
    assert value > 0.05  # the value printed, next to the bound in the gate
    assert "gates failed: the alias was not moved" in out
    assert keel.show_model("adult", project=project)["aliases"] == {}


def run(project: Path) -> dict[str, Any]:
    return dict(keel.run(project)["model"])


def test_challenger_vs_champion(project: Path) -> None:
    versus = {"metric": "roc_auc", "min_delta": 0.0, "alpha": 0.05}
    configure(project, params=FAST, seed=2, gates=["roc_auc >= 0.8"],
              challenger_vs_champion=versus)  # fmt: skip
    first = run(project)
    assert first["promoted"]  # no champion yet: nothing to compare with
    champion = first["version"]
    weak = {"n_estimators": 3, "learning_rate": 0.05, "num_leaves": 3}
    configure(project, params=weak, seed=2, gates=["roc_auc >= 0.8"],
              challenger_vs_champion=versus)  # fmt: skip
    refused = run(project)
    verdict = refused["gates"][-1]
    assert not refused["promoted"] and not verdict["passed"]
    assert verdict["gate"].startswith("challenger_vs_champion roc_auc delta >= 0 (not_worse")
    assert verdict["value"] < 0 and verdict["bound"] == 0.0
    assert "significantly worse" in verdict["reason"]
    aliases = keel.show_model("adult", project=project)["aliases"]
    assert aliases == {"production": champion}

    shown = keel_cli("models", "show", f"adult@{refused['version']}", cwd=project)
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)  # what the README shows (pytest -s)
    assert "challenger_vs_champion roc_auc" in shown.stdout and "FAIL" in shown.stdout
    data = json.loads(keel_cli("models", "show", f"adult@{refused['version']}", "--format",
                               "json", cwd=project).stdout)  # fmt: skip
    assert data["versions"][0]["gates"][-1]["passed"] is False

    configure(project, params=FAST, seed=3, gates=["roc_auc >= 0.8"],
              challenger_vs_champion=versus)  # fmt: skip
    equal = run(project)
    print(equal["gates"][-1]["reason"])
    assert equal["gates"][-1]["passed"], equal["gates"][-1]["reason"]
    assert equal["promoted"]
    assert keel.show_model("adult", project=project)["aliases"] == {"production": equal["version"]}


def test_a_missing_sensitive_column_is_a_config_error(project: Path) -> None:
    config = yaml.safe_load((project / "keel.yaml").read_text())
    config["data"]["sensitive"] = ["sex", "religion"]
    (project / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = keel_cli("run", cwd=project)
    assert result.returncode == 2
    assert "data.sensitive" in result.stderr and "'religion'" in result.stderr
