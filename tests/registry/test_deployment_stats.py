"""Deployment traffic in the database: summed by one grouped query, pruned with retention."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keel.registry.deployments import LATENCY_EDGES_MS, Measured
from keel.registry.registry import Registry
from keel.registry.rollout import Rollouts
from keel.serve.operations import Operations
from keel.serve.routing import Traffic
from keel.store import MetadataStore
from keel.store import deployment_store as ds
from keel.store.production_tables import deployment_stats, deployments
from keel.store.tables import utc_now
from keel.testing import postgres_schema

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")
BUCKETS = len(LATENCY_EDGES_MS) + 1


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/keel.db"
        with MetadataStore(url) as opened:
            yield _registered(opened)
        return
    if POSTGRES_URL is None:
        pytest.skip("set KEEL_TEST_POSTGRES_URL to run against PostgreSQL")
    with postgres_schema(POSTGRES_URL) as url, MetadataStore(url) as opened:
        yield _registered(opened)


def _registered(store: MetadataStore) -> MetadataStore:
    reg = Registry(store.database, actor="alice")
    for i in range(3):
        reg.register("churn", package_sha256=f"{i + 1:x}" * 64, run_id=None, metrics={})
    reg.promote("churn", 1, alias="production")
    return store


def _row(key: str, at: datetime, rng: random.Random, **fixed: Any) -> dict[str, Any]:
    requests = rng.randint(0, 400)
    spread = rng.sample(range(BUCKETS), k=rng.randint(1, 6))
    latency: dict[str, int] = {}
    for _ in range(requests):
        bucket = str(rng.choice(spread))
        latency[bucket] = latency.get(bucket, 0) + 1
    compared = rng.randint(0, requests)
    row = {
        "server": f"host:{rng.randint(1, 4)}",
        "deployment_id": key,
        "version": rng.choice(["1", "2"]),
        "role": rng.choice(["primary", "canary", "shadow"]),
        "bucket": at,
        "requests": requests,
        "errors": rng.randint(0, requests // 10 + 1) if requests else 0,
        "latency": latency,
        "compared": compared,
        "disagreed": rng.randint(0, compared),
    }
    row.update(fixed)
    return row


def _python_merge(rows: list[Mapping[str, Any]]) -> list[Measured]:
    """How `keel deployments status` merged the rows before: in Python, row by row."""
    groups: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((int(row["version"]), row["role"]), []).append(row)
    return [Measured.merge(v, role, found) for (v, role), found in sorted(groups.items())]


def test_status_numbers_are_summed_in_sql_and_equal_the_python_merge(
    store: MetadataStore,
) -> None:
    rollouts = Rollouts(store.database, actor="bob")
    made = rollouts.canary("churn", 2, interval_s=60.0, checks="error_rate<=0.01,p99_ms<=50")
    rng = random.Random(7)
    start = made.created_at
    rows = [_row(made.id, start + timedelta(seconds=s), rng) for s in range(1, 301)]
    rows += [_row(made.id, start - timedelta(hours=1), rng)]  # before it began: not counted
    rows += [_row("other-deployment", start + timedelta(seconds=5), rng)]
    with store.database.write() as conn:
        ds.add_stats(conn, rows)

    end = start + timedelta(seconds=400)
    with store.database.read() as conn:
        stored = ds.stats_between(conn, made.id, start - timedelta(seconds=1), end)
    assert len(stored) == 300
    expected = _python_merge(stored)
    measured = rollouts.measure(made, start - timedelta(seconds=1), end)
    assert measured == expected
    assert {(m.version, m.role) for m in measured} == {
        (v, r) for v in (1, 2) for r in ("primary", "canary", "shadow")
    }
    assert sum(m.requests for m in measured) == sum(r["requests"] for r in stored)

    status = rollouts.status(made.id, now=end)
    assert status["traffic"] == [m.to_json() for m in expected]
    shadow = next(t for t in status["traffic"] if t["role"] == "shadow" and t["version"] == 2)
    assert shadow["compared"] > 0 and 0 <= shadow["disagreement_rate"] <= 1

    # a window (what a canary's check reads) sums only its rows
    since, until = start + timedelta(seconds=100), start + timedelta(seconds=150)
    with store.database.read() as conn:
        window = ds.stats_between(conn, made.id, since, until)
    assert rollouts.measure(made, since, until) == _python_merge(window)
    assert rollouts.measure(made, end, end + timedelta(hours=1)) == []


def _count(store: MetadataStore, key: str) -> int:
    with store.database.read() as conn:
        found = conn.scalar(
            sa.select(sa.func.count())
            .select_from(deployment_stats)
            .where(deployment_stats.c.deployment_id == key)
        )
    return int(found or 0)


def test_deployment_rows_past_retention_are_pruned_but_a_running_check_keeps_its_own(
    store: MetadataStore,
) -> None:
    rollouts = Rollouts(store.database, actor="bob")
    now = utc_now()
    ended = rollouts.shadow("churn", 3)
    rollouts.abort(ended.id)
    running = rollouts.canary("churn", 2, interval_s=60.0)
    rng = random.Random(3)
    old, recent = now - timedelta(days=3), now - timedelta(hours=2)
    with store.database.write() as conn:
        ds.add_stats(conn, [_row(ended.id, old, rng) for _ in range(5)])
        ds.add_stats(conn, [_row(ended.id, recent, rng) for _ in range(2)])
        ds.add_stats(conn, [_row(running.id, old, rng) for _ in range(4)])
        # rows the running canary's current interval reads, however old: kept
        conn.execute(
            sa.update(deployments)
            .where(deployments.c.id == running.id)
            .values(step_started_at=old - timedelta(hours=1))
        )
        ds.add_stats(conn, [_row(running.id, old, rng) for _ in range(3)])
    with store.database.read() as conn:
        window = ds.sum_stats(conn, running.id, old - timedelta(hours=1), now, buckets=BUCKETS)

    # a server's hourly maintenance (retention 1 day) prunes them with the model's own rows
    key = ds.model_stats_key("churn")
    with store.database.write() as conn:
        ds.add_stats(conn, [_row(key, old, rng) for _ in range(2)])
    operations = Operations(store.database, Traffic(), lambda: ["churn"], retention_days=1)
    operations.flush()

    assert _count(store, ended.id) == 2  # the 5 old rows went, the 2 recent stayed
    assert _count(store, key) == 0
    assert _count(store, running.id) == 7
    with store.database.read() as conn:
        assert ds.sum_stats(conn, running.id, old - timedelta(hours=1), now, buckets=BUCKETS) == (
            window
        )

    # once the canary's interval moves on, its rows past retention go too
    with store.database.write() as conn:
        conn.execute(
            sa.update(deployments).where(deployments.c.id == running.id).values(step_started_at=now)
        )
        assert ds.prune_deployment_stats(conn, ["churn"], now - timedelta(days=1)) == 7
        assert ds.prune_deployment_stats(conn, ["other-model"], now) == 0
    assert _count(store, running.id) == 0 and _count(store, ended.id) == 2
