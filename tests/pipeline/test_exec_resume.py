"""`keel run --resume ID`: a failed pipeline run continues from its failed step, reusing the
outputs of the steps that succeeded; recorded as a new run (trigger retry) naming the one it
resumes; refused when keel.yaml changed (naming what), or when the run did not fail."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import keel
from keel import api
from keel.errors import ConfigError, ConflictError
from keel.project import Project

CHECK = """
import keel


@keel.step(inputs={"evaluation": "evaluation"}, outputs={"checked": "report"})
def check(ctx, evaluation):
    if (ctx.project.root / "OUTAGE").exists():
        raise RuntimeError("the review service is down")
    return {"checked": ctx.put_json({"ok": True}, kind="report")}
"""


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = keel.init(tmp_path_factory.mktemp("resume") / "adult", example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 40, "learning_rate": 0.2})
    config["pipeline"] = {"steps": [{"function": "check_steps:check", "after": ["evaluate"]}]}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "check_steps.py").write_text(CHECK, encoding="utf-8")
    (root / "OUTAGE").touch()
    with pytest.raises(RuntimeError, match="review service is down"):
        keel.run(root)
    (record,) = api.pipeline_runs(project=root, limit=1)
    assert record["status"] == "failed"
    return root, record["id"]


def test_resume_reuses_the_succeeded_steps_and_runs_the_rest(failed: tuple[Path, str]) -> None:
    root, failed_id = failed
    before = api.get_pipeline_run(failed_id, project=root)
    status = {s["step"]: s["status"] for s in before["steps"]}
    assert status["check"] == "failed" and status["register"] == "not_run"
    (root / "OUTAGE").unlink()
    printed = io.StringIO()
    console = Console(file=printed, width=300)
    resumed = keel.run(root, resume=failed_id[:10], explain=True, console=console)
    assert resumed["resumes"] == failed_id and resumed["trigger"] == "retry"
    earlier = {s["step"]: s["run_id"] for s in before["steps"] if s["status"] == "succeeded"}
    now = {s["step"]: s for s in resumed["steps"]}
    assert set(earlier) == {"ingest_train", "ingest_test", "profile", "schema", "validate",
                            "features", "train", "evaluate"}  # fmt: skip
    with Project(root) as project:
        for step, run_id in earlier.items():
            assert now[step]["status"] == "cached"
            assert project.metadata.get_run(now[step]["run_id"]).params["reused_run"] == run_id
    assert now["check"]["status"] == now["register"]["status"] == "succeeded"
    assert resumed["model"]["metrics"]["roc_auc"] > 0.8  # the reused evaluate's facts
    assert resumed["model"]["version"] == 1
    assert "reused: run" in printed.getvalue()
    record = api.get_pipeline_run(resumed["pipeline_run"], project=root)
    assert record["resumes"] == failed_id and record["reason"] == f"resumes {failed_id}"
    assert record["status"] == "succeeded"
    shown = subprocess.run(
        [sys.executable, "-m", "keel.cli", "runs", "show", resumed["pipeline_run"]],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert f"resumes  {failed_id}" in shown.stdout, shown.stderr
    # a succeeded run has nothing to resume
    with pytest.raises(ConflictError, match="only a failed or cancelled run can be resumed"):
        keel.run(root, resume=resumed["pipeline_run"])


def test_resume_is_refused_when_the_config_changed(failed: tuple[Path, str]) -> None:
    root, failed_id = failed
    path = root / "keel.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    config["model"]["params"]["num_leaves"] = 7
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        with pytest.raises(ConfigError, match=r"keel.yaml changed since it ran.*'train'"):
            keel.run(root, resume=failed_id)
        cli = subprocess.run(
            [sys.executable, "-m", "keel.cli", "run", "--resume", failed_id, "--format", "json"],
            cwd=root, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 2 and "changed since it ran" in cli.stderr
        assert "Traceback" not in cli.stderr
    finally:
        path.write_text(original)
    assert json.loads(json.dumps(api.get_pipeline_run(failed_id, project=root)))["status"] == (
        "failed"
    )
