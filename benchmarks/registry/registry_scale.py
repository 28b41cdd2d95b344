"""The registry at scale (issue 15): 10,000 versions over 100 models and 100,000 audit events;
p50/p99 of `models list`, `models show`, alias resolution and `audit` filters, each <= 20 ms.

The store is filled in bulk (one transaction per table: this measures reads, not 110,000
separate writes), then every operation runs through :class:`keel.registry.Registry` as the CLI
calls it: a pooled connection, the query, typed results. SQLite always; PostgreSQL too when
``KEEL_TEST_POSTGRES_URL`` is set (a fresh schema, dropped afterwards).

With ``--mlflow`` (the default whenever ``benchmarks/.peers/mlflow`` can be built, see
``benchmarks/serving/peers.py``) the same run then builds MLflow's registry with the same model
and version counts (through ``MlflowClient``, on SQLite and, when PostgreSQL is measured, on
PostgreSQL too, adding ``psycopg[binary]`` to that venv) in MLflow's own venv
(``registry_mlflow.py``, a subprocess that prints JSON), times the closest MLflow calls with the
same number of calls, and prints a side-by-side table per backend with Keel p99 / MLflow p99.
MLflow has no audit log: tag and run-id filters of ``search_model_versions`` stand in. Run::

    .venv/bin/python benchmarks/registry/registry_scale.py [--calls 300] [--json out.json]
        [--models 100 --versions 10000 --audit 100000] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from keel.registry.registry import Registry
from keel.store import MetadataStore
from keel.store.tables import aliases, audit_log, model_versions, models, utc_now
from keel.testing import postgres_schema

MODELS = 100
VERSIONS = 10_000
AUDIT = 100_000
TARGET_MS = 20.0
HERE = Path(__file__).resolve().parent
MLFLOW_SCRIPT = HERE / "registry_mlflow.py"
# Keel operation -> the MLflow call that stands for it (None: MLflow has nothing like it).
MLFLOW_PEERS: dict[str, str | None] = {
    "models list (100 models)": "search_registered_models()",
    "models show NAME (100 versions)": "get_registered_model + search_model_versions(name)",
    "models show NAME@VERSION": "get_model_version(name, v)",
    "resolve NAME@production": "get_model_version_by_alias(name, production)",
    "resolve NAME (latest)": "get_latest_versions(name)",
    "audit (newest 50)": None,
    "audit --target NAME": None,
    "audit --actor USER": "search_model_versions(tags.actor, max 50)",
    "audit --action ACTION": None,
    "audit --since 2d": None,
    "audit --target --action": "search_model_versions(name + tags.actor, max 50)",
}
ANALOGUES = {"audit --actor USER", "audit --target --action"}  # not the same operation
ACTORS = [f"user{i}" for i in range(20)]
ACTIONS = ["register", "promote", "rollback", "approve", "archive", "request_promotion"]


def fill(
    store: MetadataStore, n_models: int = MODELS, n_versions: int = VERSIONS, n_audit: int = AUDIT
) -> None:
    """100 models x 100 versions, production and staging on each, 100,000 audit rows."""
    rng = random.Random(7)
    end = utc_now()
    start = end - timedelta(days=365)
    per_model = n_versions // n_models
    with store.database.write() as conn:
        conn.execute(
            sa.insert(models),
            [
                {"name": f"model{m:03d}", "created_at": start, "description": ""}
                for m in range(n_models)
            ],
        )
        rows = [
            {
                "name": f"model{m:03d}",
                "version": v,
                "package_sha256": f"{m:03d}{v:061d}",
                "run_id": None,
                "metrics": {"roc_auc": rng.random(), "accuracy": rng.random()},
                "created_at": start + timedelta(minutes=m * per_model + v),
            }
            for m in range(n_models)
            for v in range(1, per_model + 1)
        ]
        for chunk in range(0, len(rows), 2000):
            conn.execute(sa.insert(model_versions), rows[chunk : chunk + 2000])
        conn.execute(
            sa.insert(aliases),
            [
                {"name": f"model{m:03d}", "alias": alias, "version": version}
                for m in range(n_models)
                for alias, version in (("production", per_model - 1), ("staging", per_model))
            ],
        )
        audit = [
            {
                "at": start + timedelta(seconds=i * 300),
                "actor": rng.choice(ACTORS),
                "action": rng.choice(ACTIONS),
                "target": f"model{rng.randrange(n_models):03d}",
                "details": {"version": rng.randrange(1, per_model + 1), "reason": "bench"},
            }
            for i in range(n_audit)
        ]
        for chunk in range(0, len(audit), 5000):
            conn.execute(sa.insert(audit_log), audit[chunk : chunk + 5000])
        conn.execute(sa.text("ANALYZE"))  # planner statistics, as a long-lived store has


def timed(call: Callable[[], Any], calls: int) -> dict[str, float]:
    for _ in range(5):
        call()
    samples = []
    for _ in range(calls):
        begin = time.perf_counter()
        call()
        samples.append((time.perf_counter() - begin) * 1000)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


def measure(
    url: str,
    calls: int,
    n_models: int = MODELS,
    n_versions: int = VERSIONS,
    n_audit: int = AUDIT,
) -> dict[str, dict[str, float]]:
    with MetadataStore(url) as store:
        begin = time.perf_counter()
        fill(store, n_models, n_versions, n_audit)
        print(f"  filled in {time.perf_counter() - begin:.1f} s", file=sys.stderr)
        reg = Registry(store.database, actor="bench")
        rng = random.Random(11)
        name = lambda: f"model{rng.randrange(n_models):03d}"  # noqa: E731
        per_model = n_versions // n_models
        since = utc_now() - timedelta(days=2)
        cases: dict[str, Callable[[], Any]] = {
            "models list (100 models)": reg.models,
            "models show NAME (100 versions)": lambda: reg.versions(name()),
            "models show NAME@VERSION": lambda: reg.show(name(), rng.randrange(1, per_model + 1)),
            "resolve NAME@production": lambda: reg.resolve(f"{name()}@production"),
            "resolve NAME (latest)": lambda: reg.resolve(f"{name()}@latest"),
            "audit (newest 50)": lambda: reg.audit(limit=50),
            "audit --target NAME": lambda: reg.audit(target=name(), limit=50),
            "audit --actor USER": lambda: reg.audit(actor=rng.choice(ACTORS), limit=50),
            "audit --action ACTION": lambda: reg.audit(action=rng.choice(ACTIONS), limit=50),
            "audit --since 2d": lambda: reg.audit(since=since, limit=50),
            "audit --target --action": lambda: reg.audit(
                target=name(), action=rng.choice(ACTIONS), limit=50
            ),
        }
        found = {}
        for label, call in cases.items():
            found[label] = timed(call, calls)
            print(f"  {label}: {found[label]}", file=sys.stderr)
        return found


def mlflow_python() -> tuple[Path | None, str]:
    """MLflow's venv (built or reused by ``benchmarks/serving/peers.py``) and a note."""
    sys.path.insert(0, str(HERE.parent / "serving"))
    from peers import ensure_venv

    venv = ensure_venv("mlflow")
    return venv.python, venv.note


