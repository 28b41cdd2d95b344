"""MLflow's side of the registry-at-scale benchmark (issue 15); run by the MLflow venv's python.

usage: python registry_mlflow.py STORE MODELS VERSIONS CALLS [BUILD_BUDGET_S [CASE_BUDGET_S]]

STORE is a directory (the backend store is ``STORE/mlflow.db``, SQLite) or a SQLAlchemy
PostgreSQL URL (``postgresql+psycopg://...``; needs ``psycopg`` in this venv). Builds an MLflow
model registry there through
``MlflowClient`` only, as a user's code does: MODELS registered models, VERSIONS model versions
spread evenly over them (``create_model_version`` with a dummy source URI, a fresh run id and an
``actor`` tag, no artifacts, ``await_creation_for=0``), then aliases ``production`` (the
second-newest version) and ``staging`` (the newest) on every model, as Keel's side has. The
build stops with an error when, after the first 2% of versions, its pace projects past
BUILD_BUDGET_S (default 600): rerun with smaller counts.

Then it times the operations that stand for Keel's: CALLS calls each after 5 warm-up calls, a
random model/user per call (``random.Random(11)``), p50/p99 in ms. A case still sampling after
CASE_BUDGET_S (default 120) stops there and reports its sample count ``n``.

MLflow has no audit log: the closest analogue is ``search_model_versions`` filtered by a tag
(every version carries ``actor``, one of 20 users) or by run id, ``max_results=50`` like
Keel's ``LIMIT 50``. Prints one JSON object (the last line of stdout); progress goes to stderr.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")
logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

ACTORS = [f"user{i}" for i in range(20)]
SOURCE = "file:///nonexistent/keel-benchmark/model"  # no artifacts: the registry rows only


def build(
    client: MlflowClient, models: int, versions: int, budget_s: float
) -> tuple[dict[str, Any], list[str]]:
    """The registry through the client; returns build facts and every version's run id."""
    rng = random.Random(7)
    per_model = versions // models
    started = time.perf_counter()
    for m in range(models):
        client.create_registered_model(f"model{m:03d}")
    models_s = time.perf_counter() - started
    run_ids: list[str] = []
    started = time.perf_counter()
    check_at = max(1, versions // 50)
    # Round-robin over the models, as versions arrive in a live registry.
    for _ in range(per_model):
        for m in range(models):
            run_id = uuid.uuid4().hex
            client.create_model_version(
                f"model{m:03d}",
                SOURCE,
                run_id=run_id,
                tags={"actor": rng.choice(ACTORS)},
                await_creation_for=0,
            )
            run_ids.append(run_id)
            if len(run_ids) == check_at:
                projected = (time.perf_counter() - started) * per_model * models / check_at
                print(f"  {check_at} versions; projected {projected:.0f} s", file=sys.stderr)
                if projected > budget_s:
                    raise SystemExit(
                        f"building {per_model * models} versions would take ~{projected:.0f} s "
                        f"(> {budget_s:.0f} s budget): rerun with fewer versions"
                    )
    versions_s = time.perf_counter() - started
    started = time.perf_counter()
    for m in range(models):
        client.set_registered_model_alias(f"model{m:03d}", "production", per_model - 1)
        client.set_registered_model_alias(f"model{m:03d}", "staging", per_model)
    aliases_s = time.perf_counter() - started
    facts = {
        "models_s": models_s,
        "versions_s": versions_s,
        "ms_per_version": 1000 * versions_s / max(len(run_ids), 1),
        "aliases_s": aliases_s,
    }
    return facts, run_ids


def timed(call: Callable[[], Any], calls: int, budget_s: float) -> dict[str, float]:
    """Keel's ``registry_scale.timed``, plus a time budget (``n`` = samples taken)."""
    for _ in range(5):
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < calls and (not samples or time.perf_counter() < deadline):
        begin = time.perf_counter()
        call()
        samples.append((time.perf_counter() - begin) * 1000)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "n": len(samples),
    }


def measure(
    client: MlflowClient, models: int, versions: int, run_ids: list[str], calls: int, budget: float
) -> dict[str, dict[str, float]]:
    rng = random.Random(11)
    per_model = versions // models
    name = lambda: f"model{rng.randrange(models):03d}"  # noqa: E731

    def show_model() -> None:
        client.get_registered_model(model := name())
        client.search_model_versions(f"name = '{model}'")

    def versions_of(model: str) -> int:
        return len(client.search_model_versions(f"name = '{model}'"))

    # Sanity: the counts are what Keel's side has.
    assert len(client.search_registered_models(max_results=1000)) == models
    assert versions_of("model000") == per_model
    cases: dict[str, Callable[[], Any]] = {
        "search_registered_models()": lambda: client.search_registered_models(max_results=1000),
        "get_registered_model + search_model_versions(name)": show_model,
        "get_model_version(name, v)": lambda: client.get_model_version(
            name(), str(rng.randrange(1, per_model + 1))
        ),
        "get_model_version_by_alias(name, production)": lambda: client.get_model_version_by_alias(
            name(), "production"
        ),
        "get_latest_versions(name)": lambda: client.get_latest_versions(name()),
        "search_model_versions(tags.actor, max 50)": lambda: client.search_model_versions(
            f"tags.actor = '{rng.choice(ACTORS)}'", max_results=50
        ),
        "search_model_versions(name + tags.actor, max 50)": lambda: client.search_model_versions(
            f"name = '{name()}' AND tags.actor = '{rng.choice(ACTORS)}'", max_results=50
        ),
        "search_model_versions(run_id, max 50)": lambda: client.search_model_versions(
            f"run_id = '{rng.choice(run_ids)}'", max_results=50
        ),
    }
    found = {}
    for label, call in cases.items():
        found[label] = timed(call, calls, budget)
        print(f"  {label}: {found[label]}", file=sys.stderr)
    return found


def main() -> None:
    store, models, versions, calls = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    build_budget = float(sys.argv[5]) if len(sys.argv) > 5 else 600.0
    case_budget = float(sys.argv[6]) if len(sys.argv) > 6 else 120.0
    db = None if "://" in store else Path(store) / "mlflow.db"
    uri = store if db is None else f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    started = time.perf_counter()
    client.search_registered_models(max_results=1)  # creates the schema (alembic migrations)
    setup_s = time.perf_counter() - started
    facts, run_ids = build(client, models, versions, build_budget)
    print(f"  built in {facts['versions_s']:.1f} s ({facts['ms_per_version']:.1f} ms/version)",
          file=sys.stderr)  # fmt: skip
    results = measure(client, models, versions, run_ids, calls, case_budget)
    size_mb = None if db is None else db.stat().st_size / 2**20
    print(
        json.dumps(
            {
                "mlflow": mlflow.__version__,
                "backend": "postgresql" if db is None else "sqlite",
                "models": models,
                "versions": versions,
                "calls": calls,
                "build": {"setup_s": setup_s, **facts},
                "size_mb": size_mb,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
