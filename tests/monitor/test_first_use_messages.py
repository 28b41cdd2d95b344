"""What a new user reads on a small trained Adult project with 60 logged rows: `keel monitor run`
names the windows below monitor.min_rows and the threshold, and the log sink writes a whole-log
window as `all`; `keel monitor` says why a label realised nothing (its prediction is outside the
selection) and pluralises; `keel schedule add` hints that no scheduler runs, until one leads."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import keel
from keel.project import Project
from keel.store.schedules import ScheduleStore

DAY = 86_400


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def said(done: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with the terminal's line wrapping undone."""
    return " ".join((done.stdout + " " + done.stderr).split())


def write_day(root: Path, rows: list[dict[str, Any]], start: int, tag: str) -> None:
    records = [
        {"request_id": f"{tag}-{i}", "time": start + 1 + i, "model": "adult",
         "model_version": "1", "role": "primary", "inputs": [row], "predictions": ["<=50K"],
         "probabilities": [0.2]}
        for i, row in enumerate(rows)
    ]  # fmt: skip
    day = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")
    folder = root / ".keel" / "predictions" / "adult" / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "1-a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, adult_test_table: Any) -> Path:
    """Adult (10 trees, no window: the whole log is one), 30 rows logged on each of the two
    days before today, and one label, of the earlier day's first row."""
    root = tmp_path_factory.mktemp("first-use") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["n_estimators"] = 10  # fast; the model's quality is not tested
    config["evaluate"]["gates"] = []
    config["monitor"].pop("window", None)
    config["monitor"]["alerts"] = [
        {"name": "drift", "when": "drift.any_feature.psi > 0.2", "cooldown": "0s",
         "sinks": ["log"]},
        {"name": "few", "when": "rows < 1000", "cooldown": "0s", "sinks": ["log"]},
    ]  # fmt: skip
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    keel.run(root)
    rows = adult_test_table.drop_columns(["income"]).slice(0, 60).to_pylist()
    today = int(time.time()) // DAY * DAY
    write_day(root, rows[:30], today - 2 * DAY, "old")
    write_day(root, rows[30:], today - DAY, "new")
    (root / "labels.csv").write_text("request_id,label\nold-0,>50K\n")
    assert keel_cli("feedback", "adult", "-i", "labels.csv", cwd=root).returncode == 0
    return root


def test_monitor_run_names_the_small_windows_and_says_each_alert_once(project: Path) -> None:
    done = keel_cli("monitor", "run", "adult", cwd=project)
    assert done.returncode == 0
    text = said(done)
    assert "the whole log (window all) holds 60 rows, fewer than monitor.min_rows (100)" in text
    assert "rules on feature or output shift do not fire" in text
    assert "WARNING #1 few on adult@1, window all: rows = 60 < 1000" in text
    # the log sink's line goes to the keel.alerts logger only: with no logging configured it is
    # not echoed to stderr a second time (the line above says it)
    assert "alert #1 [warning]" not in text
    assert " .. :" not in text
    daily = said(keel_cli("monitor", "run", "adult", "--window", "1d", cwd=project))
    assert "2 of 2 windows hold fewer than monitor.min_rows (100) rows:" in daily
    assert "(30 rows), " in daily and "; not enough data to judge them (not_enough_data)" in daily


def test_monitor_says_why_a_label_realised_nothing(project: Path) -> None:
    since = datetime.fromtimestamp(int(time.time()) // DAY * DAY - DAY, UTC).isoformat()[:19]
    outside = said(keel_cli("monitor", "adult", "--since", since, cwd=project))
    assert (
        "realised from 0 labelled rows (1 of 1 label matches no logged prediction in the "
        "selection: its prediction is outside the selected windows, or was never logged)"
    ) in outside
    inside = said(keel_cli("monitor", "adult", cwd=project))
    assert "realised from 1 labelled row: not enough labels" in inside
    assert "labels)" not in inside


def test_schedule_add_hints_that_no_scheduler_runs_until_one_leads(project: Path) -> None:
    done = keel_cli("schedule", "add", "nightly", "--every", "1d", "-f", "json", cwd=project)
    assert done.returncode == 0
    assert json.loads(done.stdout)["scheduler_running"] is False
    assert "no keel scheduler is running: start one with `keel scheduler`" in said(done)
    with Project(project) as proj, ScheduleStore(proj.db_url) as store:
        assert store.acquire_lease("test-leader", seconds=300) is not None
    done = keel_cli("schedule", "add", "hourly", "--every", "1h", cwd=project)
    assert done.returncode == 0 and "added schedule hourly" in done.stdout
    assert "no keel scheduler" not in said(done)
