"""Tracking at scale: list/filter 100,000 runs in Keel's store vs MLflow's SQLite tracking store.

Both stores hold the same generated runs (``tracking_data.generate``) and answer the same five
queries (100 runs each, with their params, metrics and tags); each side runs in its own process
and venv. Stores are built once and cached under ``benchmarks/.work/training/``; a rerun only
times the queries. Knobs: ``TRACKING_RUNS`` (100000), ``TRACKING_REPS`` (200 samples at most
per query), ``TRACKING_BUDGET_S`` (10 s of sampling per query and side),
``TRACKING_MLFLOW_TIMEOUT_S`` (60: an MLflow query still running then is reported as "> 60 s").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tracking_data import QUERIES  # noqa: E402

WORK = HERE.parent / ".work" / "training"
KEEL_PYTHON = HERE.parents[1] / ".venv" / "bin" / "python"
MLFLOW_PYTHON = HERE.parent / ".peers" / "mlflow" / "bin" / "python"
PART = "tracking"
TITLE = "Tracking at scale: list and filter runs, Keel vs MLflow (SQLite)"
TIMEOUT_S = 1800


def run(quick: bool = False) -> dict[str, Any]:
    """Raw results: each side's store build (when it was built now) and query latencies."""
    runs = int(os.environ.get("TRACKING_RUNS", 10_000 if quick else 100_000))
    budget = os.environ.get("TRACKING_BUDGET_S", "3" if quick else "10")
    timeout = float(os.environ.get("TRACKING_MLFLOW_TIMEOUT_S", "20" if quick else "60"))
    reps = os.environ.get("TRACKING_REPS", "200")
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"runs": runs, "mlflow_timeout_s": timeout}
    keel_db, mlflow_db = WORK / f"keel-{runs}.db", WORK / f"mlflow-{runs}.db"
    keel = [str(KEEL_PYTHON), str(HERE / "tracking_keel.py"), str(keel_db), str(runs), "500"]
    result["keel"] = _json(_call([*keel, reps, budget], TIMEOUT_S))
    if not MLFLOW_PYTHON.exists():
        result["mlflow"] = {"error": f"{MLFLOW_PYTHON} is missing (see benchmarks/.peers/)"}
        return result
    mlflow = [str(MLFLOW_PYTHON), str(HERE / "tracking_mlflow.py"), str(mlflow_db), str(runs),
              "300", reps, budget]  # fmt: skip
    result["mlflow"] = _json(_call(mlflow, TIMEOUT_S))
    if "error" not in result["mlflow"]:
        result["mlflow"]["queries"] = [
            _json(_call([*mlflow, str(i)], timeout), {"query": QUERIES[i][0], "timed_out": True})
            for i in range(len(QUERIES))
        ]
    return result


def _call(command: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None


def _json(done: subprocess.CompletedProcess[str] | None,
          timed_out: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    if done is None:
        return timed_out or {"error": "timed out"}
    if done.returncode != 0:
        return {"error": done.stderr[-2000:] or f"exit {done.returncode}"}
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def render(raw: dict[str, Any]) -> str:
    """The RESULTS.md section: p50/p99 per query and side, and the ratio."""
    keel, mlflow = raw.get("keel", {}), raw.get("mlflow", {})
    lines = [f"### {TITLE}", ""]
    for side, result in (("Keel", keel), ("MLflow", mlflow)):
        if "error" in result:
            lines.append(f"- {side} failed: `{result['error'].strip().splitlines()[-1]}`")
    if "queries" not in keel or "queries" not in mlflow:
        return "\n".join(lines) + "\n"
    lines += [
        f"{raw['runs']:,} runs (6 params, 4 metrics, 2 tags each) in one store; every query "
        "returns 100 runs with their params, metrics and tags (Keel: `MetadataStore.search_runs` "
        "after parsing the filter; MLflow "
        f"{mlflow.get('mlflow', '')}: `MlflowClient.search_runs`). Latency in ms.",
        "",
        "| query | Keel p50 | Keel p99 | MLflow p50 | MLflow p99 | MLflow/Keel (p50) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    limit_ms = 1000 * raw["mlflow_timeout_s"]
    ratios = []
    for ours, theirs in zip(keel["queries"], mlflow["queries"], strict=True):
        if "p50_ms" in theirs:
            ratio = theirs["p50_ms"] / ours["p50_ms"]
            cells = f"{theirs['p50_ms']:.0f} | {theirs['p99_ms']:.0f} | {ratio:.0f}x"
        else:  # no answer within the timeout: a lower bound
            ratio = limit_ms / ours["p50_ms"]
            cells = f"> {limit_ms:.0f} | > {limit_ms:.0f} | > {ratio:.0f}x"
        ratios.append(ratio)
        lines.append(
            f"| {ours['query']}: `{ours['filter'] or ''}` {ours['sort'] or ''} "
            f"| {ours['p50_ms']:.1f} | {ours['p99_ms']:.1f} | {cells} |"
        )
    worst = max(q["p99_ms"] for q in keel["queries"])
    samples = [q["n"] for q in mlflow["queries"] if "n" in q]
    lines += [
        "",
        f"Worst Keel p99: {worst:.1f} ms (target <= 50 ms); smallest speedup over MLflow: "
        f"{min(ratios):.0f}x (target >= 20x). Samples per query: Keel "
        f"{min(q['n'] for q in keel['queries'])}+, MLflow {min(samples, default=0)}+ "
        f"(each MLflow query runs in its own process, stopped after "
        f"{raw['mlflow_timeout_s']:.0f} s).",
    ]
    for side, result in (("Keel", keel), ("MLflow", mlflow)):
        build = result.get("build", {})
        if build:
            lines.append(
                f"- {side} store: {result['size_mb']:.0f} MB; {build['api_runs']} runs through "
                f"the API at {build['api_ms_per_run']:.1f} ms per run, the other "
                f"{build['bulk_runs']:,} bulk-inserted in {build['bulk_s']:.0f} s"
                + (" (store reused from an earlier run)" if result.get("reused_store") else "")
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(render(result))
