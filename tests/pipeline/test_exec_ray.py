"""The Ray executor on a local Ray started by the test: every step (a custom one too) runs as a
Ray task, into the same artifact store and metadata database, and the model has the same hash
as the local executor's; a step no node can hold fails at once, naming the resource."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import keel
from keel import api
from keel.errors import ConfigError

REPORT = """
import os

import keel


@keel.step(inputs={"evaluation": "evaluation"}, outputs={"where": "report"})
def where(ctx, evaluation):
    ctx.facts["pid"] = os.getpid()
    return {"where": ctx.put_json({"auc": ctx.read_json(evaluation)["metrics"]["roc_auc"]},
                                  kind="report")}
"""


def make(root: Path, **extra: Any) -> Path:
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 40, "learning_rate": 0.2})
    config["pipeline"] = {"steps": [{"function": "report_steps:where", "after": ["evaluate"]}]}
    config.update(extra)
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "report_steps.py").write_text(REPORT, encoding="utf-8")
    return root


def outputs(summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {s["step"]: s["outputs"] for s in summary["steps"]}


def test_ray_runs_every_step_and_gives_the_local_model_hash(local_ray: Any, tmp_path: Path) -> None:
    local = keel.run(make(tmp_path / "local"))
    on_ray = keel.run(make(tmp_path / "ray", executor="ray"))
    assert outputs(on_ray)["train"]["model"] == outputs(local)["train"]["model"]
    # the custom step's report (the test metrics of that model) too; statistics, validation
    # and the package record when they were made, so those differ between any two projects
    assert outputs(on_ray)["where"] == outputs(local)["where"]
    facts = {s["step"]: s["facts"] for s in on_ray["steps"]}
    assert facts["where"]["pid"] != os.getpid(), "the custom step ran in a Ray worker"
    assert {s["status"] for s in on_ray["steps"]} == {"succeeded"}
    record = api.get_pipeline_run(on_ray["pipeline_run"], project=tmp_path / "ray")
    assert record["status"] == "succeeded" and len(record["steps"]) == len(on_ray["steps"])
    assert on_ray["model"]["version"] == 1 and on_ray["model"]["promoted"]


def test_a_step_no_node_can_hold_fails_at_once_naming_the_resource(
    local_ray: Any, tmp_path: Path
) -> None:
    root = make(tmp_path / "big", executor="ray", pipeline={"resources": {"train": {"cpus": 64}}})
    began = time.monotonic()
    with pytest.raises(ConfigError, match=r"step 'train' asks for 64 CPU.*missing CPU"):
        keel.run(root)
    assert time.monotonic() - began < 10
    assert api.pipeline_runs(project=root) == []  # refused before anything ran


HOLD = """
import keel


@keel.step(outputs={"held": "report"})
def hold(ctx):
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # ray.cancel interrupts the wait
        ctx.cancelled.wait(0.02)
    return {"held": ctx.put_json({}, kind="report")}
"""


def test_cancel_stops_the_ray_task_and_records_it_cancelled(local_ray: Any, tmp_path: Path) -> None:
    import threading

    from rich.console import Console

    from keel.pipeline.custom import custom_steps
    from keel.pipeline.runner import Cancelled, run_steps
    from keel.project import Project
    from keel.store import pipeline_runs

    root = keel.init(tmp_path / "cancel", example="adult")
    (root / "hold_steps.py").write_text(HOLD, encoding="utf-8")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config.update(executor="ray", pipeline={"steps": [{"function": "hold_steps:hold"}]})
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 60
        with Project(root) as other:
            while time.monotonic() < deadline:
                runs = other.metadata.list_runs(step="hold", limit=1)
                if runs and runs[0].status == "running":
                    (record,) = pipeline_runs.recent(other.metadata.database, 1)
                    pipeline_runs.request_cancel(other.metadata.database, record.id)
                    return
                time.sleep(0.05)  # polling the database for the task to start

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    began = time.monotonic()
    with Project(root) as project, pytest.raises(Cancelled):
        run_steps(project, custom_steps(project), console=Console(quiet=True))
    canceller.join(timeout=10)
    assert time.monotonic() - began < 50, "stopped long before the step's own minute"
    (record,) = api.pipeline_runs(project=root)
    assert record["status"] == "cancelled" and record["steps"][0]["status"] == "cancelled"
    with Project(root) as project:
        deadline = time.monotonic() + 20  # the worker records its run as it unwinds
        while (run := project.metadata.list_runs(step="hold", limit=1)[0]).status == "running":
            assert time.monotonic() < deadline, "the Ray task's run was never closed"
            time.sleep(0.1)  # polling the database
        assert run.status == "cancelled" and "cancelled" in (run.error or "")
