"""The closed loop on bike sharing: a model trained on 2011 serves 2012 through a real
``keel serve``; labels come back over HTTP; ``keel monitor run --retrain`` fires the drift alert,
retrains with the labelled window, and the canary of the new version ends in promotion. Every
link is recorded: alert -> pipeline run -> version -> deployment."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import keel
import keel.api
from keel.project import Project
from keel.registry.registry import Registry
from keel.store.tables import events
from tests.serve.conftest import keel_serve

DAY = Path("/work/shared/data/bike-sharing/day.csv")
SERVED_DAYS = 240
"""2012 days served (Jan..Aug), in order: windows of 60 rows are about two months each."""
DROPPED = ("casual", "registered", "instant", "dteday", "cnt")

CONFIG = """\
project: bikes
data:
  train: {path: data/train.csv, header: true}
  test: {path: data/test.csv, header: true}
  target: cnt
  drop: [casual, registered, instant, dteday]
schema: auto
model:
  name: bikes
  flavor: lightgbm
  task: regression
  params: {n_estimators: 80, learning_rate: 0.1, num_leaves: 15, min_child_samples: 5}
evaluate:
  gates:
    - r2 >= 0.3
registry:
  alias: production
serve:
  reload_interval_s: 0.2
monitor:
  window: 60rows
  min_rows: 30
  alerts:
    - name: demand-drift
      when: drift.any_feature.psi > 0.2
      cooldown: 0s
RETRAIN
"""
POLICY = """\
retrain:
  on: demand-drift
  data: {labelled_since: 30d, min_rows: 50}
  then: canary
  steps: "50"
  interval: 1s
  checks: error_rate<=0.01
  failures: 2
  min_requests: 5
