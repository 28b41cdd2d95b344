"""Event-time windows on a column of unix milliseconds (``monitor.time_column`` with
schema.yaml's ``unit: ms``): the logged numbers are read in that unit, as ingestion and
requests read them, not as seconds (which put 1997's ratings in the year 29896).

MovieLens 100k's u.data (``timestamp`` in unix seconds) is read from ../shared/data beside
the repository and copied, in milliseconds, into the test's directory; that test is skipped
without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.data import ReadOptions
from keel.monitor.eventtime import event_time_unit, event_times
from keel.validate.coerce import Coercer, InputRule
from tests.serve.conftest import keel_serve

MOVIELENS = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-100k"
SECOND = 881_250_949  # 1997-12-04T15:55:49Z, u.data's first rating


def test_numbers_and_decimal_text_are_read_in_the_unit() -> None:
    want = [float(SECOND), float(SECOND) + 0.25, np.nan]
    ms = pa.array([SECOND * 1000, SECOND * 1000 + 250, None])
    assert np.allclose(event_times(ms, "ms"), want, equal_nan=True)
    us = pa.array([SECOND * 10**6, SECOND * 10**6 + 250_000, None], pa.uint64())
    assert np.allclose(event_times(us, "us"), want, equal_nan=True)
    mixed = pa.array([f"{SECOND}000", " 881250949250 ", "1997-12-04T15:55:49Z", "soon", None])
    found = event_times(mixed, "ms")
    assert np.allclose(found[:3], [SECOND, SECOND + 0.25, SECOND]) and np.isnan(found[3:]).all()
    # without a unit a number is seconds, and decimal text is no time (as before)
    assert event_times(pa.array([SECOND]))[0] == SECOND
    assert np.isnan(event_times(pa.array([str(SECOND)]))[0])
    # milliseconds read as seconds are beyond the year 9999: no time, not a window in 29896
    assert np.isnan(event_times(pa.array([SECOND * 1000]))[0])
    # a uint64 at or past 2**63 is no time in any unit (and no error)
    assert np.isnan(event_times(pa.array([2**63, 2**64 - 1], pa.uint64()), "ms")).all()


def test_the_unit_is_the_models_rule_for_an_input_else_schema_yaml(tmp_path: Path) -> None:
    rules = Coercer([InputRule("created_ms", "timestamp", unit="ms"), InputRule("x", "float")])
    assert event_time_unit(tmp_path, "created_ms", rules) == "ms"
    assert event_time_unit(tmp_path, "rated_at", rules) is None  # no schema.yaml
    (tmp_path / "schema.yaml").write_text(
        "columns:\n  rated_at:\n    type: timestamp\n    unit: us\n    role: timestamp\n"
        "  x:\n    type: float\n"
    )
    assert event_time_unit(tmp_path, "rated_at", rules) == "us"
    assert event_time_unit(tmp_path, "x", None) is None


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def _month(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-01T00:00:00Z")


@pytest.mark.skipif(not (MOVIELENS / "u.data").exists(), reason=f"needs {MOVIELENS}")
def test_movielens_in_milliseconds_windows_by_its_own_months(tmp_path: Path) -> None:
    """u.data with its timestamps in milliseconds: init finds the unit, the server logs the
    raw numbers (and ISO text for some rows), and monthly event-time windows are 1997-1998."""
    head = (MOVIELENS / "u.data").read_text().splitlines()[:3000]
    rows = [line.split("\t") for line in head]
    ratings = tmp_path / "u_ms.data"
    ratings.write_text("\n".join(f"{u}\t{i}\t{r}\t{t}000" for u, i, r, t in rows) + "\n")
    read = ReadOptions(columns=("user_id", "item_id", "rating", "timestamp"))
    made = init_from_file(tmp_path / "ml", ratings, "rating", read=read, copy=False)
    assert made.unix_time == (("timestamp", "ms"),)
    root = made.directory
    path = root / "keel.yaml"
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config["model"]["params"] = {"n_estimators": 20, "num_leaves": 8}
    config["evaluate"]["gates"] = []
    config["monitor"] = {"time_column": "timestamp", "window": "1mo", "min_rows": 20}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert keel.run(root)["model"]["version"] == 1
    sent = rows[:600]
    instances: list[dict[str, Any]] = [
        {"user_id": int(u), "item_id": int(i), "timestamp": int(t) * 1000} for u, i, _, t in sent
    ]
    for row in instances[::3]:  # a third as ISO text, as clients may send it
        row["timestamp"] = datetime.fromtimestamp(row["timestamp"] / 1000, UTC).isoformat()
    with keel_serve(root) as server:
        for start in range(0, len(instances), 200):
            batch = {"instances": instances[start : start + 200]}
            answer = httpx.post(f"{server.url}/v1/models/ml/predict", json=batch, timeout=30)
            assert answer.status_code == 200, answer.text
    done = keel_cli("monitor", "ml", "--format", "json", root=root)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: a drift verdict
    report = json.loads(done.stdout)
    windows = {w["start"]: w["rows"] for w in report["windows"]}
    expected: dict[str, int] = {}
    for _, _, _, seconds in sent:
        expected[_month(int(seconds))] = expected.get(_month(int(seconds)), 0) + 1
    assert windows == expected
    assert min(windows) >= "1997-09-01" and max(windows) < "1998-05-01"
    assert not any("no timestamp" in note for note in report["notes"])
