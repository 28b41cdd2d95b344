"""`keel doctor` on a real project (Palmer penguins, one `keel run`): each check passes on a
healthy project and fails, with its fix, on the damage it exists to find."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from keel.project import Project
from keel.store.leases import Owner

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
CHECKS = ["config", "database", "runs", "artifacts", "leftovers", "schema", "scheduler", "extras"]

pytestmark = pytest.mark.skipif(not PENGUINS.exists(), reason="the shared datasets are not here")

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


def keel_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)  # fmt: skip


def make_project(root: Path) -> Path:
    """A small penguins project (keel.yaml and its data), not run yet."""
    (root / "data").mkdir(parents=True)
    shutil.copyfile(PENGUINS, root / "data" / "penguins.csv")
    (root / "keel.yaml").write_text(KEEL_YAML)
    return root


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("doctor") / "penguins")
    result = keel_cli("run", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture
def project(ran: Path, tmp_path: Path) -> Path:
    """A copy of the project after one successful run."""
    return Path(shutil.copytree(ran, tmp_path / "penguins"))


def doctor(project: Path, *args: str, code: int, env: dict[str, str] | None = None) -> Any:
    """`keel doctor --format json`'s checks by name, asserting the exit code."""
    result = keel_cli("doctor", "--format", "json", *args, cwd=project, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is (code == 0)
    assert [c["name"] for c in report["checks"]] == CHECKS
    return {c["name"]: c for c in report["checks"]}


def statuses(checks: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def blob(project: Path, sha: str) -> Path:
    return project / ".keel" / "artifacts" / "sha256" / sha[:2] / sha


def test_a_healthy_project_passes_every_check(project: Path) -> None:
    result = keel_cli("doctor", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in CHECKS:
        assert any(line.split()[1:2] == [name] for line in lines), (name, result.stdout)
    assert "all checks passed" in result.stdout
    # 80 columns: messages wrap under themselves; only a path or URL may run past the edge
    assert all(len(re.sub(r"\S*/\S*", "/", line)) <= 80 for line in lines), result.stdout
    assert any(line.startswith(" " * 17) for line in lines), result.stdout  # one wrapped
    checks = doctor(project, code=0)
    assert statuses(checks) == {
        **dict.fromkeys(CHECKS, "ok"),
        "scheduler": "info",
        "extras": "info",
    }
    assert checks["artifacts"]["details"]["missing"] == []
    assert checks["artifacts"]["details"]["verified"] >= 10


def test_an_invalid_keel_yaml_fails_and_skips_the_rest(project: Path) -> None:
    config = project / "keel.yaml"
    config.write_text(config.read_text().replace("target:", "targt:"))
    result = keel_cli("doctor", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "FAIL" in result.stdout and "targt" in result.stdout
    checks = doctor(project, code=1)
    assert statuses(checks) == {"config": "fail", **dict.fromkeys(CHECKS[1:], "skip")}


def test_an_unreachable_database_fails_with_the_url(project: Path) -> None:
    env = {**os.environ, "KEEL_DB_URL": "postgresql+psycopg://keel:secret@127.0.0.1:1/keel"}
    checks = doctor(project, code=1, env=env)
    assert checks["database"]["status"] == "fail"
    assert "127.0.0.1:1" in checks["database"]["message"]
    assert "secret" not in checks["database"]["message"]
    skipped = ("runs", "artifacts", "leftovers", "schema", "scheduler")
    assert {checks[n]["status"] for n in skipped} == {"skip"}


def test_missing_and_corrupt_artifacts_are_named(project: Path) -> None:
    with Project(project) as proj:
        run = next(r for r in proj.metadata.list_runs() if r.step == "train")
        model = run.outputs["model"]
        statistics = next(r for r in proj.metadata.list_runs() if r.step == "profile")
        stats = statistics.outputs["statistics"]
    blob(project, model).unlink()
    blob(project, stats).write_bytes(b'{"tampered": true}')
    checks = doctor(project, code=1)
    artifacts = checks["artifacts"]
    assert artifacts["status"] == "fail"
    assert artifacts["details"]["missing"] == [model]
    assert artifacts["details"]["corrupt"] == [stats]
    assert model[:12] in artifacts["message"] and stats[:12] in artifacts["message"]
    assert "keel run --no-cache" in artifacts["fix"]


def test_a_killed_run_is_marked_failed_when_doctor_opens_the_store(project: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from keel.project import Project

        with Project(sys.argv[1]) as project:
            run = project.metadata.start_run(
                "train", cache_key="k", config_hash="c", code_version="v"
            )
            print(run.id, flush=True)
            sys.stdin.read()
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(project)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    run_id = child.stdout.readline().strip()
    child.kill()
    assert child.wait(timeout=60) == -signal.SIGKILL
    child.stdout.close()
    child.stdin.close()
    checks = doctor(project, code=0)
    runs = checks["runs"]
    assert runs["status"] == "ok"
    assert [r["run"] for r in runs["details"]["reaped"]] == [run_id]
    assert f"process {child.pid}" in runs["details"]["reaped"][0]["error"]
    assert "marked 1 run(s) of dead processes failed" in runs["message"]
    with Project(project) as proj:
        failed = proj.metadata.get_run(run_id)
        assert failed.status == "failed" and "keel doctor" in (failed.error or "")


def test_a_run_whose_owner_cannot_be_checked_is_stuck_until_fix(project: Path) -> None:
    with Project(project) as proj:
        run = proj.metadata.start_run(
            "train",
            cache_key="k",
            config_hash="c",
            code_version="v",
            owner=Owner("another-host.example", 99, 1.0),
        )
    checks = doctor(project, code=1)
    assert checks["runs"]["status"] == "fail"
    assert checks["runs"]["details"]["stuck"] == [run.id]
    assert "another-host.example" in checks["runs"]["message"]
    assert "keel doctor --fix" in checks["runs"]["fix"]
    fixed = doctor(project, "--fix", code=0)
    assert [r["run"] for r in fixed["runs"]["details"]["reaped"]] == [run.id]
    doctor(project, code=0)


def test_a_live_run_is_in_progress_and_keeps_its_unrecorded_outputs(project: Path) -> None:
    with Project(project) as proj:
        run = proj.metadata.start_run("train", cache_key="k", config_hash="c", code_version="v")
        output = proj.artifacts.put(b"a model being written", kind="model")
    checks = doctor(project, "--fix", "--min-age", "0", code=0)
    assert checks["runs"]["details"]["in_progress"] == [run.id]
    assert "1 in progress" in checks["runs"]["message"]
    assert checks["leftovers"]["details"]["dangling"] == []
    assert blob(project, output.sha256).exists()


def test_leftovers_of_interrupted_runs_are_reported_then_removed(project: Path) -> None:
    with Project(project) as proj:
        dangling = proj.artifacts.put(b"a model a killed run wrote", kind="model").sha256
    staging = project / ".keel" / "artifacts" / "sha256"
    temp = staging / ".tmp-0123456789abcdef"
    temp.write_bytes(b"half a snapshot")
    schema_temp = project / f".schema.yaml.{os.getpid()}.0badf00d.tmp"
    schema_temp.write_text("columns: {}")
    fresh = doctor(project, code=0)  # all of it younger than a minute: a write in progress?
    assert fresh["leftovers"]["status"] == "ok" and "kept" in fresh["leftovers"]["message"]
    then = time.time() - 600
    for path in (blob(project, dangling), temp, schema_temp):
        os.utime(path, (then, then))
    checks = doctor(project, code=1)
    leftovers = checks["leftovers"]
    assert leftovers["status"] == "fail" and leftovers["fix"] == "`keel doctor --fix` removes them"
    assert leftovers["details"]["dangling"] == [dangling]
    assert sorted(leftovers["details"]["temp_files"]) == sorted([str(temp), str(schema_temp)])
    fixed = doctor(project, "--fix", code=0)
    assert fixed["leftovers"]["message"].startswith("removed 1 blob(s)")
    assert not blob(project, dangling).exists() and not temp.exists()
    assert not schema_temp.exists()
    assert statuses(doctor(project, code=0))["leftovers"] == "ok"


def test_a_schema_out_of_step_with_the_statistics_fails(project: Path) -> None:
    schema = project / "schema.yaml"
    text = schema.read_text()
    assert "  island:" in text
    schema.write_text(text.replace("  island:", "  isle:"))
    checks = doctor(project, code=1)
    assert checks["schema"]["status"] == "fail"
    assert "island" in checks["schema"]["message"]
    assert "keel schema infer --update" in checks["schema"]["fix"]
    schema.unlink()
    assert "missing" in doctor(project, code=1)["schema"]["message"]


def test_active_schedules_need_a_scheduler_holding_the_lease(project: Path) -> None:
    from keel.store.schedules import ScheduleStore

    with Project(project) as proj, ScheduleStore(proj.db_url) as store:
        store.add_schedule("nightly", kind="cron", cron="0 3 * * *")
    checks = doctor(project, code=1)
    assert checks["scheduler"]["status"] == "fail"
    assert (
        "nightly" in checks["scheduler"]["message"]
        and "never taken" in checks["scheduler"]["message"]
    )
    assert "keel scheduler" in checks["scheduler"]["fix"]
    with Project(project) as proj, ScheduleStore(proj.db_url) as store:
        assert store.acquire_lease("web-1:4242", seconds=600) is not None
    checks = doctor(project, code=0)
    assert checks["scheduler"]["status"] == "ok" and "web-1:4242" in checks["scheduler"]["message"]
    with Project(project) as proj, ScheduleStore(proj.db_url) as store:
        store.set_paused("nightly", True)
        store.release_lease("web-1:4242")
    assert doctor(project, code=0)["scheduler"]["status"] == "info"


def test_an_extra_the_config_uses_must_import(project: Path, tmp_path: Path) -> None:
    config = project / "keel.yaml"
    config.write_text(config.read_text().replace("flavor: lightgbm", "flavor: xgboost")
                      .replace("  params: {n_estimators: 20, num_leaves: 7}\n", ""))  # fmt: skip
    assert doctor(project, code=0)["extras"]["status"] == "ok"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "xgboost.py").write_text("raise ImportError('libxgboost.so: cannot open')\n")
    path = os.pathsep.join([str(broken), *sys.path])
    checks = doctor(project, code=1, env={**os.environ, "PYTHONPATH": path})
    extras = checks["extras"]
    assert extras["status"] == "fail"
    assert "xgboost (model flavor xgboost; pip install 'keel[xgboost]'" in extras["message"]
    assert extras["details"]["needed"] == {"xgboost": "model flavor xgboost"}


def test_no_project_is_a_failed_config_check(tmp_path: Path) -> None:
    result = keel_cli("doctor", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "keel init" in result.stdout
