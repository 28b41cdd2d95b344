"""Event-time windows are judged again when late rows land in them (`keel monitor run` with
``monitor.time_column``): on a small Adult project whose rows carry an ``event_date``, a day
judged stable turns to drift when old people's rows dated that day arrive later; the alert
fires then, once; the window's stored judgement is superseded, not duplicated; and the run says
which window was re-judged and why."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import yaml

import keel
from keel.monitor.rejudge import KIND
from keel.project import Project
from keel.store.tables import events

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, adult_train_table: pa.Table
) -> Iterator[Path]:
    from keel.commands.init import init_from_file

    base = tmp_path_factory.mktemp("rejudge")
    table = adult_train_table.slice(0, 2000)
    dates = [f"2023-12-{1 + i % 28:02d}" for i in range(table.num_rows)]
    source = base / "dated.csv"
    pacsv.write_csv(table.append_column("event_date", pa.array(dates)), source)
    root = base / "dated"
    root.mkdir()
    init_from_file(root, source, "income", copy=True, force=False)
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"] = {"n_estimators": 5}
    config.setdefault("evaluate", {})["gates"] = []
    config["monitor"] = {
        "window": "1d",
        "time_column": "event_date",
        "min_rows": 100,
        "alerts": [{"name": "age-drift", "when": "drift.age.psi > 0.2", "cooldown": "0s"}],
    }
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    keel.run(root)
    yield root


def log_rows(root: Path, rows: list[dict[str, Any]], day: str, name: str) -> None:
    """Rows served now (request time) whose event time is ``day``."""
    now = time.time()
    scores = np.random.default_rng(len(rows)).random(len(rows))
    records = [
        {"request_id": f"{name}-{i}", "time": now, "model": "dated", "model_version": "1",
         "role": "primary", "inputs": [{**r, "event_date": day} for r in rows[i : i + 10]],
         "predictions": [">50K" if s >= 0.5 else "<=50K" for s in scores[i : i + 10]],
         "probabilities": scores[i : i + 10].tolist()}
        for i in range(0, len(rows), 10)
    ]  # fmt: skip
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    folder = root / ".keel" / "predictions" / "dated" / today
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.jsonl").open("ab") as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


def stored(root: Path) -> list[dict[str, Any]]:
    with Project(root) as project, project.metadata.database.read() as conn:
        rows = conn.execute(sa.select(events.c.payload).where(events.c.kind == KIND)).all()
    return [dict(r.payload) for r in rows]


def test_late_rows_re_judge_their_window_and_alert_once(
    project: Path, adult_test_table: pa.Table
) -> None:
    table = adult_test_table.drop_columns(["income"])
    stable = table.slice(0, 900).to_pylist()
    old = table.sort_by([("age", "descending")]).slice(0, 800).to_pylist()
    for index, day in enumerate(DAYS):
        log_rows(project, stable[index * 300 : (index + 1) * 300], day, f"on-time-{index}")

    first = keel.monitor_run("dated", project=project, patience=0)
    assert first["windows_checked"] == 3 and first["alerts"] == [] and first["rejudged"] == []
    assert first["checked_until"] == "2024-01-04T00:00:00Z"
    assert sorted((p["start"], p["rows"]) for p in stored(project)) == [
        (f"{day}T00:00:00Z", 300) for day in DAYS
    ]

    log_rows(project, old[:600], DAYS[1], "late-1")  # old people, dated the 2nd, arrive late
    second = keel.monitor_run("dated", project=project, patience=0)
    [again] = second["rejudged"]
    assert (again["start"], again["rows_before"], again["rows_now"]) == (
        "2024-01-02T00:00:00Z", 300, 900,
    )  # fmt: skip
    assert (again["verdict_before"], again["verdict_now"]) == ("stable", "drift")
    assert "600 late rows with an event time in it arrived after it was judged" in again["reason"]
    assert any(n.startswith("re-judged 1 window by event_date") for n in second["notes"])
    [alert] = second["alerts"]
    assert (alert["rule"], alert["window_start"]) == ("age-drift", "2024-01-02T00:00:00Z")
    assert second["windows_checked"] == 1

    third = keel.monitor_run("dated", project=project, patience=0)  # nothing arrived
    assert third["rejudged"] == [] and third["alerts"] == [] and third["windows_checked"] == 0

    log_rows(project, old[600:800], DAYS[1], "late-2")  # more of them: judged again, no new alert
    fourth = keel.monitor_run("dated", project=project, patience=0)
    assert [r["rows_now"] for r in fourth["rejudged"]] == [1100]
    assert fourth["alerts"] == []
    assert [s["reason"] for s in fourth["skipped"]] == ["duplicate"]
    assert len(keel.alerts(model="dated", project=project)) == 1  # not raised twice

    second_day = [p for p in stored(project) if p["start"] == "2024-01-02T00:00:00Z"]
    assert len(second_day) == 1  # superseded in place, not duplicated
    assert (second_day[0]["rows"], second_day[0]["verdict"], second_day[0]["judgements"]) == (
        1100, "drift", 3,
    )  # fmt: skip
    assert second_day[0]["previous"]["rows"] == 900

    # the CLI says it too: one more late row in the 1st, `keel monitor run` in words
    log_rows(project, stable[:1], DAYS[0], "late-3")
    shown = subprocess.run([sys.executable, "-m", "keel.cli", "monitor", "run", "dated"],
                           cwd=project, text=True, capture_output=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    words = " ".join(shown.stdout.split())
    assert "re-judged 1 window by event_date already checked, since rows arrived late: " in words
    assert "2024-01-01T00:00:00Z .. 2024-01-02T00:00:00Z: 1 late row with an event time" in words
