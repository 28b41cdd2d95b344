"""Cancelling `keel run`: Ctrl-C (SIGINT) and `keel runs cancel ID` both stop the running step,
record it and the pipeline run `cancelled` (not failed), leave the steps after it `not_run`,
leave no half-written artifact, and the process exits."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import keel
from keel import api
from keel.project import Project
from keel.store import pipeline_runs

HOLD = '''
import time

import keel
from keel import api


@keel.step(outputs={"held": "report"})
def hold(ctx):
    """Works until cancelled (a safe point every 20 ms), at most a minute."""
    deadline = time.monotonic() + 60
    while not ctx.cancel_requested and time.monotonic() < deadline:
        ctx.cancelled.wait(0.02)
    ctx.check_cancelled()
    return {"held": ctx.put_json({"held": True}, kind="report")}
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = keel.init(tmp_path / "adult", example="adult")
    (root / "hold_steps.py").write_text(HOLD, encoding="utf-8")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["pipeline"] = {"steps": [{"function": "hold_steps:hold", "after": ["ingest_train"]}]}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def start_run(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "run"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_holding(root: Path, process: subprocess.Popen[str]) -> str:
    """Poll the database (no sleep-and-hope) until the `hold` step runs; its pipeline run."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with Project(root) as project:
            runs = project.metadata.list_runs(step="hold", limit=1)
            if runs and runs[0].status == "running":
                (record,) = pipeline_runs.recent(project.metadata.database, 1)
                return record.id
        time.sleep(0.05)  # the next poll of the database
    process.kill()
    raise AssertionError("the hold step never started")


def check_cancelled(root: Path, pipeline_run: str) -> dict[str, Any]:
    record = api.get_pipeline_run(pipeline_run, project=root)
    assert record["status"] == "cancelled"
    status = {s["step"]: s["status"] for s in record["steps"]}
    assert status["ingest_train"] == "succeeded" and status["hold"] == "cancelled"
    assert status["register"] == "not_run" and status["train"] == "not_run"
    with Project(root) as project:
        (hold,) = project.metadata.list_runs(step="hold", limit=1)
        assert hold.status == "cancelled" and not hold.outputs  # a real status (0010)
        assert "cancelled" in (hold.error or "")
        artifacts = Path(project.artifacts.root)
    leftovers = list(artifacts.rglob(".tmp-*"))
    assert leftovers == [], "no half-written artifact is left behind"
    return record


def test_ctrl_c_records_the_running_step_and_the_run_cancelled(project: Path) -> None:
    process = start_run(project)
    pipeline_run = wait_until_holding(project, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    check_cancelled(project, pipeline_run)


def test_keel_runs_cancel_stops_the_run_from_another_process(project: Path) -> None:
    process = start_run(project)
    pipeline_run = wait_until_holding(project, process)
    cancel = subprocess.run(
        [sys.executable, "-m", "keel.cli", "runs", "cancel", pipeline_run[:12]],
        cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cancel.returncode == 0, cancel.stderr
    assert "cancel requested" in cancel.stdout
    asked = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - asked < 10  # noticed within a second; the process then exits
    assert process.returncode == 130 and "was cancelled" in stderr, stderr[-2000:]
    check_cancelled(project, pipeline_run)
