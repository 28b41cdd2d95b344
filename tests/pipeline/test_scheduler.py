"""`keel scheduler` as real processes on one database: each tick runs exactly once, a leader
killed with SIGKILL is replaced within the lease, SIGTERM stops gracefully; `keel schedule`
commands and their errors. SQLite always, PostgreSQL when KEEL_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from keel.store.schedules import ScheduleStore
from keel.testing import postgres_schema

REPO = Path(__file__).resolve().parents[2]
PENGUINS = REPO.parent / "shared" / "data" / "palmer-penguins" / "penguins.csv"
POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=[
    pytest.mark.postgres,
    pytest.mark.skipif(POSTGRES_URL is None, reason="set KEEL_TEST_POSTGRES_URL"),
])]  # fmt: skip
LEASE_S = 3.0
POLL_S = 0.25
T = TypeVar("T")


def make_tiny_project(root: Path, rows: int = 150) -> Path:
    """A penguins project (a slice of the file, 5 trees) whose pipeline runs in about a second."""
    from keel.commands.init import init_from_file

    if not PENGUINS.exists():
        pytest.skip(f"{PENGUINS} is not here")
    root.mkdir(parents=True)
    source = root.parent / f"{root.name}-penguins.csv"
    header, *lines = PENGUINS.read_text().splitlines(keepends=True)
    step = max(1, len(lines) // rows)  # evenly spaced: the file is sorted by species
    source.write_text(header + "".join(lines[::step][:rows]))
    init_from_file(root, source, "species", copy=True, force=False)
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"] = {"n_estimators": 5}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("template") / "penguins")


@pytest.fixture
def tiny(tiny_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "penguins"
    shutil.copytree(tiny_template, root, ignore=shutil.ignore_patterns(".keel"))
    return root


@contextlib.contextmanager
def database(backend: str, root: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The metadata URL and the environment `keel` processes need to use it."""
    env = {k: v for k, v in os.environ.items() if k != "KEEL_DB_URL"}
    if backend == "sqlite":
        yield f"sqlite:///{root / '.keel' / 'keel.db'}", env
        return
    assert POSTGRES_URL is not None
    with postgres_schema(POSTGRES_URL) as url:
        yield url, {**env, "KEEL_DB_URL": url}


def keel(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args], cwd=cwd, env=env, text=True,
        capture_output=True, timeout=120,
    )  # fmt: skip


def start_scheduler(
    root: Path, name: str, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "keel.cli", "scheduler", "--name", name,
               "--lease", str(LEASE_S), "--poll", str(POLL_S)]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT)


def wait_for(check: Callable[[], T], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / every) + 2):
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            break
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def stop(process: subprocess.Popen[bytes], *, timeout: float = 20) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_schedulers_run_each_tick_once_and_hand_over_when_the_leader_dies(
    backend: str, tiny: Path, tmp_path: Path
) -> None:
    with database(backend, tiny) as (url, env):
        added = keel("schedule", "add", "often", "--every", "2s", cwd=tiny, env=env)
        assert added.returncode == 0, added.stderr
        processes = {n: start_scheduler(tiny, n, env, tmp_path / f"{n}.log") for n in ("a", "b")}
        try:
            with ScheduleStore(url) as store:
                _check_handover(store, processes)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
        logs = {n: (tmp_path / f"{n}.log").read_text() for n in processes}
        assert "Traceback" not in "".join(logs.values()), logs
        with ScheduleStore(url) as store:
            _check_each_tick_ran_once(store, url)