def ensure_psycopg(python: Path) -> str | None:
    """MLflow on PostgreSQL needs psycopg in its venv: install it there once; None when ready."""
    probe = [str(python), "-c", "import psycopg"]
    if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return None
    install = [str(python), "-m", "pip", "install", "-q", "psycopg[binary]"]
    done = subprocess.run(install, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        return f"psycopg did not install in MLflow's venv: {done.stderr.strip()[-300:]}"
    return None


def measure_mlflow(
    python: Path, store: str | None, calls: int, n_models: int, n_versions: int, budget_s: float
) -> dict[str, Any]:
    """MLflow's registry with the same counts in MLflow's venv; ``{"error": ...}`` on failure.

    ``store``: a PostgreSQL URL, or None for SQLite in a temporary directory.
    """
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(python), str(MLFLOW_SCRIPT), store or tmp, str(n_models),
                   str(n_versions), str(calls), str(budget_s)]  # fmt: skip
        try:
            done = subprocess.run(
                command, stdout=subprocess.PIPE, text=True, timeout=budget_s + 1800, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": "timed out"}
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": f"exit {done.returncode} (see its stderr above)"}
    parsed: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def cell(found: dict[str, float]) -> str:
    return f"{found['p50_ms']:.2f} / {found['p99_ms']:.2f}"


def comparison(keel: dict[str, dict[str, float]], mlflow: dict[str, Any]) -> list[str]:
    """Markdown rows: Keel (SQLite) beside MLflow's closest call (SQLite), Keel p99 / MLflow p99."""
    theirs = mlflow["results"]
    lines = [
        f"| Keel operation | Keel p50 / p99 ms | MLflow {mlflow['mlflow']} call "
        "| MLflow p50 / p99 ms | Keel p99 / MLflow p99 |",
        "|---|---|---|---|---|",
    ]
    used = set()
    for label, ours in keel.items():
        peer = MLFLOW_PEERS.get(label)
        if peer is None or peer not in theirs:
            lines.append(f"| {label} | {cell(ours)} | — (no audit log) | — | — |")
            continue
        used.add(peer)
        short = f" (n={theirs[peer]['n']})" if theirs[peer]["n"] < mlflow["calls"] else ""
        kind = " (analogue)" if label in ANALOGUES else ""
        ratio = ours["p99_ms"] / theirs[peer]["p99_ms"]
        lines.append(
            f"| {label} | {cell(ours)} | `{peer}`{kind}{short} | {cell(theirs[peer])} "
            f"| {ratio:.2f} |"
        )
    for peer, found in theirs.items():
        if peer not in used:
            lines.append(f"| — | — | `{peer}` | {cell(found)} | — |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--models", type=int, default=MODELS)
    parser.add_argument("--versions", type=int, default=VERSIONS)
    parser.add_argument("--audit", type=int, default=AUDIT)
    parser.add_argument(
        "--mlflow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build and time MLflow's registry with the same counts (its own venv)",
    )
    parser.add_argument(
        "--mlflow-build-budget",
        type=float,
        default=600.0,
        help="seconds; MLflow's build gives up when its pace projects past this",
    )
    args = parser.parse_args()
    counts = (args.models, args.versions, args.audit)
    mlflow_counts = (args.models, args.versions, args.mlflow_build_budget)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite", file=sys.stderr)
        results["sqlite"] = measure(f"sqlite:///{tmp}/keel.db", args.calls, *counts)
    pg = os.environ.get("KEEL_TEST_POSTGRES_URL")
    if pg:
        print("PostgreSQL", file=sys.stderr)
        with postgres_schema(pg) as url:
            results["postgresql"] = measure(url, args.calls, *counts)
    backends = list(results)
    mlflow: dict[str, dict[str, Any]] = {}
    if args.mlflow:
        python, note = mlflow_python()
        for backend in backends:
            print(f"MLflow ({backend})", file=sys.stderr)
            if python is None:
                mlflow[backend] = {"error": f"no MLflow venv: {note}"}
            elif backend == "sqlite":
                mlflow[backend] = measure_mlflow(python, None, args.calls, *mlflow_counts)
            elif problem := ensure_psycopg(python):
                mlflow[backend] = {"error": problem}
            else:
                assert pg is not None
                with postgres_schema(pg) as url:
                    mlflow[backend] = measure_mlflow(python, url, args.calls, *mlflow_counts)
    print(
        f"{args.versions:,} versions over {args.models} models, {args.audit:,} audit events, "
        f"{args.calls} calls per operation"
    )
    print(f"| operation | {' | '.join(f'{b} p50 / p99 ms' for b in backends)} | target |")
    print(f"|---|{'---|' * len(backends)}---|")
    for label in results["sqlite"]:
        cells = [cell(results[b][label]) for b in backends]
        worst = max(results[b][label]["p99_ms"] for b in backends)
        verdict = "PASS" if worst <= TARGET_MS else "FAIL"
        print(f"| {label} | {' | '.join(cells)} | p99 <= {TARGET_MS:g}: **{verdict}** |")
    for backend, theirs in mlflow.items():
        print()
        if "error" in theirs:
            print(f"MLflow ({backend}) not measured: {theirs['error']}")
            continue
        build = theirs["build"]
        size = f", {theirs['size_mb']:.1f} MB" if theirs.get("size_mb") else ""
        print(
            f"Keel vs MLflow {theirs['mlflow']}, both on {backend}: MLflow's "
            f"{theirs['versions']:,} versions built through MlflowClient in "
            f"{build['versions_s']:.0f} s ({build['ms_per_version']:.1f} ms per version){size}"
        )
        print("\n".join(comparison(results[backend], theirs)))
    if mlflow:
        results["mlflow"] = mlflow
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
