"""The scheduler in-process with an action that records what it was asked: catch-up policies
after downtime, pause, and the event triggers (new data, registry, alert)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keel.errors import ConfigError
from keel.pipeline.scheduler import Scheduler, SchedulerOptions, TickRequest
from keel.pipeline.schedules import add_schedule
from keel.store.metadata import MetadataStore
from keel.store.schedules import ScheduleStore
from tests.pipeline.test_scheduler import make_tiny_project, wait_for

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Recorder:
    """An action that records each request (and can do something while it "runs")."""

    def __init__(self, during: Any = None) -> None:
        self.requests: list[TickRequest] = []
        self.during = during

    def __call__(self, request: TickRequest) -> dict[str, Any]:
        self.requests.append(request)
        if self.during is not None:
            self.during(request)
        return {"pipeline_run_id": f"run-{len(self.requests)}"}


@pytest.fixture(scope="module")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("tpl") / "penguins", rows=40)


@pytest.fixture
def project(project_template: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "penguins"
    shutil.copytree(project_template, root)
    return root


@pytest.fixture
def store(project: Path) -> Iterator[ScheduleStore]:
    with ScheduleStore(f"sqlite:///{project / '.keel' / 'keel.db'}") as opened:
        yield opened


@contextlib.contextmanager
def serving(
    store: ScheduleStore, root: Path, action: Recorder, *, clock: Any = None, lease: float = 15.0
) -> Iterator[Scheduler]:
    options = SchedulerOptions(lease_seconds=lease, poll_seconds=0.05, owner="test")
    kwargs = {"clock": clock} if clock is not None else {}
    scheduler = Scheduler(store, action, root=root, options=options, **kwargs)
    thread = threading.Thread(target=scheduler.serve, kwargs={"max_seconds": 60}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: scheduler.keeper.generation(), timeout=10, what="leadership")
        yield scheduler
    finally:
        scheduler.request_stop()
        thread.join(timeout=10)
        assert not thread.is_alive()


def passes(scheduler: Scheduler, count: int) -> None:
    """Wait until the scheduler has evaluated its schedules ``count`` more times."""
    target = scheduler.passes + count
    wait_for(lambda: scheduler.passes >= target, timeout=10, what=f"{count} evaluations")


@pytest.mark.parametrize(
    ("catchup", "ran", "skipped"),
    [
        ("all", [(10, 0), (20, 0), (30, 0), (40, 0), (50, 0), (60, 0)], []),
        ("latest", [(60, 5)], []),
        ("none", [(60, 0)], [(50, 4)]),
    ],
)
def test_missed_ticks_follow_the_catchup_policy(
    store: ScheduleStore, project: Path, catchup: str, ran: list[tuple[int, int]],
    skipped: list[tuple[int, int]],
) -> None:  # fmt: skip
    store.add_schedule("s", kind="every", every_seconds=10, catchup=catchup, now=T0)  # type: ignore[arg-type]
    recorder = Recorder()
    # the scheduler was down from T0 until T0 + 65 s; the lease (15 s) is the grace of 'none'
    with serving(store, project, recorder, clock=lambda: T0 + timedelta(seconds=65)) as running:
        passes(running, 3)
    ticks = sorted(store.list_ticks("s"), key=lambda t: t.tick_at)
    seconds = [(int((t.tick_at - T0).total_seconds()), t.missed) for t in ticks]
    assert [s for s, t in zip(seconds, ticks, strict=True) if t.status == "succeeded"] == ran
    assert [s for s, t in zip(seconds, ticks, strict=True) if t.status == "skipped"] == skipped
    assert [r.tick_at for r in recorder.requests] == [T0 + timedelta(seconds=s) for s, _ in ran]
    assert all(r.trigger == "schedule" for r in recorder.requests)
    assert ticks[-1].pipeline_run_id == f"run-{len(ran)}"
    if ran[-1][1]:
        assert "standing for 5 missed tick(s)" in recorder.requests[-1].reason


def test_a_paused_schedule_does_not_run(store: ScheduleStore, project: Path) -> None:
    store.add_schedule("s", kind="every", every_seconds=10, now=T0)
    store.set_paused("s", True)
    recorder = Recorder()
    with serving(store, project, recorder, clock=lambda: T0 + timedelta(seconds=65)) as running:
        passes(running, 3)
        assert recorder.requests == []
        store.set_paused("s", False)  # resumed "now": the pause's ticks are not caught up
        passes(running, 3)
    assert recorder.requests == []


def test_real_time_ticks_have_small_overhead(store: ScheduleStore, project: Path) -> None:
    store.add_schedule("s", kind="every", every_seconds=1)
    recorder = Recorder()
    with serving(store, project, recorder):
        wait_for(lambda: len(recorder.requests) >= 2, timeout=10, what="two ticks")
    ticks = [t for t in store.list_ticks("s") if t.status == "succeeded"]
    assert len(ticks) >= 2
    on_time = [t for t in ticks if t.missed == 0]
    assert on_time and max(t.overhead_ms or 0 for t in on_time) < 100


def test_new_data_triggers_on_changed_content_not_on_a_touch(
    store: ScheduleStore, project: Path
) -> None:
    add_schedule(store, project, "fresh", on="new_data")
    data = project / "data" / "penguins-penguins.csv"
    recorder = Recorder()
    with serving(store, project, recorder) as running:
        passes(running, 3)
        stat = data.stat()
        os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        passes(running, 3)
        assert recorder.requests == []
        with data.open("a") as handle:
            handle.write(data.read_text().splitlines()[1] + "\n")
        wait_for(lambda: recorder.requests, timeout=10, what="a new-data tick")
        passes(running, 3)
    assert len(recorder.requests) == 1
    request = recorder.requests[0]
    assert request.trigger == "event" and "new data in data.train" in request.reason
    tick = store.list_ticks("fresh")[0]
    assert tick.status == "succeeded" and tick.reason == request.reason


def test_registry_trigger_ignores_what_its_own_run_registered(
    store: ScheduleStore, project: Path
) -> None:
    url = f"sqlite:///{project / '.keel' / 'keel.db'}"
    with MetadataStore(url) as metadata:
        metadata.register_model_version("up", package_sha256="a" * 64, run_id=None, metrics={})
        add_schedule(store, project, "downstream", on="registry")  # version 1 is old news

        def retrain(request: TickRequest) -> None:  # the triggered run registers a version too
            metadata.register_model_version("down", package_sha256="b" * 64, run_id=None,
                                            metrics={})  # fmt: skip

        recorder = Recorder(during=retrain)
        with serving(store, project, recorder) as running:
            passes(running, 3)
            assert recorder.requests == []
            metadata.set_alias("up", "production", 1)
            wait_for(lambda: recorder.requests, timeout=10, what="a registry tick")
            passes(running, 5)
    assert len(recorder.requests) == 1
    assert recorder.requests[0].reason == "registry: up@production -> version 1"


def test_alert_trigger_for_one_model(store: ScheduleStore, project: Path) -> None:
    add_schedule(store, project, "on-alert", on="alert", model="churn")
    recorder = Recorder()
    with serving(store, project, recorder) as running:
        store.record_event("alert", "other", {"message": "not ours"})
        passes(running, 3)
        assert recorder.requests == []
        store.record_event("alert", "churn", {"message": "psi 0.41 on tenure"})
        wait_for(lambda: recorder.requests, timeout=10, what="an alert tick")
        passes(running, 3)
    assert [r.reason for r in recorder.requests] == ["alert: churn: psi 0.41 on tenure"]


def test_a_failing_run_is_recorded_and_the_scheduler_goes_on(
    store: ScheduleStore, project: Path
) -> None:
    def fail(request: TickRequest) -> None:
        raise ConfigError("keel.yaml:3: broken on purpose")

    store.add_schedule("s", kind="every", every_seconds=1)
    recorder = Recorder(during=fail)
    with serving(store, project, recorder):
        wait_for(lambda: len(recorder.requests) >= 2, timeout=10, what="two failed ticks")
    failed = [t for t in store.list_ticks("s") if t.status == "failed"]
    assert len(failed) >= 2
    assert failed[0].error == "ConfigError: keel.yaml:3: broken on purpose"


def test_add_schedule_checks_its_options(store: ScheduleStore, project: Path) -> None:
    with pytest.raises(ConfigError, match="--timezone applies to --cron"):
        add_schedule(store, project, "x", every="5m", timezone="UTC")
    with pytest.raises(ConfigError, match="--model applies to --on registry"):
        add_schedule(store, project, "x", cron="0 3 * * *", model="m")
    with pytest.raises(ConfigError, match="--model applies to --on registry"):
        add_schedule(store, project, "x", on="new_data", model="m")
    with pytest.raises(ConfigError, match="--catchup applies to --cron and --every"):
        add_schedule(store, project, "x", on="alert", catchup="all")
    assert store.list_schedules() == []
