"""The deployment controller on synthetic traffic: checks, waiting, stepping, rollback after N
bad intervals, promotion past the last step, the audit trail, and bad input."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.registry.deployments import (
    LATENCY_EDGES_MS,
    Measured,
    bucket_of,
    parse_ab,
    parse_checks,
    parse_interval,
    parse_steps,
)
from keel.registry.registry import Registry
from keel.registry.rollout import Rollouts
from keel.store import MetadataStore
from keel.store import deployment_store as ds


def _traffic(
    store: MetadataStore,
    deployment: str,
    at: datetime,
    *,
    requests: int,
    errors: int = 0,
    rejected: int = 0,
    ms: float = 1.0,
    version: str = "2",
    role: str = "canary",
    server: str = "s1",
) -> None:
    row = {
        "server": server,
        "deployment_id": deployment,
        "version": version,
        "role": role,
        "bucket": at,
        "requests": requests,
        "errors": errors,
        "latency": {str(bucket_of(ms)): requests},
        "compared": 0,
        "disagreed": 0,
        "rejected": rejected,
    }
    with store.database.write() as conn:
        ds.add_stats(conn, [row])


def _canary(store: MetadataStore, **options: object) -> tuple[Rollouts, str, datetime]:
    rollouts = Rollouts(store.database, actor="bob")
    settings: dict[str, object] = {
        "steps": (5.0, 25.0, 50.0, 100.0),
        "interval_s": 10.0,
        "checks": "error_rate<=0.01,p99_ms<=50",
        "min_requests": 20,
    }
    settings.update(options)
    made = rollouts.canary("churn", 2, **settings)  # type: ignore[arg-type]
    return rollouts, made.id, made.interval_started_at


def test_checks_parse_and_name_the_bad_clause() -> None:
    checks = parse_checks("error_rate<=0.01, p99_ms<50,requests>=10")
    assert [str(c) for c in checks] == ["error_rate<=0.01", "p99_ms<50", "requests>=10"]
    with pytest.raises(ConfigError, match=r"'p99<=50'.*unknown metric 'p99'"):
        parse_checks("error_rate<=0.01,p99<=50")
    with pytest.raises(ConfigError, match=r"bad check clause 'error_rate=0\.01'"):
        parse_checks("error_rate=0.01")
    assert parse_steps("5,25,50,100") == (5.0, 25.0, 50.0, 100.0)
    with pytest.raises(ConfigError, match="must increase"):
        parse_steps("50,25")
    assert parse_interval("5m") == 300.0 and parse_interval("500ms") == 0.5
    with pytest.raises(ConfigError, match=r"^interval 'soon'"):
        parse_interval("soon")
    assert parse_ab("3:50,4:50") == ((3, 50.0), (4, 50.0))
    with pytest.raises(ConfigError, match="two different versions"):
        parse_ab("3:50")


def test_latency_buckets_merge_into_percentiles() -> None:
    rows = [
        {"requests": 90, "errors": 0, "latency": {str(bucket_of(2.0)): 90}},
        {"requests": 10, "errors": 1, "latency": {str(bucket_of(80.0)): 10}},
    ]
    merged = Measured.merge(2, "canary", rows)
    assert merged.requests == 100 and merged.error_rate == pytest.approx(0.01)
    p50, p99 = merged.percentile_ms(50), merged.percentile_ms(99)
    assert p50 is not None and 2.0 <= p50 < 2.0 * 1.31
    assert p99 is not None and 80.0 <= p99 < 80.0 * 1.31
    assert bucket_of(1e9) == len(LATENCY_EDGES_MS)  # overflow bucket


def test_waiting_for_traffic_neither_advances_nor_fails(store: MetadataStore) -> None:
    rollouts, ident, started = _canary(store)
    _traffic(store, ident, started + timedelta(seconds=5), requests=5, errors=5)
    [decision] = rollouts.tick(started + timedelta(seconds=11))
    assert decision.action == "waiting" and "5 < 20" in decision.details["why"]
    found = rollouts.get(ident)
    assert (found.step, found.bad_intervals, found.status) == (0, 0, "active")
    assert rollouts.tick(started + timedelta(seconds=5)) == []  # interval not over yet


def test_checks_that_hold_step_the_canary_and_it_promotes_past_the_last_step(
    store: MetadataStore,
) -> None:
    rollouts, ident, started = _canary(store)
    weights = []
    now = started
    for _ in range(3):
        _traffic(store, ident, now + timedelta(seconds=5), requests=50, ms=3.0)
        now += timedelta(seconds=11)
        [decision] = rollouts.tick(now)
        weights.append(decision.details["weight"])
        now = rollouts.get(ident).interval_started_at if decision.action == "stepped" else now
    assert weights == [25.0, 50.0, 50.0]  # 5 -> 25 -> 50 -> (100 %) promoted
    found = rollouts.get(ident)
    assert found.status == "promoted"
    assert Registry(store.database).resolve("churn@production").version == 2
    actions = [e.action for e in Registry(store.database).audit(target="churn")]
    assert actions[:3] == ["deploy_promoted", "promote", "deploy_stepped"]
    history = [e["action"] for e in rollouts.events(ident)]
    assert history == ["created", "stepped", "stepped", "promoted"]
    assert rollouts.events(ident)[-1]["measured"]["p99_ms"] <= 50


def test_bad_intervals_roll_back_after_n_in_a_row(store: MetadataStore) -> None:
    rollouts, ident, started = _canary(store, failures=2)
    _traffic(store, ident, started + timedelta(seconds=5), requests=40, errors=4)
    [first] = rollouts.tick(started + timedelta(seconds=11))
    assert first.action == "bad_interval" and first.details["failed"] == ["error_rate<=0.01"]
    assert rollouts.get(ident).bad_intervals == 1
    # the other version's traffic does not count against the canary
    second_start = rollouts.get(ident).interval_started_at
    _traffic(store, ident, second_start + timedelta(seconds=2), requests=40, version="1",
             role="primary", errors=40)  # fmt: skip
    _traffic(store, ident, second_start + timedelta(seconds=5), requests=40, ms=200.0)
    [second] = rollouts.tick(second_start + timedelta(seconds=11))
    assert second.action == "rolled_back"
    assert second.details["failed"] == ["p99_ms<=50"]
    assert second.details["measured"]["error_rate"] == 0.0
    found = rollouts.get(ident)
    assert found.status == "rolled_back" and "2 intervals in a row" in found.reason
    assert Registry(store.database).resolve("churn@production").version == 1  # unchanged
    [entry] = Registry(store.database).audit(target="churn", action="deploy_rolled_back")
    assert entry.actor == "bob" and entry.details["measured"]["p99_ms"] > 50
    assert rollouts.active() == []


def test_one_good_interval_resets_the_bad_count(store: MetadataStore) -> None:
    rollouts, ident, started = _canary(store, failures=2)
    _traffic(store, ident, started + timedelta(seconds=5), requests=40, errors=10)
    rollouts.tick(started + timedelta(seconds=11))
    now = rollouts.get(ident).interval_started_at
    _traffic(store, ident, now + timedelta(seconds=5), requests=40)
    [decision] = rollouts.tick(now + timedelta(seconds=11))
    assert decision.action == "stepped"
    assert rollouts.get(ident).bad_intervals == 0


def test_one_active_deployment_per_model_and_clear_errors(store: MetadataStore) -> None:
    rollouts, ident, _ = _canary(store)
    with pytest.raises(ConflictError, match="already has an active canary deployment"):
        rollouts.shadow("churn", 3)
    with pytest.raises(NotFoundError):
        rollouts.canary("churn", 9)
    rollouts.abort("churn", reason="wrong build")
    with pytest.raises(ConflictError, match="already ended"):
        rollouts.abort(ident)
    with pytest.raises(ConflictError, match="already holds churn@production"):
        rollouts.canary("churn", 1)
    made = rollouts.ab("churn", [(2, 30), (3, 70)], sticky_key="user_id")
    assert [a.weight for a in made.arms] == [30.0, 70.0]
    with pytest.raises(ConfigError, match="name the winner"):
        rollouts.promote("churn")
    done = rollouts.promote("churn", version=3, reason="arm 3 won")
    assert done.status == "promoted"
    assert Registry(store.database).resolve("churn@production").version == 3
    assert [d.status for d in rollouts.listed(name="churn")] == ["promoted", "aborted"]


def test_controller_lease_is_held_by_one_server(store: MetadataStore) -> None:
    with store.database.write() as conn:
        assert ds.take_lease(conn, "a", seconds=5)
        assert not ds.take_lease(conn, "b", seconds=5)
        assert ds.take_lease(conn, "a", seconds=5)  # renewed


def test_wait_runs_the_controller_in_the_foreground(store: MetadataStore) -> None:
    from keel.api.deployments import _wait

    rollouts = Rollouts(store.database, actor="ci")
    made = rollouts.canary(
        "churn", 3, steps=(50.0,), interval_s=0.2, checks="requests>=0", min_requests=0
    )
    # one request: an interval with none waits for traffic even at --min-requests 0
    at = made.interval_started_at + timedelta(milliseconds=50)
    _traffic(store, made.id, at, requests=1, version="3")
    said: list[str] = []
    status = _wait(rollouts, made.id, said.append, timeout=20)
    assert status["status"] == "promoted"
    assert len(said) == 1 and "promoted" in said[0] and "requests=1" in said[0]
    assert [e["action"] for e in status["events"]] == ["created", "promoted"]


def test_a_canary_refusing_what_the_primary_takes_fails_its_checks(store: MetadataStore) -> None:
    """4xx answers are client mistakes, so they are not errors; but arms split the same traffic
    at random, so a canary refusing far more than the primary (a column clients do not send) is
    broken for these clients: it fails the interval and rolls back, with the evidence."""
    rollouts, ident, started = _canary(store, failures=1)
    _traffic(store, ident, started + timedelta(seconds=2), requests=400, rejected=4,
             version="1", role="primary")  # fmt: skip
    _traffic(store, ident, started + timedelta(seconds=5), requests=40, rejected=30)
    [decision] = rollouts.tick(started + timedelta(seconds=11))
    assert decision.action == "rolled_back"
    [why] = decision.details["failed"]
    assert why.startswith("rejection_rate 0.75 above the primary's 0.01") and "30/40" in why
    assert decision.details["measured"]["error_rate"] == 0.0  # none of them was an error
    assert decision.details["primary_rejection_rate"] == 0.01
    window = rollouts.measure(rollouts.get(ident), started, started + timedelta(seconds=11))
    canary = next(m.to_json() for m in window if m.role == "canary")
    assert canary["rejected"] == 30 and canary["rejection_rate"] == 0.75


def test_refusals_at_the_primarys_rate_do_not_fail_a_canary(store: MetadataStore) -> None:
    """Bad clients hit both arms alike: equal refusal rates, or a gap inside the margin or the
    test's noise, never block a canary; an explicit ``rejection_rate`` check still can."""
    rollouts, ident, started = _canary(store)
    _traffic(store, ident, started + timedelta(seconds=2), requests=400, rejected=80,
             version="1", role="primary")  # fmt: skip
    _traffic(store, ident, started + timedelta(seconds=5), requests=40, rejected=10)
    [decision] = rollouts.tick(started + timedelta(seconds=11))
    assert decision.action == "stepped", decision.details  # 0.25 vs 0.20 on 40 rows: noise
    strict, other, begun = _canary_after(rollouts, store, ident, "rejection_rate<=0.1")
    _traffic(store, other, begun + timedelta(seconds=5), requests=40, rejected=10)
    [decision] = strict.tick(begun + timedelta(seconds=11))
    assert decision.action == "bad_interval" and decision.details["failed"] == [
        "rejection_rate<=0.1"
    ]


