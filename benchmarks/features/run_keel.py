"""Keel's side of the feature benchmark, one mode per process (run with Keel's venv).

usage: run_keel.py online BACKEND_URL CALLS      in-process lookups, 1 entity x 10 and x 100
       run_keel.py serve BACKEND_URL PORT        a /v1/features server (uvicorn, uvloop)
       run_keel.py pit                           1M entity rows x 10 features from 3 views
Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

import numpy as np
from feature_data import N_ONLINE, VIEWS, WORK

AT = datetime(2024, 6, 1)


def _online_store(url: str):  # type: ignore[no-untyped-def]
    from keel.features.store import FeatureStore
    from keel.features.views import FeatureView

    wide = FeatureView(
        "wide",
        entities=["user_id"],
        timestamp="ts",
        source=str(WORK / "wide.parquet"),
        features=[f"f{i}" for i in range(100)],
    )
    store = FeatureStore(False, views=[wide], online_url=url)
    if url.startswith("redis"):
        store.online_store.namespace = "bench"
    return store


def online(url: str, calls: int) -> dict[str, object]:
    store = _online_store(url)
    started = time.perf_counter()
    store.materialize(at=AT)
    out: dict[str, object] = {"materialize_s": time.perf_counter() - started}
    rng = np.random.default_rng(3)
    for n in (10, 100):
        refs = [f"wide:f{i}" for i in range(n)]
        keys = rng.integers(0, N_ONLINE, size=calls).tolist()
        for k in keys[:200]:  # warm-up
            store.online([{"user_id": k}], refs)
        times = np.empty(calls)
        for i, k in enumerate(keys):
            t0 = time.perf_counter_ns()
            row = store.online([{"user_id": k}], refs)[0]
            times[i] = time.perf_counter_ns() - t0
        assert len(row) == n + 1
        out[f"x{n}"] = _stats(times)
    store.close()
    if url.startswith("redis"):
        out["floor"] = _socket_floor(url, calls)
    return out


def _socket_floor(url: str, calls: int) -> dict[str, object]:
    """The least any client can do: one HMGET of the same hash over a plain TCP socket
    (hiredis packs and parses), no pool, no decoding - the machine's round-trip floor."""
    import socket
    from urllib.parse import urlparse

    import hiredis

    where = urlparse(url)
    sock = socket.create_connection((where.hostname or "127.0.0.1", where.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()

    def hmget(key: int, fields: list[str]) -> list[object]:
        sock.sendall(hiredis.pack_command(("HMGET", f"keel:bench:wide:{key}", *fields)))
        while True:
            reader.feed(sock.recv(1 << 16))
            reply = reader.gets()
            if reply is not False:
                return reply  # type: ignore[no-any-return]

    out: dict[str, object] = {}
    rng = np.random.default_rng(3)
    for n in (10, 100):
        fields = [f"f{i}" for i in range(n)]
        keys = rng.integers(0, N_ONLINE, size=calls).tolist()
        for k in keys[:200]:
            hmget(k, fields)
        times = np.empty(calls)
        for i, k in enumerate(keys):
            t0 = time.perf_counter_ns()
            reply = hmget(k, fields)
            times[i] = time.perf_counter_ns() - t0
        assert len(reply) == n and reply[0] is not None
        out[f"x{n}"] = _stats(times)
    sock.close()
    return out


def _stats(ns: np.ndarray) -> dict[str, float]:
    us = ns / 1000.0
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "calls": int(us.size),
    }


def serve(url: str, port: int) -> None:
    import uvicorn

    from keel.serve.app import ServerApp

    store = _online_store(url)
    store.materialize(at=AT)
    app = ServerApp({}, prediction_log=None, feature_store=store)
    print(json.dumps({"ready": True}), flush=True)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )


def pit() -> dict[str, object]:
    import pyarrow.parquet as pq

    from keel.features.store import FeatureStore
    from keel.features.views import FeatureView

    t0 = time.perf_counter()
    views = [
        FeatureView(
            name,
            entities=["k"],
            timestamp="ts",
            ttl="30d",
            source=str(WORK / f"{name}.parquet"),
            features=cols,
        )
        for name, cols in VIEWS.items()
    ]
    store = FeatureStore(False, views=views)
    entities = pq.read_table(WORK / "entities.parquet")
    refs = [f"{name}:{c}" for name, cols in VIEWS.items() for c in cols]
    t1 = time.perf_counter()
    joined = store.historical(entities, refs, timestamp="ts")
    t2 = time.perf_counter()
    return {
        "rows": joined.num_rows,
        "columns": joined.num_columns,
        "join_s": t2 - t1,
        "setup_s": t1 - t0,
        "non_null_a0": joined.num_rows - joined.column("a0").null_count,
        "checksum": float(np.nansum(joined.column("c2").to_numpy(zero_copy_only=False))),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "online":
        print(json.dumps(online(sys.argv[2], int(sys.argv[3]))))
    elif mode == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        print(json.dumps(pit()))
