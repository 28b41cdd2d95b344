"""Online stores: materialize then look up, on SQLite (always) and Redis (when CI starts one)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from keel.errors import ConfigError, DataValidationError, NotFoundError
from keel.features.online import open_online_store
from keel.features.store import FeatureStore
from keel.features.views import FeatureView

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL")
T0 = datetime(2024, 3, 1)


def _views() -> list[FeatureView]:
    events = pa.table(
        {
            "user": pa.array([1, 1, 1, 2, 2, 3], pa.int64()),
            "ts": [
                T0,
                T0 + timedelta(hours=1),
                T0 + timedelta(days=3),
                T0,
                T0 + timedelta(hours=5),
                T0 - timedelta(days=30),
            ],
            "score": [0.5, 0.7, 0.9, 0.1, None, 3.0],
            "plan": ["free", "free", "pro", "pro", "pro", "free"],
        }
    )
    wide = pa.table(
        {"user": pa.array([1, 2], pa.int64()), "ts": [T0, T0]}
        | {f"f{i}": [float(i), float(-i)] for i in range(100)}
    )
    pairs = pa.table(
        {
            "a": ["x", "x", "y"],
            "b": pa.array([1, 2, 1], pa.int64()),
            "ts": [T0, T0, T0],
            "w": [10, 20, 30],
        }
    )
    return [
        FeatureView(
            "users",
            entities=["user"],
            timestamp="ts",
            source=events,
            ttl="7d",
            features=[
                "score",
                "plan",
                {"function": "count", "window": "7d"},
                {"function": "mean", "column": "score", "window": "7d"},
            ],
        ),
        FeatureView(
            "wide",
            entities=["user"],
            timestamp="ts",
            source=wide,
            features=[f"f{i}" for i in range(100)],
        ),
        FeatureView("pairs", entities=["a", "b"], timestamp="ts", source=pairs, features=["w"]),
    ]


BACKENDS = [
    "sqlite",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(
            REDIS_URL is None,
            reason="KEEL_TEST_REDIS_URL is not set (.ci/run starts a redis-server)",
        ),
    ),
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'online.db'}"
    else:
        url = str(REDIS_URL)
    fs = FeatureStore(False, views=_views(), online_url=url)
    if request.param == "redis":  # a namespace of its own, so runs never see each other's keys
        fs.online_store.namespace = f"test-{uuid.uuid4().hex[:8]}"  # type: ignore[attr-defined]
    yield fs
    fs.close()


def test_round_trip_matches_historical(store: FeatureStore) -> None:
    at = T0 + timedelta(days=3, hours=1)
    summary = store.materialize(at=at)
    assert [s["entities"] for s in summary] == [3, 2, 3]
    rows = [{"user": 1}, {"user": 2}, {"user": 3}, {"user": 99}]
    got = store.online(rows, ["users:*"])
    offline = store.historical(
        pa.table({"user": [1, 2, 3, 99], "t": [at] * 4}), ["users:*"], timestamp="t"
    ).to_pylist()
    for g, o in zip(got[:3], offline[:3], strict=True):
        assert {k: g[k] for k in ("score", "plan", "count_7d", "score_mean_7d")} == {
            k: o[k] for k in ("score", "plan", "count_7d", "score_mean_7d")
        }
    assert got[0] == {
        "user": 1,
        "score": 0.9,
        "plan": "pro",
        "count_7d": 3,
        "score_mean_7d": pytest.approx(0.7),
    }
    assert got[1]["score"] is None and got[1]["plan"] == "pro"  # latest row has a null score
    assert got[2]["score"] is None and got[2]["count_7d"] == 0  # outside the TTL
    assert got[3] == {
        "user": 99,
        "score": None,
        "plan": None,
        "count_7d": None,
        "score_mean_7d": None,
    }  # unknown entity


def test_wide_and_composite_and_string_keys(store: FeatureStore) -> None:
    store.materialize(at=T0 + timedelta(days=1))
    wide = store.online([{"user": "2"}], ["wide:*"])[0]  # "2" is cast to the stored int key
    assert len(wide) == 101 and wide["f7"] == -7.0 and wide["f99"] == -99.0
    some = store.online([{"user": 1}, {"user": 2}], ["wide:f3", "users:plan"], full_names=True)
    assert some == [
        {"user": 1, "wide__f3": 3.0, "users__plan": "free"},
        {"user": 2, "wide__f3": -3.0, "users__plan": "pro"},
    ]
    pairs = store.online([{"a": "y", "b": 1}, {"a": "x", "b": 2}, {"a": "y", "b": 2}], ["pairs:w"])
    assert [p["w"] for p in pairs] == [30, 20, None]


def test_rematerialize_replaces_rows(store: FeatureStore) -> None:
    store.materialize(["users"], at=T0 + timedelta(hours=2))
    assert store.online([{"user": 1}], ["users:score"])[0]["score"] == 0.7
    store.materialize(["users"], at=T0 + timedelta(days=4))
    assert store.online([{"user": 1}], ["users:score"])[0]["score"] == 0.9


def test_lookup_errors(store: FeatureStore) -> None:
    with pytest.raises(NotFoundError, match="materialize"):
        store.online([{"user": 1}], ["users:score"])
    store.materialize(["users"], at=T0)
    with pytest.raises(DataValidationError, match="entity key 'user'"):
        store.online([{"usr": 1}], ["users:score"])
    with pytest.raises(DataValidationError, match="not a int"):
        store.online([{"user": "one"}], ["users:score"])
    with pytest.raises(ConfigError, match="no feature 'nope'"):
        store.online([{"user": 1}], ["users:nope"])


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="sqlite://, redis://"):
        open_online_store("mongodb://x", None)


@pytest.mark.skipif(REDIS_URL is None, reason="KEEL_TEST_REDIS_URL is not set")
def test_redis_lookup_survives_a_dropped_connection_and_threads(tmp_path: Path) -> None:
    import threading

    import redis

    store = FeatureStore(False, views=_views(), online_url=str(REDIS_URL))
    store.online_store.namespace = f"test-{uuid.uuid4().hex[:8]}"  # type: ignore[attr-defined]
    store.materialize(["users"], at=T0 + timedelta(hours=2))
    assert store.online([{"user": 1}], ["users:score"])[0]["score"] == 0.7
    admin = redis.Redis.from_url(str(REDIS_URL))
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1  # the server drops us
    assert store.online([{"user": 1}], ["users:score"])[0]["score"] == 0.7  # reconnected
    found: list[object] = []
    workers = [
        threading.Thread(
            target=lambda: found.append(store.online([{"user": 2}], ["users:plan"])[0]["plan"])
        )
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert found == ["pro"] * 4
    admin.close()
    store.close()


@pytest.mark.skipif(REDIS_URL is None, reason="KEEL_TEST_REDIS_URL is not set")
def test_a_redis_error_reply_does_not_leave_replies_on_the_connection() -> None:
    import redis

    from keel.errors import BackendError

    store = FeatureStore(False, views=_views(), online_url=str(REDIS_URL))
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    store.online_store.namespace = namespace  # type: ignore[attr-defined]
    store.materialize(["users"], at=T0 + timedelta(hours=2))
    expected = store.online([{"user": 2}], ["users:score"])
    admin = redis.Redis.from_url(str(REDIS_URL))
    admin.set(f"keel:{namespace}:users:1", "not a hash")  # WRONGTYPE for HMGET
    with pytest.raises(BackendError, match="WRONGTYPE"):
        store.online([{"user": 1}, {"user": 2}], ["users:plan", "users:count_7d"])
    # the second reply of that pipeline must not be read as the answer to the next lookup
    assert store.online([{"user": 2}], ["users:score"]) == expected
    admin.close()
    store.close()
