"""Feast's side of the feature benchmark (run with benchmarks/.peers/feast/bin/python).

usage: run_feast.py online BACKEND REPO CALLS      sqlite or redis://host:port/db; in-process
       run_feast.py setup BACKEND REPO             apply + materialize only (before `feast serve`)
       run_feast.py pit REPO                       1M entity rows x 10 features, file offline store
Prints one JSON line. The data are the same Parquet files Keel reads (feature_data.py).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from feature_data import N_ONLINE, VIEWS, WORK

AT = datetime(2024, 6, 1)


def _repo(repo: Path, backend: str) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    if backend.startswith("redis://"):
        host_port, _, db = backend.removeprefix("redis://").partition("/")
        online = f'  type: redis\n  connection_string: "{host_port},db={db or 0}"\n'
    else:
        online = f"  type: sqlite\n  path: {repo / 'online.db'}\n"
    (repo / "feature_store.yaml").write_text(
        "project: keelbench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n{online}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


def _store(repo: Path, backend: str, *, online_views: bool):  # type: ignore[no-untyped-def]
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float64

    _repo(repo, backend)
    store = FeatureStore(repo_path=str(repo))
    if online_views:
        user = Entity(name="user", join_keys=["user_id"])
        source = FileSource(path=str(WORK / "wide.parquet"), timestamp_field="ts")
        views = [
            FeatureView(
                name="wide",
                entities=[user],
                ttl=timedelta(days=3650),
                source=source,
                schema=[Field(name=f"f{i}", dtype=Float64) for i in range(100)],
            )
        ]
        objects = [user, *views]
    else:
        key = Entity(name="key", join_keys=["k"])
        objects = [key]
        for name, cols in VIEWS.items():
            source = FileSource(path=str(WORK / f"{name}.parquet"), timestamp_field="ts")
            objects.append(
                FeatureView(
                    name=name,
                    entities=[key],
                    ttl=timedelta(days=30),
                    source=source,
                    schema=[Field(name=c, dtype=Float64) for c in cols],
                )
            )
    store.apply(objects)
    return store


def setup(backend: str, repo: Path) -> dict[str, object]:
    store = _store(repo, backend, online_views=True)
    started = time.perf_counter()
    store.materialize(start_date=datetime(2023, 1, 1), end_date=AT)
    return {"materialize_s": time.perf_counter() - started}


def online(backend: str, repo: Path, calls: int) -> dict[str, object]:
    out = setup(backend, repo)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    rng = np.random.default_rng(3)
    for n in (10, 100):
        refs = [f"wide:f{i}" for i in range(n)]
        keys = rng.integers(0, N_ONLINE, size=calls).tolist()
        for k in keys[:200]:
            store.get_online_features(features=refs, entity_rows=[{"user_id": k}]).to_dict()
        times = np.empty(calls)
        for i, k in enumerate(keys):
            t0 = time.perf_counter_ns()
            row = store.get_online_features(features=refs, entity_rows=[{"user_id": k}]).to_dict()
            times[i] = time.perf_counter_ns() - t0
        assert len(row) == n + 1 and row["f0"][0] is not None, row
        us = times / 1000.0
        out[f"x{n}"] = {
            "p50_us": float(np.percentile(us, 50)),
            "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean()),
            "calls": calls,
        }
    return out


def pit(repo: Path) -> dict[str, object]:
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    store = _store(repo, "sqlite", online_views=False)
    entities = pq.read_table(WORK / "entities.parquet").to_pandas()
    entities = entities.rename(columns={"ts": "event_timestamp"})
    refs = [f"{name}:{c}" for name, cols in VIEWS.items() for c in cols]
    t1 = time.perf_counter()
    joined = store.get_historical_features(entity_df=entities, features=refs).to_df()
    t2 = time.perf_counter()
    return {
        "rows": len(joined),
        "columns": len(joined.columns),
        "join_s": t2 - t1,
        "setup_s": t1 - t0,
        "non_null_a0": int(joined["a0"].notna().sum()),
        "checksum": float(np.nansum(joined["c2"].to_numpy(dtype=float))),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "online":
        print(json.dumps(online(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
    elif mode == "setup":
        print(json.dumps(setup(sys.argv[2], Path(sys.argv[3]))))
    else:
        print(json.dumps(pit(Path(sys.argv[2]))))
