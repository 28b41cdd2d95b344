"""Run owners and leases: a run whose process died is marked failed the next time the store is
opened; a live one never is. The dead processes here are real ones, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from keel.errors import ConfigError, ConflictError
from keel.project import Project
from keel.store import MetadataStore
from keel.store.leases import Owner, RunningRun, keep_alive, mark_failed, this_host
from keel.testing import postgres_schema

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")
DEADLINE_SECONDS = 30.0

# A process that records a running run, says its id, then waits to be killed.
_OWNER_SCRIPT = textwrap.dedent(
    """
    import sys
    from keel.store import MetadataStore

    store = MetadataStore(sys.argv[1])
    run = store.start_run("train", cache_key="k", config_hash="c", code_version="v")
    print(run.id, flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/keel.db"
        return
    if POSTGRES_URL is None:
        pytest.skip("set KEEL_TEST_POSTGRES_URL to run against PostgreSQL")
    with postgres_schema(POSTGRES_URL) as schema_url:
        yield schema_url


@pytest.fixture
def store(url: str) -> Iterator[MetadataStore]:
    with MetadataStore(url) as opened:
        yield opened


def start(
    store: MetadataStore, owner: Owner | None = None, lease_seconds: float | None = None
) -> str:
    run = store.start_run(
        "train",
        cache_key="k",
        config_hash="c",
        code_version="v",
        owner=owner,
        lease_seconds=lease_seconds,
    )
    return run.id


def running(store: MetadataStore, run_id: str) -> RunningRun:
    return next(r for r in store.running_runs() if r.run_id == run_id)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition()`` until it is true, failing after the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def owned_by_a_child(url: str) -> tuple[subprocess.Popen[str], str]:
    """A child process that started a run, and the run's id (once it is recorded)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    assert len(run_id) == 32, f"the child did not start a run (exit {child.poll()})"
    return child, run_id


def kill(child: subprocess.Popen[str]) -> None:
    """SIGKILL the child and prove it died of it."""
    child.kill()
    assert child.wait(timeout=DEADLINE_SECONDS) == -signal.SIGKILL
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


def test_start_run_records_this_process_as_owner(store: MetadataStore) -> None:
    run_id = start(store)
    found = running(store, run_id)
    assert found.owner == Owner.current()
    assert found.owner.host == this_host() and found.owner.pid == os.getpid()
    # Linux: seconds since boot (clock ticks) with the boot's id; elsewhere: epoch seconds.
    if found.owner.boot_id is None:
        assert found.owner.started_at == pytest.approx(psutil.Process().create_time())
    else:
        assert found.owner.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        assert found.owner.started_at is not None
        assert 0 <= found.owner.started_at <= uptime
    assert (found.liveness, found.lease_expires_at) == ("alive", None)
    assert store.reap_dead_runs() == []
    assert store.get_run(run_id).status == "running"


def test_a_killed_owner_is_marked_failed_with_who_and_when(url: str) -> None:
    child, run_id = owned_by_a_child(url)
    with MetadataStore(url) as store:
        assert running(store, run_id).liveness == "alive"
        kill(child)
        reaped = store.reap_dead_runs(reaper="the test")
        assert [r.run_id for r in reaped] == [run_id]
        run = store.get_run(run_id)
        assert run.status == "failed" and run.ended_at is not None
        assert run.error == reaped[0].error
        assert run.error is not None
        assert f"process {child.pid} on {this_host()} died while running step 'train'" in run.error
        assert "no process has that pid any more" in run.error
        assert "marked failed by the test at " in run.error
        assert store.reap_dead_runs() == []  # only once
        with pytest.raises(ConflictError):
            store.finish_run(run_id, status="succeeded")


def test_a_zombie_owner_is_dead(url: str) -> None:
    child, run_id = owned_by_a_child(url)
    os.kill(child.pid, signal.SIGKILL)  # not waited for yet: it stays a zombie
    wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, "a zombie")
    try:
        with MetadataStore(url) as store:
            [reaped] = store.reap_dead_runs()
            assert reaped.run_id == run_id and "zombie" in reaped.error
    finally:
        kill(child)


def test_a_reused_pid_does_not_pass_for_the_owner(store: MetadataStore) -> None:
    me = Owner.current()
    assert me.started_at is not None
    earlier = Owner(me.host, me.pid, me.started_at - 1, me.boot_id)  # same pid, 1 s earlier
    run_id = start(store, owner=earlier)
    [reaped] = store.reap_dead_runs()
    assert reaped.run_id == run_id
    assert "its pid now belongs to a later process" in reaped.error


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_stepped_clock_does_not_make_a_live_owner_dead(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = start(store)
    # NTP or a resumed virtual machine steps the clock: the boot time (and so every epoch
    # start psutil derives from it) moves, here by a week (more than this test process has
    # lived, however slow the suite). The owner is judged by its start in clock ticks since
    # boot, which does not move.
    stepped = psutil.boot_time() + 7 * 86400
    monkeypatch.setattr(psutil, "boot_time", lambda: stepped)
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: stepped)
    assert psutil.Process().create_time() > time.time() + 1800  # the epoch start did move
    found = running(store, run_id)
    assert (found.liveness, found.reason) == ("alive", "it is running")
    assert store.reap_dead_runs() == []


def test_an_owner_from_an_earlier_boot_is_dead(store: MetadataStore) -> None:
    me = Owner.current()
    if me.boot_id is None:
        pytest.skip("this system has no boot id")
    before_reboot = Owner(me.host, me.pid, me.started_at, "an-earlier-boot")
    run_id = start(store, owner=before_reboot)
    [reaped] = store.reap_dead_runs()
    assert reaped.run_id == run_id
    assert f"{me.host} has restarted since it started" in reaped.error


def test_an_owner_recorded_by_an_older_keel_is_judged_by_its_epoch_start(
    store: MetadataStore,
) -> None:
    epoch_start = psutil.Process().create_time()
    alive = start(store, owner=Owner(this_host(), os.getpid(), epoch_start))
    reused = start(store, owner=Owner(this_host(), os.getpid(), epoch_start - 3600))
    assert running(store, alive).liveness == "alive"
    [reaped] = store.reap_dead_runs()
    assert reaped.run_id == reused


def test_another_hosts_run_without_a_lease_is_unknown_and_kept(store: MetadataStore) -> None:
    run_id = start(store, owner=Owner("elsewhere.example", 4242, 1.0))
    found = running(store, run_id)
    assert found.liveness == "unknown" and "renews no lease" in found.reason
    assert store.reap_dead_runs() == []
    [reaped] = store.reap_dead_runs(include_unknown=True, reaper="keel doctor --fix")
    assert reaped.run_id == run_id
    assert "process 4242 on elsewhere.example was presumed dead" in reaped.error


def test_another_hosts_run_is_dead_when_its_lease_expires(store: MetadataStore) -> None:
    run_id = start(store, owner=Owner("elsewhere.example", 4242, 1.0), lease_seconds=60)
    assert running(store, run_id).liveness == "alive"
    assert store.reap_dead_runs() == []
    assert store.heartbeat(run_id, lease_seconds=0.05)
    wait_until(lambda: running(store, run_id).liveness == "expired", "the lease to expire")
    [reaped] = store.reap_dead_runs()
    assert reaped.run_id == run_id
    assert "stopped renewing its lease while running step 'train'" in reaped.error


def test_heartbeat_renews_only_running_runs(store: MetadataStore) -> None:
    run_id = start(store)
    assert store.heartbeat(run_id, lease_seconds=30)
    first = running(store, run_id).lease_expires_at
    assert first is not None
    assert store.heartbeat(run_id, lease_seconds=300)
    later = running(store, run_id).lease_expires_at
    assert later is not None and later > first
    store.finish_run(run_id, status="succeeded")
    assert not store.heartbeat(run_id)
    assert not store.heartbeat("0" * 32)
    with pytest.raises(ConfigError, match="lease_seconds must be positive"):
        store.heartbeat(run_id, lease_seconds=0)


def test_keep_alive_renews_in_the_background_and_notices_a_lost_run(
    store: MetadataStore,
) -> None:
    run_id = start(store)
    with keep_alive(store, run_id, interval=0.02, lease=5) as beat:
        first = running(store, run_id).lease_expires_at
        assert first is not None
        wait_until(lambda: (running(store, run_id).lease_expires_at or first) > first, "a renewal")
        assert not beat.lost
        store.finish_run(run_id, status="failed", error="stopped elsewhere")
        wait_until(lambda: beat.lost, "the heartbeat to notice")
    with (
        pytest.raises(ConfigError, match="interval < lease"),
        keep_alive(store, run_id, interval=10, lease=5),
    ):
        pass


def test_keep_alive_on_an_in_memory_store_does_not_share_its_connection() -> None:
    with MetadataStore("sqlite://") as store:
        run_id = start(store)
        with keep_alive(store, run_id, interval=0.01, lease=1) as beat:
            store.finish_run(run_id, status="succeeded")
        assert not beat.lost


def test_a_run_that_finished_meanwhile_is_left_alone(url: str) -> None:
    with MetadataStore(url) as store:
        run_id = start(store, owner=Owner(this_host(), 2**22 + 7, 1.0))  # no such pid
        stale = running(store, run_id)
        assert stale.liveness == "dead"
        store.finish_run(run_id, status="succeeded")
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                assert mark_failed(conn, [stale], reaper="late") == []
        finally:
            engine.dispose()
        assert store.get_run(run_id).status == "succeeded"


def test_runs_recorded_before_owners_existed_are_unknown(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keel.db"
    with MetadataStore(url) as store:
        run_id = start(store)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # what an upgraded database holds for an older Keel's run
        conn.execute(sa.text("UPDATE runs SET owner_host = NULL, owner_pid = NULL"))
    engine.dispose()
    with MetadataStore(url) as store:
        found = running(store, run_id)
        assert (found.owner, found.liveness) == (None, "unknown")
        assert "older Keel" in found.reason
        assert store.reap_dead_runs() == []


PROJECT_YAML = """\
project: leases
data:
  train: {path: data.csv}
  target: y
model: {name: leases, flavor: lightgbm}
"""


def test_opening_a_project_reaps_dead_runs(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text(PROJECT_YAML)
    (tmp_path / "data.csv").write_text("x,y\n1,0\n2,1\n")
    url = f"sqlite:///{tmp_path}/.keel/keel.db"
    MetadataStore(url).close()
    child, run_id = owned_by_a_child(url)
    kill(child)
    with Project(tmp_path) as project:
        assert project.reaped_runs == ()  # nothing opened yet
        assert project.metadata.get_run(run_id).status == "failed"
        assert [r.run_id for r in project.reaped_runs] == [run_id]
    with Project(tmp_path) as project:
        assert project.metadata.get_run(run_id).status == "failed"
        assert project.reaped_runs == ()
