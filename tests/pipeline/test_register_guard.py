"""A pipeline run does not move registry.alias under a running deployment: the alias names the
deployment's primary, and moving it would change the primary while the canary is judged
against it (found by a trial: a scheduled run moved production 1 -> 3 mid-canary of v2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import keel


def _configure(root: Path, *, rate: float, gate: str) -> None:
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 20, "learning_rate": rate})
    config["model"]["early_stopping_rounds"] = None
    config["evaluate"]["gates"] = [gate]
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _register(summary: dict[str, Any]) -> dict[str, Any]:
    step = next(s for s in summary["steps"] if s["step"] == "register")
    return {**step["facts"], "run_id": step["run_id"], "warnings": step["warnings"]}


def test_a_run_leaves_the_alias_while_a_canary_runs_and_moves_it_after(tmp_path: Path) -> None:
    root = keel.init(tmp_path / "adult", example="adult")
    _configure(root, rate=0.2, gate="roc_auc >= 0.5")
    keel.run(root)  # v1: production
    _configure(root, rate=0.25, gate="roc_auc >= 0.999")
    keel.run(root)  # v2: registered, its gate failed, production stays v1
    started = keel.deploy("adult", canary=2, steps="50,100", project=root)
    _configure(root, rate=0.3, gate="roc_auc >= 0.5")
    summary = keel.run(root)  # v3: its gates pass, but v1 is the canary's primary
    register = _register(summary)
    assert register["version"] == 3 and register["promoted"] is False
    said = register["warnings"]
    assert said == keel.get_run(register["run_id"], project=root)["warnings"]
    assert len(said) == 1 and said[0].startswith("production not moved to version 3: canary ")
    assert f"deployment {started['id']} of adult is running with version 1" in said[0]
    assert keel.load_model("adult@production", project=root).version == 1

    keel.abort_deployment("adult", project=root)
    _configure(root, rate=0.35, gate="roc_auc >= 0.5")
    after = _register(keel.run(root))  # nothing running now: the alias moves as it used to
    assert after["version"] == 4 and after["promoted"] is True
    assert keel.load_model("adult@production", project=root).version == 4
