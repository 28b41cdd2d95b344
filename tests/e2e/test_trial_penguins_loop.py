"""A new user's trial of the second half of the lifecycle on Palmer penguins (multiclass):
serve, feed labels back, monitor, alert, retrain, lineage.

Each test is a problem the trial hit, kept fixed: ``keel monitor`` with row windows printed a
twelve-column window table cut to ``win…``/``acc…`` at 80 columns, ended ``verdict: stable``
while the latest window had drifted and the command exited 1, and told a user who had sent 200
labels to "send labels (keel feedback p) for realised accuracy"; and the labelled rows a retrain
trained on were in no run's lineage (``keel lineage p@2`` never reached them, their snapshot had
no descendants), although the README says the new snapshot's lineage names them.

The data is tests/data/palmer-penguins (CC0, copied with its SOURCE.md), so CI's fresh clone has
it. One project is shared: 150 served rows from the data, then 150 with bill lengths +20 %,
labels for 100 of each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.data import read_snapshot
from keel.project import Project
from tests.serve.conftest import keel_serve

PENGUINS = Path(__file__).parents[1] / "data" / "palmer-penguins" / "penguins.csv"
WINDOW = 150
LABELLED = 100

pytestmark = pytest.mark.skipif(not PENGUINS.exists(), reason="needs tests/data/palmer-penguins")


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def _policy(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    config["model"]["params"] = {"n_estimators": 60, "learning_rate": 0.2, "num_leaves": 8}
    config["monitor"] = {
        "window": f"{WINDOW}rows",
        "alerts": [
            {"name": "bill-drift", "when": "drift.any_feature.psi > 0.2"},
            {"name": "accuracy-drop", "when": "performance.accuracy.realised < 0.9"},
        ],
    }
    config["retrain"] = {
        "on": "accuracy-drop",
        "data": {"labelled_since": "30d", "min_rows": 50},
        "then": "canary",
        "steps": "25,100",
        "interval": "5m",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.drop(columns="species").astype(object).where(frame.notna(), None)
    return list(rows.to_dict("records"))


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("penguins")
    made = init_from_file(root / "p", PENGUINS, "species")
    assert made.task == "multiclass"
    _policy(made.directory / "keel.yaml")
    assert keel.run(made.directory)["model"]["version"] == 1
    data = pd.read_csv(PENGUINS, na_values=["NA"])
    plain = data.sample(WINDOW, replace=True, random_state=1)
    shifted = data.sample(WINDOW, replace=True, random_state=2)
    shifted["bill_length_mm"] *= 1.2
    sent = pd.concat([plain, shifted])
    with keel_serve(made.directory) as server, httpx.Client(base_url=server.url) as http:
        ids = []
        for instance in _instances(sent):
            answer = http.post("/v1/models/p/predict", json={"instances": [instance]})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])
    labelled = [*range(LABELLED), *range(WINDOW, WINDOW + LABELLED)]
    pd.DataFrame(
        {"request_id": [ids[i] for i in labelled], "label": sent["species"].iloc[labelled]}
    ).to_csv(root / "labels.csv", index=False)
    fed = keel_cli("feedback", "p", "--input", str(root / "labels.csv"), root=made.directory)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    assert f"{2 * LABELLED} accepted, 0 replaced, 0 rejected" in " ".join(fed.stdout.split())
    yield made.directory


def test_monitor_text_fits_80_columns_and_names_the_latest_window(penguins: Path) -> None:
    done = keel_cli("monitor", "p", root=penguins)
    assert done.returncode == 1, done.stdout + done.stderr  # the latest window drifted
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, done.stdout
    assert "…" not in done.stdout  # no cell or header is cut
    header = next(line for line in lines if line.startswith("window"))
    assert "realised accuracy" in header and "est. accuracy" not in header  # no CBPE: multiclass
    assert "requests" not in header  # row windows: traffic is in the operations table
    rows = {line.split()[0] + line.split()[2]: line for line in lines if " .. " in line[:12]}
    assert set(rows) == {"0150", "150300"}
    assert "stable" in rows["0150"] and "bill_length_mm" in rows["150300"]
    assert "drift" in rows["150300"]
    said = " ".join(done.stdout.split())
    assert "latest window (150): drift (bill_length_mm)" in said
    # labels were sent: the note must not ask for them
    assert "send labels" not in said
    assert "realised accuracy comes from the feedback labels" in said


def test_a_schedule_runs_and_an_unchanged_project_is_all_cached(penguins: Path) -> None:
    added = keel_cli("schedule", "add", "often", "--every", "2s", root=penguins)
    assert added.returncode == 0, added.stderr
    assert "no keel scheduler is running" in " ".join(added.stderr.split())
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "scheduler", "--project", str(penguins),
         "--lease", "2", "--poll", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 40
        ticks: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            shown = keel_cli("schedule", "show", "often", "--format", "json", root=penguins)
            ticks = [t for t in json.loads(shown.stdout)["ticks"] if t["status"] == "succeeded"]
            if len(ticks) >= 2:
                break
            time.sleep(0.5)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=30)
        keel_cli("schedule", "remove", "often", root=penguins)
    assert len(ticks) >= 2, "the scheduler ran fewer than 2 ticks in 40 s"
    for tick in ticks[:2]:  # nothing changed since keel run: every step a cache hit
        steps = keel.api.get_pipeline_run(tick["pipeline_run_id"], project=penguins)["steps"]
        assert steps and {s["status"] for s in steps} == {"cached"}, steps
    listed = keel_cli("schedule", "list", root=penguins).stdout
    assert max(len(line) for line in listed.splitlines()) <= 80, listed


def test_alerts_fire_once_and_the_retrain_is_in_the_lineage(penguins: Path) -> None:
    """Runs last: retrains (version 2) and starts a canary."""
    first = keel_cli("monitor", "run", "p", "--format", "json", root=penguins)
    assert first.returncode == 0, first.stderr
    assert "alert #" not in first.stderr  # the log sink's line is not echoed a second time
    fired = {a["rule"]: a for a in json.loads(first.stdout)["alerts"]}
    assert set(fired) == {"bill-drift", "accuracy-drop"}
    assert fired["accuracy-drop"]["window_start"] == str(WINDOW)
    again = keel_cli("monitor", "run", "p", "--format", "json", root=penguins)
    assert json.loads(again.stdout)["alerts"] == []  # de-duplicated: the window was checked
    listed = json.loads(keel_cli("alerts", "list", "--format", "json", root=penguins).stdout)
    assert sorted(a["rule"] for a in listed) == ["accuracy-drop", "bill-drift"]
    alert = str(fired["accuracy-drop"]["id"])
    done = keel_cli("alerts", "retrain", alert, "--format", "json", root=penguins)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["status"] == "canary" and result["version"] == 2
    # every labelled row went one way: trained, tested, or left out as equal to a test row
    sides = result["rows_added"] + result["rows_to_test"] + result["rows_equal_to_test"]
    assert sides == 2 * LABELLED and result["rows_to_test"] > 0
    # rows sampled from the data with replacement: some equal declared test rows, never trained
    assert result["rows_equal_to_test"] > 0
    # no row the new version was tested on is one it trained on (features and label)
    steps = keel.api.get_pipeline_run(result["pipeline_run"], project=penguins)["steps"]
    run = next(s["run_id"] for s in steps if s["step"] == "labelled_rows")
    outputs = keel.api.get_run(run, project=penguins)["outputs"]
    with Project(penguins) as project:
        train, test = (read_snapshot(project.artifacts, outputs[f"{side}_snapshot"]).to_pandas()
                       for side in ("train", "test"))  # fmt: skip
    # 344 rows: 69 held out by the split, as in keel run; the labelled rows join either side
    assert len(train) == 275 + result["rows_added"]
    assert len(test) == 69 + result["rows_to_test"]
    key = list(test.columns)
    assert train[key].astype(str).merge(test[key].astype(str), on=key).empty
    lineage = keel_cli("lineage", "p@2", "--format", "json", root=penguins)
    graph = json.loads(lineage.stdout)
    ids = {node["id"] for node in graph["nodes"]}
    assert f"artifact:{result['labelled_sha256']}" in ids
    down = keel_cli("lineage", result["labelled_sha256"], "--down", "--format", "json",
                    root=penguins)  # fmt: skip
    reached = {node["id"] for node in json.loads(down.stdout)["nodes"]}
    assert "version:p@2" in reached
    # the new version's drift reference is the rows it trained on, not the declared 275 only
    shown = keel_cli("monitor", "p@2", "--format", "json", root=penguins)
    assert json.loads(shown.stdout)["reference_rows"] == 275 + result["rows_added"], shown.stderr
