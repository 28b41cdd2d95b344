"""Keel's side of the tracking benchmark: build (or reuse) a store with N runs, time queries.

usage: python tracking_keel.py DB N API_RUNS REPS BUDGET_S   (prints one JSON document)

The first API_RUNS runs go through the public API (``start_run`` + ``finish_run(facts=...)``,
one transaction each, as the pipeline records them); the rest are bulk-inserted into the same
tables with the rows Keel's own ``fact_rows`` builds, so the store is what the API would leave.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking_data import LIMIT, QUERIES, VERSION, generate, percentile

from keel.store import MetadataStore
from keel.store.environment import capture_environment, environment_id
from keel.store.tables import environments, runs
from keel.store.tracking_tables import fact_rows, summarize
from keel.tracking import parse_filter, parse_sort

BATCH = 5000
SCHEMA = 2  # bump when Keel's tables change: the cached store is rebuilt


def build(db: Path, n: int, api_runs: int) -> dict[str, Any]:
    """Fill a fresh store; seconds for the API part and for the bulk part."""
    url = f"sqlite:///{db}"
    generated = generate(n)
    with MetadataStore(url) as store:
        started = time.perf_counter()
        for _, run in zip(range(api_runs), generated, strict=False):
            made = store.start_run("train", cache_key=f"k{run['i']}", config_hash="c",
                                   code_version="v", tags=run["tags"])  # fmt: skip
            facts = {"params": run["params"], "metrics": run["metrics"]}
            store.finish_run(made.id, status=run["status"], facts=facts, cpu_seconds=1.0,
                             peak_memory_mb=100.0)  # fmt: skip
        api_s = time.perf_counter() - started
    env = capture_environment()
    env_id = environment_id(env)
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        if conn.scalar(sa.select(environments.c.id).where(environments.c.id == env_id)) is None:
            conn.execute(sa.insert(environments).values(id=env_id, captured_at=datetime.now(UTC),
                                                        data=env))  # fmt: skip
        batch: list[dict[str, Any]] = []
        for run in generated:
            batch.append(run)
            if len(batch) == BATCH:
                _insert(conn, batch, env_id)
                batch = []
        if batch:
            _insert(conn, batch, env_id)
    bulk_s = time.perf_counter() - started
    engine.dispose()
    return {"api_runs": api_runs, "api_s": api_s, "api_ms_per_run": 1000 * api_s / max(api_runs, 1),
            "bulk_runs": n - api_runs, "bulk_s": bulk_s}  # fmt: skip


def _insert(conn: sa.Connection, batch: list[dict[str, Any]], env_id: str) -> None:
    run_rows = []
    facts: dict[sa.Table, list[dict[str, Any]]] = {}
    for run in batch:
        run_id = uuid.uuid4().hex
        started = datetime.fromtimestamp(run["start_ms"] / 1000, UTC)
        duration = run["duration_ms"] / 1000
        fact = {"params": run["params"], "metrics": run["metrics"], "tags": run["tags"]}
        run_rows.append({
            "id": run_id, "step": "train", "status": run["status"], "cache_key": f"k{run['i']}",
            "config_hash": "c", "code_version": "v", "started_at": started,
            "ended_at": started + timedelta(seconds=duration), "cpu_seconds": 1.0,
            "peak_memory_mb": 100.0, "error": None, "params": {"facts": fact},
            "duration_seconds": duration, "environment_id": env_id,
            "summary": summarize(fact, None),
        })  # fmt: skip
        for table, rows in fact_rows(run_id, fact).items():
            facts.setdefault(table, []).extend(rows)
    conn.execute(sa.insert(runs), run_rows)
    for table, rows in facts.items():
        conn.execute(sa.insert(table), rows)


def time_queries(db: Path, reps: int, budget_s: float) -> list[dict[str, Any]]:
    """Latency of each query through MetadataStore.search_runs (parsing included)."""
    results = []
    with MetadataStore(f"sqlite:///{db}") as store:
        for name, keel_filter, keel_sort, _, _ in QUERIES:

            def query(
                keel_filter: str | None = keel_filter, keel_sort: str | None = keel_sort
            ) -> int:
                conditions, order = parse_filter(keel_filter), parse_sort(keel_sort)
                return len(store.search_runs(conditions, order=order, limit=LIMIT))

            for _ in range(3):
                rows = query()
            samples = []
            deadline = time.perf_counter() + budget_s
            while len(samples) < reps and (len(samples) < 5 or time.perf_counter() < deadline):
                started = time.perf_counter()
                rows = query()
                samples.append(1000 * (time.perf_counter() - started))
            results.append({"query": name, "filter": keel_filter, "sort": keel_sort, "rows": rows,
                            "n": len(samples), "p50_ms": percentile(samples, 50),
                            "p99_ms": percentile(samples, 99), "max_ms": max(samples)})  # fmt: skip
    return results


def main() -> None:
    db, n, api_runs, reps, budget = (Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                     int(sys.argv[4]), float(sys.argv[5]))  # fmt: skip
    marker = db.with_suffix(".json")
    cached = json.loads(marker.read_text()) if marker.exists() and db.exists() else None
    if cached is None or cached.get("version") != [VERSION, SCHEMA] or cached.get("runs") != n:
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
        db.parent.mkdir(parents=True, exist_ok=True)
        cached = {"version": [VERSION, SCHEMA], "runs": n, "build": build(db, n, api_runs)}
        marker.write_text(json.dumps(cached))
    result = {**cached, "reused_store": "queries" in cached, "size_mb": db.stat().st_size / 2**20}
    result["queries"] = time_queries(db, reps, budget)
    marker.write_text(json.dumps({**cached, "queries": True}))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