def _check_handover(store: ScheduleStore, processes: dict[str, subprocess.Popen[bytes]]) -> None:
    def succeeded(owner: str | None = None) -> list[Any]:
        ticks = store.list_ticks("often", limit=1000)
        return [t for t in ticks if t.status == "succeeded" and owner in (None, t.owner)]

    wait_for(lambda: len(succeeded()) >= 3, timeout=90, what="three ticks")
    lease = store.get_lease()
    assert lease is not None and lease.owner in processes
    leader, follower = lease.owner, next(n for n in processes if n != lease.owner)
    assert processes[follower].poll() is None
    processes[leader].kill()  # SIGKILL: no chance to release the lease
    killed = time.monotonic()
    processes[leader].wait(timeout=10)

    def taken_over() -> bool:
        current = store.get_lease()
        return current is not None and current.owner == follower

    wait_for(taken_over, timeout=LEASE_S + 5, what=f"{follower} to take the lease", every=0.02)
    handover = time.monotonic() - killed
    assert handover <= LEASE_S + POLL_S + 1.0, f"handover took {handover:.2f}s"
    wait_for(lambda: len(succeeded(follower)) >= 2, timeout=60, what="ticks by the new leader")
    # SIGTERM: the survivor finishes or cancels its tick, releases the lease and exits 0
    assert stop(processes[follower]) == 0
    released = store.get_lease()
    assert released is not None and not released.alive(datetime.now(UTC))


