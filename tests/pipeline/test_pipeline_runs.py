"""Every `keel run` is a recorded pipeline run: trigger, status, each step's outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

import keel
from keel import api
from keel.errors import NotFoundError
from keel.project import Project
from keel.store import pipeline_runs
from keel.store.tables import pipeline_runs as table
from tests.pipeline.test_runner import make_project


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    root = make_project(tmp_path_factory.mktemp("pipeline-runs") / "adult")
    first = keel.run(root)
    second = keel.run(root, trigger="schedule", reason="nightly")
    return root, first, second


def test_a_run_is_recorded_with_each_steps_outcome(ran: Any) -> None:
    root, first, second = ran
    record = api.get_pipeline_run(first["pipeline_run"][:10], project=root)
    assert record["status"] == "succeeded" and record["trigger"] == "manual"
    steps = record["steps"]
    assert [s["step"] for s in steps] == [s["step"] for s in first["steps"]]
    assert {s["cache"] for s in steps} == {"miss"}
    train = next(s for s in steps if s["step"] == "train")
    assert train["cpu_seconds"] > 0 and train["peak_rss_mb"] > 50  # sampled while it ran
    assert [s["run_id"] for s in steps] == [s["run_id"] for s in first["steps"]]
    again = api.get_pipeline_run(second["pipeline_run"], project=root)
    assert (again["trigger"], again["reason"]) == ("schedule", "nightly")
    assert {s["cache"] for s in again["steps"]} == {"hit"}
    listed = api.pipeline_runs(project=root)
    assert [r["id"] for r in listed[:2]] == [second["pipeline_run"], first["pipeline_run"]]
    # each step run is tagged with its pipeline run: a filter finds them
    tagged = keel.runs(f'tags.pipeline_run = "{second["pipeline_run"]}"', project=root)
    assert len(tagged) == len(second["steps"])
    with pytest.raises(NotFoundError, match="no pipeline run matches 'ffffffff'"):
        api.get_pipeline_run("ffffffff", project=root)


def test_a_failed_run_names_the_step_that_failed(ran: Any) -> None:
    root, _, _ = ran
    config = yaml.safe_load((root / "keel.yaml").read_text())
    original = dict(config["evaluate"])
    config["evaluate"]["slices"] = ["no_such_column"]
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        with pytest.raises(keel.ConfigError):
            keel.run(root)
        record = api.pipeline_runs(project=root, limit=1)[0]
        assert record["status"] == "failed" and "no_such_column" in record["error"]
        status = {s["step"]: s["status"] for s in record["steps"]}
        assert [step for step, said in status.items() if said == "failed"] == ["evaluate"]
        assert status["register"] == "not_run"  # after the failure nothing new starts
    finally:
        config["evaluate"] = original
        (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_a_dead_process_pipeline_run_is_marked_failed(ran: Any) -> None:
    root, _, _ = ran
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    with Project(root) as project:
        database = project.metadata.database
        pipeline_runs.start(database, "d" * 32, config_hash="x", trigger="manual", reason=None)
        with database.write() as conn:
            conn.execute(
                table.update()
                .where(table.c.id == "d" * 32)
                .values(owner_pid=int(dead.stdout), started_at=datetime.now(UTC))
            )
    with Project(root) as project:  # opening the store reaps the dead
        record = pipeline_runs.get(project.metadata.database, "d" * 8)
    assert record.status == "failed" and "died" in (record.error or "")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_live_pipeline_run_survives_a_stepped_clock(
    ran: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    root, _, _ = ran
    with Project(root) as project:
        pipeline_runs.start(project.metadata.database, "f" * 32, config_hash="x",
                            trigger="manual", reason=None)  # fmt: skip
    # NTP or a resumed virtual machine steps the clock forward: every epoch start psutil
    # derives from the boot time now lies after the pipeline run's start.
    stepped = psutil.boot_time() + 3600
    monkeypatch.setattr(psutil, "boot_time", lambda: stepped)
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: stepped)
    with Project(root) as project:  # opening the store reaps only the dead
        assert pipeline_runs.get(project.metadata.database, "f" * 8).status == "running"
        with project.metadata.database.write() as conn:
            conn.execute(table.update().where(table.c.id == "f" * 32).values(status="cancelled"))


def test_the_cli_lists_and_shows_pipeline_runs(ran: Any) -> None:
    root, first, _ = ran
    run = [sys.executable, "-m", "keel.cli", "runs"]
    listed = subprocess.run([*run, "list", "--pipeline", "--format", "json"], cwd=root,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert first["pipeline_run"] in [r["id"] for r in json.loads(listed.stdout)["pipeline_runs"]]
    shown = subprocess.run([*run, "show", first["pipeline_run"][:12]], cwd=root,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert f"pipeline run {first['pipeline_run']}: succeeded" in shown.stdout
    assert "register" in shown.stdout and "peak MB" in shown.stdout


def test_a_cancelled_run_reads_back_cancelled_in_the_api_and_the_cli(ran: Any) -> None:
    root, _, _ = ran
    cancelled, old_form = "c" * 32, "e" * 32
    with Project(root) as project:
        database = project.metadata.database
        pipeline_runs.start(database, cancelled, config_hash="x", trigger="manual", reason=None)
        asked = pipeline_runs.request_cancel(database, cancelled[:10])
        assert asked.status == "cancel_requested"
        assert pipeline_runs.status_of(database, cancelled) == "cancel_requested"
        step = pipeline_runs.StepOutcome("train", "", "cancelled", "miss", 1.5)
        pipeline_runs.finish(database, cancelled, status="cancelled", steps=[step],
                             error="cancelled with keel runs cancel")  # fmt: skip
        with database.read() as conn:  # a real status, not failed + an error prefix
            stored = conn.execute(sa.select(table.c.status).where(table.c.id == cancelled))
            assert stored.scalar_one() == "cancelled"
        # a row written before migration 0010 still reads as the status it meant
        pipeline_runs.start(database, old_form, config_hash="x", trigger="manual", reason=None)
        with database.write() as conn:
            conn.execute(table.update().where(table.c.id == old_form).values(
                status="failed", error="cancelled: interrupted (Ctrl-C)"
            ))  # fmt: skip
    record = api.get_pipeline_run(cancelled, project=root)
    assert (record["status"], record["error"]) == ("cancelled", "cancelled with keel runs cancel")
    assert record["steps"][0]["status"] == "cancelled"
    old = api.get_pipeline_run(old_form, project=root)
    assert (old["status"], old["error"]) == ("cancelled", "interrupted (Ctrl-C)")
    run = [sys.executable, "-m", "keel.cli", "runs"]
    shown = subprocess.run([*run, "show", cancelled[:12]], cwd=root, capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert f"pipeline run {cancelled}: cancelled" in shown.stdout
    assert f"keel run --resume {cancelled[:12]}" in shown.stdout
    listed = subprocess.run([*run, "list", "--pipeline"], cwd=root, capture_output=True,
                            text=True, check=True)  # fmt: skip
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert [cancelled[:12], "manual", "cancelled"] in [r[:3] for r in rows]
    assert [old_form[:12], "manual", "cancelled"] in [r[:3] for r in rows]


def test_a_cached_rerun_imports_no_step_module_nor_numpy(ran: Any) -> None:
    """Every step hits: deciding so reads the steps' source from their files (the key is the
    one importing them would give) and loads neither the steps' modules nor NumPy or Arrow."""
    root, _, _ = ran
    code = (
        "import sys\nsys.argv = ['keel', 'run', '--format', 'json']\nfrom keel.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = ['numpy', 'pyarrow', 'lightgbm', 'keel.pipeline.steps', "
        "'keel.pipeline.evaluate_step', 'keel.train', 'keel.features.pipeline']\n"
        "print([m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, check=True)  # fmt: skip
    summary = json.loads(done.stdout)
    assert {s["status"] for s in summary["steps"]} == {"cached"}
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
