"""MLflow's side of the tracking benchmark: a SQLite tracking store with the same N runs.

usage: python tracking_mlflow.py DB N API_RUNS REPS BUDGET_S [QUERY_INDEX]   (MLflow's venv)

The first API_RUNS runs go through ``MlflowClient`` (``create_run`` + ``log_batch`` +
``set_terminated``, the fast path). Logging all 100,000 that way takes hours, so the rest are
written with executemany into MLflow's own tables, row for row what those calls write (run,
params, metrics, latest_metrics, tags incl. ``mlflow.runName``), then the queries go through
``MlflowClient.search_runs`` like every MLflow UI and API call.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking_data import LIMIT, QUERIES, VERSION, generate, percentile

warnings.filterwarnings("ignore")
logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)

from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

BATCH = 5000
EXPERIMENT = "keel-benchmark"


def build(db: Path, n: int, api_runs: int) -> dict[str, Any]:
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    started = time.perf_counter()
    experiment = client.create_experiment(EXPERIMENT, artifact_location=str(db.parent / "mlruns"))
    setup_s = time.perf_counter() - started
    generated = generate(n)
    started = time.perf_counter()
    for _, run in zip(range(api_runs), generated, strict=False):
        made = client.create_run(experiment, start_time=run["start_ms"], tags=run["tags"])
        ts = run["start_ms"]
        client.log_batch(
            made.info.run_id,
            metrics=[Metric(k, v, ts, 0) for k, v in run["metrics"].items()],
            params=[Param(k, str(v)) for k, v in run["params"].items()],
            tags=[],
        )
        status = "FAILED" if run["status"] == "failed" else "FINISHED"
        client.set_terminated(made.info.run_id, status, end_time=ts + run["duration_ms"])
    api_s = time.perf_counter() - started
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    template = conn.execute("SELECT * FROM runs LIMIT 1").fetchone()
    batch: list[dict[str, Any]] = []
    for run in generated:
        batch.append(run)
        if len(batch) == BATCH:
            _insert(conn, batch, template, experiment)
            batch = []
    if batch:
        _insert(conn, batch, template, experiment)
    conn.commit()
    conn.close()
    bulk_s = time.perf_counter() - started
    return {"setup_s": setup_s, "api_runs": api_runs, "api_s": api_s,
            "api_ms_per_run": 1000 * api_s / max(api_runs, 1), "bulk_runs": n - api_runs,
            "bulk_s": bulk_s}  # fmt: skip


def _insert(conn: sqlite3.Connection, batch: list[dict[str, Any]], template: tuple[Any, ...],
            experiment: str) -> None:  # fmt: skip
    runs, params, metrics, tags = [], [], [], []
    artifact_root = template[11].rsplit("/", 2)[0]
    for run in batch:
        run_id = uuid.uuid4().hex
        name = f"run-{run['i']}"
        status = "FAILED" if run["status"] == "failed" else "FINISHED"
        ts = run["start_ms"]
        runs.append((run_id, name, template[2], template[3], template[4], template[5], status, ts,
                     ts + run["duration_ms"], template[9], "active",
                     f"{artifact_root}/{run_id}/artifacts", int(experiment), None))  # fmt: skip
        params += [(k, str(v), run_id) for k, v in run["params"].items()]
        metrics += [(k, v, ts, run_id, 0, 0) for k, v in run["metrics"].items()]
        tags += [(k, v, run_id) for k, v in {**run["tags"], "mlflow.runName": name}.items()]
    conn.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
    conn.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
    conn.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                     "VALUES (?,?,?,?,?,?)", metrics)  # fmt: skip
    conn.executemany("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                     "VALUES (?,?,?,?,?,?)", metrics)  # fmt: skip
    conn.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)


def time_query(db: Path, index: int, reps: int, budget_s: float) -> dict[str, Any]:
    """Latency of one query (the orchestrator runs each in its own process, with a timeout)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    name, _, _, mlflow_filter, order_by = QUERIES[index]
    # A query can take minutes here: the first call is a sample too, and sampling stops at
    # the budget.
    samples: list[float] = []
    rows = 0
    deadline = time.perf_counter() + budget_s
    while not samples or (len(samples) < reps and time.perf_counter() < deadline):
        started = time.perf_counter()
        rows = len(client.search_runs([experiment], filter_string=mlflow_filter,
                                      order_by=order_by, max_results=LIMIT))  # fmt: skip
        samples.append(1000 * (time.perf_counter() - started))
    return {"query": name, "filter": mlflow_filter, "order_by": order_by, "rows": rows,
            "n": len(samples), "p50_ms": percentile(samples, 50),
            "p99_ms": percentile(samples, 99), "max_ms": max(samples)}  # fmt: skip


def main() -> None:
    """Without QUERY_INDEX: build the store if needed and print its facts; with it: time it."""
    db, n, api_runs, reps, budget = (Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                     int(sys.argv[4]), float(sys.argv[5]))  # fmt: skip
    if len(sys.argv) > 6:
        print(json.dumps(time_query(db, int(sys.argv[6]), reps, budget)))
        return
    marker = db.with_suffix(".json")
    cached = json.loads(marker.read_text()) if marker.exists() and db.exists() else None
    if cached is None or cached.get("version") != VERSION or cached.get("runs") != n:
        db.unlink(missing_ok=True)
        db.parent.mkdir(parents=True, exist_ok=True)
        cached = {"version": VERSION, "runs": n, "build": build(db, n, api_runs)}
        marker.write_text(json.dumps({**cached, "timed": False}))
    import mlflow

    size_mb = db.stat().st_size / 2**20
    print(json.dumps({**cached, "reused_store": cached.get("timed", True), "size_mb": size_mb,
                      "mlflow": mlflow.__version__}))  # fmt: skip
    marker.write_text(json.dumps({**cached, "timed": True}))


if __name__ == "__main__":
    main()