def _canary_after(
    rollouts: Rollouts, store: MetadataStore, ident: str, checks: str
) -> tuple[Rollouts, str, datetime]:
    rollouts.abort(ident, reason="next test")
    return _canary(store, checks=checks)


def _requests(shown: list[dict[str, object]], role: str) -> object:
    return next((m["requests"] for m in shown if m["role"] == role), 0)


def test_the_flush_after_a_deployment_ended_counts_in_its_traffic(store: MetadataStore) -> None:
    """A server stamps a row with its flush time, the end of the span it counts, and writes rows
    under a deployment's id only while it routes by it. So the rows flushed just after the
    deployment ended hold requests it routed (before the end, or before the server noticed it):
    its traffic counts them, instead of dropping the last few seconds of every deployment."""
    rollouts, ident, started = _canary(store)
    ended = rollouts.abort(ident, reason="enough").ended_at
    assert ended is not None and ended > started
    _traffic(store, ident, started + (ended - started) / 2, requests=100)  # while it ran
    _traffic(store, ident, ended + timedelta(seconds=2), requests=30)  # the last flush
    shown = rollouts.status(ident, now=ended + timedelta(seconds=10))
    assert _requests(shown["traffic"], "canary") == 130, shown["traffic"]


def test_the_row_straddling_a_step_counts_whole_in_the_interval_it_was_flushed_in(
    store: MetadataStore,
) -> None:
    """A step at S: a row flushed at S + 2 s counts requests from before and after S (the
    servers' flush and the controller's step are not in step); it counts whole in the new
    interval, so a check right after the step sees it, and no row counts in two intervals."""
    rollouts, ident, started = _canary(store)
    _traffic(store, ident, started + timedelta(seconds=5), requests=50, ms=3.0)
    step = started + timedelta(seconds=11)
    [decision] = rollouts.tick(step)
    assert decision.action == "stepped"
    _traffic(store, ident, step + timedelta(seconds=2), requests=25, ms=3.0)  # straddles it
    shown = rollouts.status(ident, now=step + timedelta(seconds=3))
    assert _requests(shown["interval"], "canary") == 25, shown["interval"]
    assert "waiting" not in shown  # 25 of the 20 requests an interval needs
    assert _requests(shown["traffic"], "canary") == 75
    _traffic(store, ident, step + timedelta(seconds=9), requests=10, ms=3.0)
    [judged] = rollouts.tick(step + timedelta(seconds=11))
    assert judged.details["measured"]["requests"] == 35.0  # 25 + 10, not the 50 before
