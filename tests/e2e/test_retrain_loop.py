"""The closed loop on bike sharing: a model trained on 2011 serves 2012 through a real
``keel serve``, month by month, each row carrying its date (``dteday``, the event time the
monitoring windows are cut by: ``monitor.time_column``, ``window: 1mo``); each month's labels
come back over HTTP a month later. ``keel monitor run --retrain`` finds the months whose
realised RMSE breaks the performance rule, retrains with the labelled rows, and the canary of
the new version ends in promotion. Every link is recorded: alert -> pipeline run -> version ->
deployment."""

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
MONTHS = 8
"""2012 months served (Jan..Aug), in order; labels lag a month, so August has none yet."""
LABELLED_DAYS = 31 + 29 + 31 + 30 + 31 + 30 + 31  # Jan..Jul 2012
RMSE_LIMIT = 1200
"""The 2011 model's realised RMSE on 2012 months is far above its 2011 test RMSE (~600): 2012
demand is higher across the board (the first months' RMSE is ~1500-2500)."""
DROPPED = ("casual", "registered", "instant", "cnt")

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
  window: 1mo
  time_column: dteday
  min_rows: 20
  alerts:
    - name: demand-error
      when: performance.rmse.realised > RMSE_LIMIT for 1 windows
      cooldown: 0s
    - name: demand-drift
      when: drift.any_feature.psi > 0.2
      cooldown: 0s
RETRAIN
""".replace("RMSE_LIMIT", str(RMSE_LIMIT))
POLICY = """\
retrain:
  on: demand-error
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