"""

pytestmark = pytest.mark.skipif(not DAY.exists(), reason="bike-sharing data not present")


def _project(root: Path, policy: str = POLICY) -> Path:
    """2011 days split 4:1 into train and test; 2012 days come later, through the server."""
    (root / "data").mkdir(parents=True)
    with DAY.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])
    year = [r for r in rows if r["yr"] == "0"]
    for name, picked in (
        ("train", [r for i, r in enumerate(year) if i % 5]),
        ("test", [r for i, r in enumerate(year) if not i % 5]),
    ):
        with (root / "data" / f"{name}.csv").open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            writer.writerows(picked)
    (root / "keel.yaml").write_text(CONFIG.replace("RETRAIN\n", policy))
    return root


def _served_2012() -> list[dict[str, Any]]:
    with DAY.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["yr"] == "1"][:SERVED_DAYS]
    return [
        {k: (float(v) if "." in v else int(v)) for k, v in r.items() if k not in DROPPED}
        | {"cnt": int(r["cnt"])}
        for r in rows
    ]


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_alert_retrains_and_the_canary_is_promoted(tmp_path: Path) -> None:
    root = _project(tmp_path / "bikes")
    first = keel.run(root)
    assert first["model"]["version"] == 1 and first["model"]["promoted"]
    days = _served_2012()
    with keel_serve(root) as served, httpx.Client(base_url=served.url, timeout=30) as http:
        predict = "/v1/models/bikes/predict"
        labels = []
        for start in range(0, len(days), 10):  # 24 requests of 10 days each, in date order
            chunk = days[start : start + 10]
            body = {"instances": [{k: v for k, v in d.items() if k != "cnt"} for d in chunk]}
            answer = http.post(predict, json=body)
            assert answer.status_code == 200, answer.text
            rid = answer.json()["request_id"]
            labels += [{"request_id": rid, "instance": i, "label": d["cnt"]}
                       for i, d in enumerate(chunk)]  # fmt: skip
        fed = http.post("/v1/models/bikes/feedback", json={"labels": labels})
        assert fed.status_code == 200, fed.text
        assert fed.json()["counts"]["accepted"] == len(days)

        # one command: check the windows, fire the alert, run the policy
        deadline = time.monotonic() + 30
        while True:  # the server's log writer flushes on its own schedule
            done = keel_cli("monitor", "run", "bikes", "--retrain", "--format", "json", root=root)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "Traceback" not in done.stderr
            result = json.loads(done.stdout)
            if result["alerts"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert result["alerts"], result
        alert_ids = {a["id"] for a in result["alerts"]}
        assert {a["rule"] for a in result["alerts"]} == {"demand-drift"}
        [retrained] = result["retrain"]
        assert retrained["status"] == "canary", retrained
        assert retrained["alert_id"] in alert_ids
        assert retrained["version"] == 2 and retrained["rows_added"] == len(days)
        assert all(g["passed"] for g in retrained["gates"])
        deployment = retrained["deployment_id"]

        # not promoted by the register step: the canary decides
        with Project(root) as project:
            registry = Registry(project.metadata.database)
            assert registry.resolve("bikes@production").version == 1
            assert registry.resolve("bikes@candidate").version == 2

        # another alert while the canary runs does not retrain (Python API)
        [busy] = keel.api.retrain([retrained["alert_id"]], project=root)
        assert busy["status"] == "deployment_active" and busy["deployment_id"] == deployment
        assert busy["pipeline_run"] is None

        deadline = time.monotonic() + 60
        while keel.deployment_status(deployment, project=root)["status"] == "active":
            assert time.monotonic() < deadline, keel.deployment_status(deployment, project=root)
            for d in days[:10]:
                row = {k: v for k, v in d.items() if k != "cnt"}
                assert http.post(predict, json={"instances": [row]}).status_code == 200
        status = keel.deployment_status(deployment, project=root)
        assert status["status"] == "promoted", status["events"]

    # the chain, as recorded
    chain = (
        f"alert #{retrained['alert_id']} (demand-drift) -> pipeline run {retrained['pipeline_run']}"
    )
    with Project(root) as project:
        registry = Registry(project.metadata.database)
        assert registry.resolve("bikes@production").version == 2
        audit = registry.audit(target="bikes")
        started = [e.details for e in audit if e.details.get("deployment") == deployment]
        assert any(chain + " -> version 2" in str(d.get("reason")) for d in started), started
        with project.metadata.database.read() as conn:
            kind = events.c.kind == "retrain"
            [payload] = conn.execute(sa.select(events.c.payload).where(kind)).scalars().all()
    assert payload["alert_id"] == retrained["alert_id"]
    assert payload["pipeline_run"] == retrained["pipeline_run"]
    assert payload["deployment_id"] == deployment and payload["version"] == 2
    run = keel.api.get_pipeline_run(retrained["pipeline_run"], project=root)
    assert run["trigger"] == "event"
    assert f"alert #{retrained['alert_id']}" in run["reason"]
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["labelled_rows"]["status"] == "succeeded"
    # the same labelled window again: the same model, so no new version and no canary
    [again] = keel.api.retrain([retrained["alert_id"]], project=root)
    assert again["status"] == "unchanged" and again["version"] == 2, again
    assert again["deployment_id"] is None
    tracked = keel.api.get_run(steps["labelled_rows"]["run_id"], project=root)
    assert tracked["tags"]["trigger"] == "event"
    with Project(root) as project:  # lineage: the training snapshot names the labelled rows
        made = project.metadata.get_artifact(tracked["outputs"]["train_snapshot"])
        added = project.metadata.get_artifact(retrained["labelled_sha256"])
    assert made.metadata["retrain"]["labelled"] == retrained["labelled_sha256"]
    assert made.metadata["retrain"]["rows_added"] == len(days) == added.metadata["rows"]
    assert made.metadata["parent"] == tracked["inputs"]["train_snapshot"]


def test_a_bad_policy_is_a_clear_error(tmp_path: Path) -> None:
    unknown = _project(tmp_path / "unknown", POLICY.replace("on: demand-drift", "on: nope"))
    done = keel_cli("monitor", "run", "bikes", "--retrain", root=unknown)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "retrain.on" in done.stderr + done.stdout and "demand-drift" in done.stderr + done.stdout

    bad_steps = _project(tmp_path / "steps", POLICY.replace('steps: "50"', 'steps: "50,20"'))
    done = keel_cli("monitor", "run", "bikes", "--retrain", root=bad_steps)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "retrain.steps" in done.stderr + done.stdout
