"""The no-op rerun: a ``keel run`` with nothing changed is decided from the last all-cached
run's manifest without SQLAlchemy, writes the rows the normal path writes and prints what it
prints; anything that may change a step's cache decision sends it down the normal path."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import keel
from keel.pipeline.noop import MANIFEST, attempt
from keel.project import Project
from keel.store import pipeline_runs

#: `keel run` as the console script runs it; stderr's last line says whether SQLAlchemy was
#: imported (the normal path always imports it; the fast path never does).
DRIVER = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "'\\nSQLALCHEMY=%s\\n' % ('sqlalchemy' in sys.modules)))\n"
    "sys.argv = ['keel', *sys.argv[1:]]\n"
    "from keel.cli import main\n"
    "main()\n"
)
PROBE = (
    "import json\n"
    "from keel.pipeline.noop import attempt\n"
    "found = attempt(['run'])\n"
    "print(json.dumps({'fast': found.summary is not None, 'why': found.fallback}))\n"
)
STEPS = """
import keel
from noop_helpers import label


@keel.step(inputs={"evaluation": "evaluation"}, outputs={"note": "report"})
def note(ctx, evaluation):
    return {"note": ctx.put_json({"label": label()}, kind="report")}
"""
HELPERS = 'def label():\n    return "v1"\n'


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, bool]:
    """Run ``keel ARGS`` in ``root``: its stdout, and whether it took the fast path."""
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    imported = done.stderr.strip().splitlines()[-1]
    return done.stdout, imported == "SQLALCHEMY=False"


def probe(root: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, timeout=120,
        env=env, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def ready(root: Path, env: dict[str, str] | None = None) -> str:
    """A manifest from a normal all-cached run (files older than the racy window first);
    returns that run's output. A few tries: a step that re-executed (Keel's source edited
    meanwhile, say) leaves none, and the next run is all cached."""
    for _ in range(3):
        time.sleep(2.1)
        (root / MANIFEST).unlink(missing_ok=True)
        text, fast = cli(root, "run", env=env)
        assert not fast
        if (root / MANIFEST).is_file():
            return text
    raise AssertionError(f"no manifest after three all-cached runs:\n{text}")


def statuses(text: str) -> dict[str, str]:
    found = re.findall(r"^ (\w+)\s+│ (ran|cached)\s+│", text, flags=re.MULTILINE)
    return dict(found)


def masked(text: str) -> str:
    """Output without what differs between two runs: ids and seconds."""
    text = re.sub(r"[0-9a-f]{12,32}", "ID", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[T ][\d:.+]+", "TIME", text)
    text = re.sub(r"\d+\.\d+ s\b", "SECONDS", text)
    text = re.sub(r"(?m)^(\s*seconds:) \S+$", r"\1 S", text)  # a run's duration
    text = re.sub(r"\d+\.\d{2,4}(\s+-\s+-)", r"S\1", text)  # a step's seconds, no CPU/memory
    return re.sub(r"│ \d+\.\d\d(\s+)│", r"│ S\1│", text)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained Adult project (small model) with a custom step calling a project helper."""
    root = keel.init(tmp_path_factory.mktemp("noop") / "adult", example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 40, "learning_rate": 0.2})
    config["pipeline"] = {"steps": [{"function": "noop_steps:note", "after": ["evaluate"]}]}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "noop_steps.py").write_text(STEPS, encoding="utf-8")
    (root / "noop_helpers.py").write_text(HELPERS, encoding="utf-8")
    cli(root, "run")
    return root


