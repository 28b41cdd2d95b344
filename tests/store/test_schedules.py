"""The schedule store: the leader lease's compare-and-set, tick claims, events; SQLite and
PostgreSQL (when KEEL_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.store.metadata import MetadataStore
from keel.store.schedules import ScheduleStore
from keel.testing import postgres_schema

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=[
    pytest.mark.postgres,
    pytest.mark.skipif(POSTGRES_URL is None, reason="set KEEL_TEST_POSTGRES_URL"),
])]  # fmt: skip
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@contextlib.contextmanager
def _url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/keel.db"
        return
    assert POSTGRES_URL is not None
    with postgres_schema(POSTGRES_URL) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScheduleStore]:
    with _url(request.param, tmp_path) as url, ScheduleStore(url) as opened:
        yield opened


def test_the_lease_goes_to_one_owner_until_it_expires(store: ScheduleStore) -> None:
    first = store.acquire_lease("a", seconds=10, now=T0)
    assert first is not None and (first.owner, first.generation) == ("a", 1)
    assert store.acquire_lease("b", seconds=10, now=T0 + timedelta(seconds=9)) is None
    renewed = store.renew_lease("a", 1, seconds=10, now=T0 + timedelta(seconds=9))
    assert renewed is not None and renewed.expires_at == T0 + timedelta(seconds=19)
    assert store.acquire_lease("b", seconds=10, now=T0 + timedelta(seconds=18)) is None
    taken = store.acquire_lease("b", seconds=10, now=T0 + timedelta(seconds=19))
    assert taken is not None and (taken.owner, taken.generation) == ("b", 2)
    # the old owner can neither renew nor claim with its stale generation
    assert store.renew_lease("a", 1, seconds=10, now=T0 + timedelta(seconds=20)) is None
    again = store.acquire_lease("b", seconds=10, now=T0 + timedelta(seconds=21))
    assert again is not None and again.generation == 2  # re-taking one's own keeps it


def test_released_lease_is_free_at_once(store: ScheduleStore) -> None:
    store.acquire_lease("a", seconds=60, now=T0)
    assert store.release_lease("a", now=T0 + timedelta(seconds=1))
    taken = store.acquire_lease("b", seconds=60, now=T0 + timedelta(seconds=1))
    assert taken is not None and taken.owner == "b"
    assert not store.release_lease("a")


def test_racing_followers_elect_exactly_one(store: ScheduleStore) -> None:
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def contend(owner: str) -> None:
        barrier.wait(timeout=10)
        if store.acquire_lease(owner, seconds=30) is not None:
            winners.append(owner)

    threads = [threading.Thread(target=contend, args=(f"p{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(winners) == 1


def test_a_tick_is_claimed_once(store: ScheduleStore) -> None:
    schedule = store.add_schedule("s", kind="every", every_seconds=10, now=T0)
    lease = store.acquire_lease("a", seconds=60)
    assert lease is not None
    tick_at = T0 + timedelta(seconds=10)
    tick = store.claim_tick(schedule, tick_at, owner="a", generation=1, reason="r")
    assert tick is not None and tick.status == "running" and tick.tick_at == tick_at
    # the same schedule revision again: the compare-and-set fails
    assert store.claim_tick(schedule, tick_at, owner="a", generation=1, reason="r") is None
    # a fresh read of the schedule, the same tick: the unique constraint refuses it
    fresh = store.get_schedule("s")
    assert fresh.last_tick_at == tick_at and fresh.revision == schedule.revision + 1
    assert store.claim_tick(fresh, tick_at, owner="a", generation=1, reason="r") is None
    assert [t.id for t in store.list_ticks("s")] == [tick.id]
    done = store.finish_tick(tick.id, status="succeeded", overhead_ms=1.5, summary={"x": 1})
    assert done.status == "succeeded" and done.summary == {"x": 1} and done.ended_at


def test_no_claim_without_the_lease(store: ScheduleStore) -> None:
    schedule = store.add_schedule("s", kind="every", every_seconds=10, now=T0)
    tick_at = T0 + timedelta(seconds=10)
    assert store.claim_tick(schedule, tick_at, owner="a", generation=1, reason="r") is None
    store.acquire_lease("a", seconds=5, now=T0)
    store.acquire_lease("b", seconds=5, now=T0 + timedelta(seconds=6))
    stale = store.claim_tick(schedule, tick_at, owner="a", generation=1, reason="r",
                             now=T0 + timedelta(seconds=7))  # fmt: skip
    assert stale is None
    assert store.list_ticks("s") == []


def test_a_paused_schedule_is_not_claimed_and_resuming_skips_the_pause(
    store: ScheduleStore,
) -> None:
    schedule = store.add_schedule("s", kind="every", every_seconds=10, now=T0)
    store.acquire_lease("a", seconds=600)
    paused = store.set_paused("s", True)
    assert paused.paused and paused.revision == schedule.revision + 1
    assert store.claim_tick(paused, T0 + timedelta(seconds=10), owner="a", generation=1,
                            reason="r") is None  # fmt: skip
    resumed = store.set_paused("s", False, now=T0 + timedelta(hours=1))
    assert not resumed.paused and resumed.last_tick_at == T0 + timedelta(hours=1)


def test_orphaned_running_ticks_are_failed_by_the_next_leader(store: ScheduleStore) -> None:
    schedule = store.add_schedule("s", kind="every", every_seconds=10, now=T0)
    store.acquire_lease("a", seconds=600)
    tick = store.claim_tick(schedule, T0 + timedelta(seconds=10), owner="a", generation=1,
                            reason="r")  # fmt: skip
    assert tick is not None
    assert store.fail_orphaned_ticks("b") == 1
    failed = store.get_tick(tick.id)
    assert failed.status == "failed" and failed.error and "lease expired" in failed.error


def test_schedule_names_and_errors(store: ScheduleStore) -> None:
    store.add_schedule("nightly", kind="cron", cron="0 3 * * *")
    with pytest.raises(ConflictError, match="'nightly' exists"):
        store.add_schedule("nightly", kind="cron", cron="0 4 * * *")
    with pytest.raises(NotFoundError, match="no schedule named 'nope'; schedules: nightly"):
        store.get_schedule("nope")
    with pytest.raises(NotFoundError):
        store.remove_schedule("nope")
    with pytest.raises(ConfigError, match="invalid schedule name"):
        store.add_schedule("", kind="every", every_seconds=1)
    store.remove_schedule("nightly")
    assert store.list_schedules() == []


def test_events_and_registry_changes_are_read_after_a_cursor(
    store: ScheduleStore, tmp_path: Path
) -> None:
    assert store.newest_event_id("alert") == 0
    first = store.record_event("alert", "churn", {"message": "psi 0.4 on age"})
    store.record_event("alert", "other", {})
    store.record_event("note", "churn", {})
    assert store.newest_event_id("alert") == first.id + 1
    assert store.newest_event_id("alert", "churn") == first.id
    assert [e.subject for e in store.events_after("alert", 0)] == ["churn", "other"]
    assert store.newest_registry_change() == 0


def test_registry_changes_come_from_the_audit_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keel.db"
    with MetadataStore(url) as metadata, ScheduleStore(url) as store:
        metadata.register_model_version("m", package_sha256="a" * 64, run_id=None, metrics={})
        metadata.set_alias("m", "production", 1)
        metadata.audit("deploy", "m", details={})  # not a registry change
        changes = store.registry_changes_after(0)
        assert [c["action"] for c in changes] == ["register", "set_alias"]
        assert store.newest_registry_change("m") == changes[-1]["id"]
        assert store.newest_registry_change("other") == 0