def _check_each_tick_ran_once(store: ScheduleStore, url: str) -> None:
    ticks = sorted(store.list_ticks("often", limit=1000), key=lambda t: t.tick_at)
    times = [t.tick_at for t in ticks]
    assert len(set(times)) == len(times)
    assert all(t.timestamp() % 2 == 0 for t in times)
    # Every 2-second slot from the schedule's creation to the last tick is accounted for exactly
    # once: run, or stood for by a later run (catch-up latest) while a run took longer than 2 s,
    # or while no scheduler led (starting up, the handover).
    created = store.get_schedule("often").created_at.timestamp()
    slots = int(times[-1].timestamp() // 2 - created // 2)
    assert sum(1 + t.missed for t in ticks) == slots
    statuses = [t.status for t in ticks]
    # the tick the killed leader was running (if any) is failed by its successor
    assert statuses.count("failed") <= 1 and set(statuses) <= {"succeeded", "failed", "cancelled"}
    for tick in ticks:
        if tick.status == "failed":
            assert tick.error and "lease expired" in tick.error
    ran = [t for t in ticks if t.status == "succeeded"]
    assert all(t.summary and t.overhead_ms is not None for t in ran)
    assert len({t.owner for t in ran}) == 2
    first_step = next(iter(ran[0].summary["steps"]))  # type: ignore[index]
    run_ids = [t.summary["step_runs"][first_step] for t in ran]  # type: ignore[index]
    assert len(set(run_ids)) == len(run_ids)
    # and the pipeline ran once per tick (plus at most the tick the SIGKILL interrupted)
    from keel.store.metadata import MetadataStore

    with MetadataStore(url) as metadata:
        executions = len(metadata.list_runs(first_step, limit=1000))
    assert (
        len(ran) <= executions <= len(ran) + statuses.count("failed") + statuses.count("cancelled")
    )


@pytest.fixture
def cli(tiny: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`keel ...` through its real entry point, in this process (faster than a subprocess):
    returns (exit code, stdout, stderr)."""
    from keel.cli import main

    monkeypatch.chdir(tiny)
    monkeypatch.delenv("KEEL_DB_URL", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["keel", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        code = exited.value.code
        return (code if isinstance(code, int) else 0), captured.out, " ".join(captured.err.split())

    return run


def test_schedule_commands_list_pause_resume_remove(cli: Any) -> None:
    assert cli("schedule", "add", "nightly", "--cron", "0 3 * * *")[0] == 0
    code, made_json, _ = cli("schedule", "add", "berlin", "--cron", "30 6 * * 1-5", "--timezone",
                             "Europe/Berlin", "--catchup", "all", "-f", "json")  # fmt: skip
    assert code == 0
    made = json.loads(made_json)
    assert (made["timezone"], made["catchup"], made["kind"]) == ("Europe/Berlin", "all", "cron")
    assert datetime.fromisoformat(made["next_due"]) > datetime.now(UTC)
    assert cli("schedule", "pause", "nightly")[0] == 0
    listed = json.loads(cli("schedule", "list", "-f", "json")[1])
    state = {s["name"]: s["paused"] for s in listed["schedules"]}
    assert state == {"berlin": False, "nightly": True} and listed["leader"] is None
    assert next(s for s in listed["schedules"] if s["name"] == "nightly")["next_due"] is None
    text = cli("schedule", "list")[1]
    assert "paused" in text and "no scheduler is leading" in text
    assert cli("schedule", "resume", "nightly")[0] == 0
    shown = json.loads(cli("schedule", "show", "nightly", "-f", "json")[1])
    assert shown["paused"] is False and shown["ticks"] == []
    assert cli("schedule", "remove", "nightly")[0] == 0
    listed = json.loads(cli("schedule", "list", "-f", "json")[1])
    assert [s["name"] for s in listed["schedules"]] == ["berlin"]
    code, _, err = cli("schedule", "add", "berlin", "--every", "1m")
    assert code == 1 and "a schedule named 'berlin' exists already" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "x", "--cron", "0 3 * *"], "invalid cron expression '0 3 * *': 4 fields"),
        (["add", "x", "--on", "tuesday"], "unknown event 'tuesday' for --on"),
        (["add", "x", "--every", "2x"], "invalid period '2x' for --every"),
        (["add", "x", "--cron", "0 3 * * *", "--timezone", "Mars/Base"], "'Mars/Base'"),
        (["add", "x", "--every", "2s", "--catchup", "some"], "unknown catch-up policy 'some'"),
        (["add", "x"], "give exactly one trigger"),
        (["add", "x", "--every", "2s", "--on", "alert"], "(got --every and --on)"),
        (["pause", "nope"], "no schedule named 'nope'"),
        (["resume", "nope"], "no schedule named 'nope'"),
        (["remove", "nope"], "no schedule named 'nope'"),
        (["show", "nope"], "no schedule named 'nope'"),
    ],
)
def test_bad_input_exits_2_naming_the_value(cli: Any, args: list[str], message: str) -> None:
    code, _, err = cli("schedule", *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_input_in_a_real_process(tiny: Path) -> None:
    done = keel("schedule", "add", "x", "--cron", "61 * * * *", cwd=tiny)
    assert done.returncode == 2
    assert "invalid cron expression '61 * * * *': Bad minute" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    done = keel("scheduler", "--lease", "2", "--poll", "5", cwd=tiny)
    assert done.returncode == 2 and "--poll 5 is more than half of --lease 2" in done.stderr


def test_new_data_file_triggers_a_real_pipeline_run(tiny: Path, tmp_path: Path) -> None:
    with database("sqlite", tiny) as (url, env):
        added = keel("schedule", "add", "fresh", "--on", "new_data", cwd=tiny, env=env)
        assert added.returncode == 0, added.stderr
        process = start_scheduler(tiny, "solo", env, tmp_path / "solo.log")
        try:
            with ScheduleStore(url) as store:
                wait_for(lambda: (lease := store.get_lease()) and lease.owner == "solo",
                         timeout=30, what="leadership")  # fmt: skip
                data = next((tiny / "data").glob("*.csv"))
                rows = data.read_text().splitlines(keepends=True)
                with data.open("a") as handle:  # the rows again: more data, same classes
                    handle.writelines(rows[1:])

                def finished() -> list[Any]:
                    return [t for t in store.list_ticks("fresh") if t.status != "running"]

                ticks = wait_for(finished, timeout=90, what="the new-data tick to finish")
            assert stop(process) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    log = (tmp_path / "solo.log").read_text()
    assert len(ticks) == 1, log
    tick = ticks[0]
    assert tick.status == "succeeded", (tick.error, log)
    assert tick.trigger == "event" and "new data in data.train" in tick.reason
    assert tick.pipeline_run_id  # the pipeline run the tick started, as keel.api.run names it
    assert tick.summary is not None and tick.summary["model"]["version"] == 1
    assert set(tick.summary["steps"].values()) == {"succeeded"}