def _served_2012() -> list[list[dict[str, Any]]]:
    """2012's days by month (Jan..Aug); ``dteday`` stays text, as clients send dates."""
    with DAY.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["yr"] == "1"]
    months: list[list[dict[str, Any]]] = [[] for _ in range(MONTHS)]
    for r in rows:
        if int(r["mnth"]) <= MONTHS:
            typed = {k: v if k == "dteday" else (float(v) if "." in v else int(v))
                     for k, v in r.items() if k not in DROPPED}  # fmt: skip
            months[int(r["mnth"]) - 1].append(typed | {"cnt": int(r["cnt"])})
    return months


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_alert_retrains_and_the_canary_is_promoted(tmp_path: Path) -> None:
    root = _project(tmp_path / "bikes")
    first = keel.run(root)
    assert first["model"]["version"] == 1 and first["model"]["promoted"]
    months = _served_2012()
    days = [d for month in months for d in month]
    with keel_serve(root) as served, httpx.Client(base_url=served.url, timeout=30) as http:
        predict, feedback = "/v1/models/bikes/predict", "/v1/models/bikes/feedback"
        owed: list[dict[str, Any]] = []  # last month's labels, sent after this month is served

        def serve(served_months: list[list[dict[str, Any]]]) -> None:
            nonlocal owed
            for month in served_months:  # one request per month, in date order
                body = {"instances": [{k: v for k, v in d.items() if k != "cnt"} for d in month]}
                answer = http.post(predict, json=body)
                assert answer.status_code == 200, answer.text
                if owed:  # the labels of the month before
                    fed = http.post(feedback, json={"labels": owed})
                    assert fed.status_code == 200, fed.text
                    assert fed.json()["counts"]["accepted"] == len(owed)
                rid = answer.json()["request_id"]
                owed = [{"request_id": rid, "instance": i, "label": d["cnt"]}
                        for i, d in enumerate(month)]  # fmt: skip

        def monitor_run(*extra: str, logged: int) -> dict[str, Any]:
            log = root / ".keel" / "predictions" / "bikes"
            deadline = time.monotonic() + 30
            while sum(len(f.read_bytes().splitlines()) for f in log.rglob("*.jsonl")) < logged:
                assert time.monotonic() < deadline, "the server did not log the requests"
                time.sleep(0.1)  # the server's log writer flushes on its own schedule
            done = keel_cli("monitor", "run", "bikes", *extra, "--format", "json", root=root)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "Traceback" not in done.stderr
            result: dict[str, Any] = json.loads(done.stdout)
            return result

        def months_of(alerts: list[dict[str, Any]]) -> list[str]:
            for alert in alerts:  # calendar months of the rows' own dates
                assert alert["window_start"].endswith("-01T00:00:00Z"), alert
                assert alert["window_end"].endswith("-01T00:00:00Z"), alert
            errors = [a for a in alerts if a["rule"] == "demand-error"]
            assert all(a["value"] > RMSE_LIMIT for a in errors), errors
            return sorted(a["window_start"][:7] for a in errors)

        # January to April served, labels up to March: the labelled months break the rule
        serve(months[:4])
        early = monitor_run(logged=4)
        assert early["window"] == "1mo" and early["checked_until"] == "2012-05-01T00:00:00Z"
        assert months_of(early["alerts"]) == ["2012-01", "2012-02", "2012-03"], early

        # then to August, labels up to July: one command fires the alerts, runs the policy.
        # April was checked before its labels came; its late labels still fire it
        serve(months[4:])
        result = monitor_run("--retrain", logged=MONTHS)
        fired = [a for a in result["alerts"] if a["rule"] == "demand-error"]
        assert months_of(fired) == ["2012-04", "2012-05", "2012-06", "2012-07"], result
        alert_ids = {a["id"] for a in result["alerts"]}
        [retrained] = result["retrain"]
        assert retrained["status"] == "canary", retrained
        assert retrained["alert_id"] in {a["id"] for a in fired}
        assert retrained["version"] == 2 and retrained["rows_added"] == LABELLED_DAYS
        assert retrained["rows_excluded"] == 0 and retrained["rows_carried"] == 0
        assert all(g["passed"] for g in retrained["gates"])
        deployment = retrained["deployment_id"]

        # the windows, per version: realised RMSE for the labelled months, none for August
        shown = keel_cli("monitor", "bikes@1", "--format", "json", root=root)
        assert shown.returncode in (0, 1) and "Traceback" not in shown.stderr, shown.stderr
        report = json.loads(shown.stdout)
        starts = [w["start"][:7] for w in report["windows"]]
        assert starts == [f"2012-{m:02d}" for m in range(1, MONTHS + 1)], starts
        assert [w["rows"] for w in report["windows"]] == [len(m) for m in months]
        realised = [w["realised"] for w in report["windows"]]
        assert all(r["status"] == "ok" for r in realised[:-1]), realised
        assert realised[-1]["labelled"] == 0 and realised[-1]["status"] == "not_enough_labels"
        assert max(r["metrics"]["rmse"]["value"] for r in realised[:-1]) > RMSE_LIMIT

        # not promoted by the register step: the canary decides
        with Project(root) as project:
            registry = Registry(project.metadata.database)
            assert registry.resolve("bikes@production").version == 1
            assert registry.resolve("bikes@candidate").version == 2

        # another alert while the canary runs does not retrain (Python API)
        assert alert_ids
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
        f"alert #{retrained['alert_id']} (demand-error) -> pipeline run {retrained['pipeline_run']}"
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
    assert again["rows_added"] == LABELLED_DAYS and again["rows_carried"] == 0  # de-duplicated
    assert again["deployment_id"] is None
    tracked = keel.api.get_run(steps["labelled_rows"]["run_id"], project=root)
    assert tracked["tags"]["trigger"] == "event"
    with Project(root) as project:  # lineage: the training snapshot names the labelled rows
        made = project.metadata.get_artifact(tracked["outputs"]["train_snapshot"])
        added = project.metadata.get_artifact(retrained["labelled_sha256"])
    assert made.metadata["retrain"]["labelled"] == retrained["labelled_sha256"]
    assert made.metadata["retrain"]["rows_added"] == LABELLED_DAYS == added.metadata["rows"]
    assert made.metadata["retrain"]["excluded"] == {}
    assert made.metadata["parent"] == tracked["inputs"]["train_snapshot"]


def test_a_bad_policy_is_a_clear_error(tmp_path: Path) -> None:
    unknown = _project(tmp_path / "unknown", POLICY.replace("on: demand-error", "on: nope"))
    done = keel_cli("monitor", "run", "bikes", "--retrain", root=unknown)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "retrain.on" in done.stderr + done.stdout and "demand-error" in done.stderr + done.stdout

    bad_steps = _project(tmp_path / "steps", POLICY.replace('steps: "50"', 'steps: "50,20"'))
    done = keel_cli("monitor", "run", "bikes", "--retrain", root=bad_steps)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "retrain.steps" in done.stderr + done.stdout