def _pipeline_rows(db: Path, pipeline_run: str) -> dict[str, Any]:
    """A pipeline run's rows and its step runs' rows, without ids, times and the pid."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    found = conn.execute("SELECT * FROM pipeline_runs WHERE id = ?", (pipeline_run,))
    row = dict(found.fetchone())
    steps = json.loads(row.pop("steps"))
    for key in ("id", "started_at", "ended_at", "owner_pid", "owner_started_at"):
        row.pop(key)
    assert row["owner_boot_id"] == _boot_id()
    runs = []
    for step in steps:
        run_id = step.pop("run_id")
        step.pop("seconds")
        run = dict(conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
        for key in ("id", "started_at", "ended_at", "duration_seconds", "owner_pid",
                    "owner_started_at"):  # fmt: skip
            run.pop(key)
        assert run["owner_boot_id"] == _boot_id()
        summary = json.loads(run.pop("summary"))
        assert summary["tags"].pop("pipeline_run") == pipeline_run
        tables = {}
        for table in ("lineage", "run_params", "run_metrics", "run_metric_history", "run_tags"):
            rows = conn.execute(f"SELECT * FROM {table} WHERE run_id = ?", (run_id,)).fetchall()
            tables[table] = sorted(
                tuple(v if v != pipeline_run else "PIPELINE" for k, v in dict(r).items()
                      if k != "run_id")
                for r in rows
            )  # fmt: skip
        runs.append({"run": run, "summary": summary, "tables": tables})
    conn.close()
    return {"pipeline_run": row, "steps": steps, "runs": runs}


def _latest(root: Path) -> tuple[str, list[str]]:
    with Project(root) as proj:
        (last,) = pipeline_runs.recent(proj.metadata.database, limit=1)
    return last.id, [s["run_id"] for s in last.steps]


def test_the_fast_path_writes_and_prints_what_the_normal_path_does(project: Path) -> None:
    normal_text = ready(project)
    normal_id, normal_steps = _latest(project)
    fast_text, fast = cli(project, "run")
    assert fast, probe(project)["why"]
    fast_id, fast_steps = _latest(project)
    assert fast_id != normal_id and set(fast_steps).isdisjoint(normal_steps)
    assert set(statuses(fast_text).values()) == {"cached"} and "note" in statuses(fast_text)
    assert masked(fast_text) == masked(normal_text)
    db = project / ".keel" / "keel.db"
    assert _pipeline_rows(db, fast_id) == _pipeline_rows(db, normal_id)
    for normal_ref, fast_ref in [(normal_id, fast_id), (normal_steps[-1], fast_steps[-1])]:
        shown = [
            masked(cli(project, "runs", "show", ref[:12])[0]) for ref in (normal_ref, fast_ref)
        ]
        assert shown[0] == shown[1]
    # and again: the manifest still holds after a fast run
    assert cli(project, "run")[1]


def test_the_fast_path_answers_format_json_as_the_normal_path_does(project: Path) -> None:
    ready(project)
    (project / MANIFEST).unlink()
    normal, fast = cli(project, "run", "--format", "json")
    assert not fast
    again, fast = cli(project, "run", "-f", "json")
    assert fast, probe(project)["why"]
    assert _comparable(json.loads(again)) == _comparable(json.loads(normal))


def _comparable(summary: dict[str, Any]) -> dict[str, Any]:
    summary.pop("pipeline_run")
    for step in summary["steps"]:
        step.pop("run_id"), step.pop("seconds")
    return summary


def test_flags_take_the_normal_path(project: Path) -> None:
    for args in (["run", "--no-cache"], ["run", "--explain"], ["run", "--project", "."],
                 ["run", "--resume", "abc"], ["runs", "list"]):  # fmt: skip
        assert attempt(args, project).summary is None
        assert "without options" in attempt(args, project).fallback
    ready(project)
    text, fast = cli(project, "run", "--explain")
    assert not fast and "train: hit" in text


def test_an_edited_keel_yaml_takes_the_normal_path(project: Path) -> None:
    ready(project)
    config = project / "keel.yaml"
    original = config.read_text()
    config.write_text(original + "# a comment: the config is the same\n")
    try:
        assert "keel.yaml changed" in probe(project)["why"]
        text, fast = cli(project, "run")
        assert not fast and set(statuses(text).values()) == {"cached"}
    finally:
        config.write_text(original)


def test_a_touched_or_changed_data_file_takes_the_normal_path(project: Path) -> None:
    ready(project)
    data = project / "data" / "adult.test"
    os.utime(data)  # touched: the same bytes
    assert "adult.test changed" in probe(project)["why"]
    text, fast = cli(project, "run")
    assert not fast and set(statuses(text).values()) == {"cached"}
    ready(project)
    original = data.read_bytes()
    lines = original.splitlines(keepends=True)
    data.write_bytes(b"".join(lines[:-100]))  # changed: 100 test rows fewer
    try:
        text, fast = cli(project, "run")
        assert not fast
        ran = statuses(text)
        assert ran["ingest_test"] == ran["evaluate"] == "ran" and ran["train"] == "cached"
    finally:
        data.write_bytes(original)


def test_an_edited_helper_of_a_custom_step_takes_the_normal_path(project: Path) -> None:
    ready(project)
    helper = project / "noop_helpers.py"
    helper.write_text(HELPERS.replace("v1", "v2"))
    try:
        text, fast = cli(project, "run")
        assert not fast and statuses(text)["note"] == "ran" and statuses(text)["train"] == "cached"
    finally:
        helper.write_text(HELPERS)


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_a_damaged_model_file_takes_the_normal_path(project: Path, damage: str) -> None:
    ready(project)
    manifest = json.loads((project / MANIFEST).read_text())
    (train,) = [s for s in manifest["steps"] if s["step"] == "train"]
    blob = Path(manifest["artifacts"][train["outputs"]["model"]])
    original = blob.read_bytes()
    if damage == "corrupt":
        blob.write_bytes(original + b"\0")
    else:
        blob.unlink()
    try:
        assert "missing or corrupt" in probe(project)["why"]
        text, fast = cli(project, "run")
        assert not fast and statuses(text)["train"] == "ran"
        assert statuses(text)["register"] == "cached"  # the same model bytes again
        assert "model adult version 1:" in text
    finally:
        # the artifact store keeps an existing blob as it is, so the retrained model's put
        # does not repair a corrupt one: put the original bytes back for the next tests
        blob.write_bytes(original)


def test_a_changed_package_takes_the_normal_path(project: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site),
               os.environ.get("PYTHONPATH")])))  # fmt: skip
    ready(project, env)
    assert probe(project, env)["fast"]
    (site / "somepackage-2.0.dist-info").mkdir()  # as pip install leaves it
    assert f"{site} changed" in probe(project, env)["why"]
    text, fast = cli(project, "run", env=env)
    assert not fast and set(statuses(text).values()) == {"cached"}


def test_a_run_in_progress_takes_the_normal_path(project: Path) -> None:
    ready(project)
    with Project(project) as proj:
        database = proj.metadata.database
        pipeline_runs.start(database, "f" * 32, config_hash="c", trigger="manual", reason=None)
        try:
            assert "in progress" in probe(project)["why"]
            text, fast = cli(project, "run")
            assert not fast and set(statuses(text).values()) == {"cached"}
        finally:
            pipeline_runs.finish(database, "f" * 32, status="cancelled", steps=[], error="test")


def test_a_pending_schema_migration_takes_the_normal_path(project: Path) -> None:
    ready(project)
    conn = sqlite3.connect(project / ".keel" / "keel.db")
    (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    conn.execute("UPDATE alembic_version SET version_num = '0009'")
    conn.commit()
    try:
        assert "schema revision" in probe(project)["why"]
    finally:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        conn.commit()
        conn.close()
    assert probe(project)["fast"]


def _boot_id() -> str | None:
    """What a run records as its owner's boot (None where the system has none)."""
    from keel.store.processes import this_boot

    return this_boot()
