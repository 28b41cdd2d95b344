"""Crash safety: `kill -9` of `keel run` at random points, then `keel doctor` is clean (no stuck
runs, no missing or corrupt artifacts; the leftovers it reports, `keel doctor --fix` removes)
and the next `keel run` completes.

Bounded for CI: ``KEEL_CRASH_KILLS`` kills (default 30) within ``KEEL_CRASH_SECONDS`` (default
240) of killing; ``KEEL_CRASH_SEED`` picks the points (default 20261204).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
KILLS = int(os.environ.get("KEEL_CRASH_KILLS", "30"))
BUDGET_SECONDS = float(os.environ.get("KEEL_CRASH_SECONDS", "240"))
SEED = int(os.environ.get("KEEL_CRASH_SEED", "20261204"))
RUN_TIMEOUT = 300

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PENGUINS.exists(), reason="the shared datasets are not here"),
]

KEEL_YAML = """\
project: penguins
data:
  train:
    path: data/penguins.csv
    na_values: [NA]
  target: species
model:
  name: penguins
  flavor: lightgbm
  task: multiclass
  params: {n_estimators: 20, num_leaves: 7}
"""


def keel(*args: str, cwd: Path) -> subprocess.Popen[str]:
    # Its own session: if it ever starts helpers, the test can end them with it.
    return subprocess.Popen([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=RUN_TIMEOUT)
    return process.returncode, out, err


def doctor(project: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = finish(
        keel("doctor", "--format", "json", "--min-age", "0", *args, cwd=project)
    )
    assert "Traceback" not in err, err
    report = json.loads(out)
    return code, {c["name"]: c for c in report["checks"]}


def kill_at(project: Path, delay: float) -> bool:
    """Start `keel run --no-cache` and SIGKILL it after ``delay`` seconds; False when it ended
    first. A killed run must have died of the signal."""
    process = keel("run", "--no-cache", cwd=project)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        code, _, err = finish(process)
        if code == 0:  # it exited between the timeout and the signal: it ended first
            return False
        assert code == -signal.SIGKILL, f"keel run was not killed (exit {code}): {err[-2000:]}"
        return True
    finally:
        if process.poll() is None:  # pragma: no cover - only when an assertion above failed
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    code, _, err = finish(process)
    assert code == 0, f"keel run failed before it was killed (exit {code}): {err[-3000:]}"
    return False


def run_statuses(project: Path) -> dict[str, int]:
    engine = sa.create_engine(f"sqlite:///{project / '.keel' / 'keel.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, count(*) FROM runs GROUP BY status"))
            return {status: count for status, count in rows}
    finally:
        engine.dispose()


def test_kill_9_at_random_points_then_doctor_is_clean_and_the_next_run_completes(
    tmp_path: Path,
) -> None:
    project = tmp_path / "penguins"
    (project / "data").mkdir(parents=True)
    shutil.copyfile(PENGUINS, project / "data" / "penguins.csv")
    (project / "keel.yaml").write_text(KEEL_YAML)
    started = time.monotonic()
    code, _, err = finish(keel("run", cwd=project))
    assert code == 0, err[-3000:]
    full = time.monotonic() - started  # a first run: it executes every step, as --no-cache does

    rng = random.Random(SEED)
    rows = PENGUINS.read_text().splitlines(keepends=True)[1:]
    kills, deadline = 0, time.monotonic() + BUDGET_SECONDS
    for attempt in range(KILLS):
        if time.monotonic() > deadline:
            break
        # new data arrives between runs, so a killed run leaves blobs no earlier run wrote
        with (project / "data" / "penguins.csv").open("a") as data:
            data.write(rows[attempt % len(rows)])
        kills += kill_at(project, rng.uniform(0.05, full * 1.1))
    assert kills >= min(KILLS, 5), f"only {kills} of the runs were killed in time"

    code, checks = doctor(project)
    assert checks["runs"]["status"] == "ok", checks["runs"]
    assert checks["artifacts"]["status"] == "ok", checks["artifacts"]
    assert checks["schema"]["status"] in ("ok", "info"), checks["schema"]
    failed = [name for name, check in checks.items() if check["status"] == "fail"]
    assert set(failed) <= {"leftovers"}, checks
    assert "running" not in run_statuses(project)

    code, checks = doctor(project, "--fix")
    assert code == 0, checks
    code, checks = doctor(project)
    assert code == 0, checks
    assert checks["leftovers"]["message"] == "none"

    code, out, err = finish(keel("run", "--format", "json", cwd=project))
    assert code == 0, err[-3000:]
    assert json.loads(out)["model"]["version"] >= 1
    code, checks = doctor(project)
    assert code == 0, checks
    statuses = run_statuses(project)
    assert "running" not in statuses
    if kills >= 10:  # some kill surely landed inside a step: its run was marked failed
        assert statuses.get("failed", 0) >= 1, statuses
