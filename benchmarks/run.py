"""Run every Keel benchmark and rewrite benchmarks/RESULTS.md (what ``make bench`` runs).

usage: .venv/bin/python benchmarks/run.py
       .venv/bin/python benchmarks/run.py --render RAW.json   (rewrite RESULTS.md from a raw run)

Benchmarks: serving (``benchmarks/serving/``), then the pipeline (``benchmarks/pipeline/``:
``keel run`` fresh and cached against a hand-written script). Environment knobs:

- ``ROUNDS`` (3): rounds; every figure is a median over rounds.
- ``DURATION`` (10): seconds of load per server and connection count.
- ``CONNS`` (1,8,64): wrk connection counts.
- ``WRK_MAX_REQ`` (2000000): count bound per wrk run (the time bound is DURATION).
- ``SERVERS`` (keel,keel_nolog,mlflow,http_floor): which servers; ``keel_nolog`` is
  ``keel serve --no-log``, a diagnostic that prices the prediction log.
- ``QUICK=1``: smoke check, 1 round of 3 s; written to ``benchmarks/.work/RESULTS-quick.md``
  so that it never replaces the real RESULTS.md.

Run nothing else heavy meanwhile: servers use CPU 0, wrk CPU 1 (a 2-core machine).
Raw per-round JSON goes to ``benchmarks/.work/results/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "serving"))
sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402
import report  # noqa: E402

from pipeline import bench as pipeline_bench  # noqa: E402

KNOBS = ("QUICK", "ROUNDS", "DURATION", "CONNS", "WRK_MAX_REQ", "SERVERS", "FLOOR_CALLS")
KEEL_PACKAGES = (
    "keel",
    "lightgbm",
    "numpy",
    "pandas",
    "pyarrow",
    "orjson",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the benchmarks' finally blocks


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(raw: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in KEEL_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    probe = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    banner = (probe.stdout + probe.stderr).split("\n", 1)[0]  # "wrk 4.1.0 [epoll] Copyright..."
    found["wrk"] = banner.split(" Copyright", 1)[0].removeprefix("wrk ").strip()
    mlflow = raw.get("mlflow")
    if mlflow:
        for name in ("mlflow", "lightgbm", "pandas"):
            found[f"{name} (MLflow venv)"] = mlflow[name]
    return found


def git_state() -> dict[str, str]:
    """Commit of the Keel checkout and a hash of uncommitted changes under src/ (to spot edits)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    diff = git("diff", "HEAD", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_dirty": "yes" if dirty else "no",
        "src_diff_sha256": hashlib.sha256((diff + dirty).encode()).hexdigest()[:12]
        if dirty
        else "",
        "src_mtime": max(
            (p.stat().st_mtime for p in (BENCH_DIR.parent / "src").rglob("*.py")), default=0.0
        ).__repr__(),
    }


def command() -> str:
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in KNOBS if k in os.environ)
    return (env + " " if env else "") + ".venv/bin/python benchmarks/run.py"


def write_results(raw: dict[str, Any], path: Path, started: float, finished: float) -> None:
    section, notes = report.render(raw)
    cfg = raw["config"]
    mach = raw.get("machine") or machine()
    loads = [r["loadavg"] for r in raw["rounds"]]
    notes.append(
        "The machine is shared with other agents: 1-minute load average at the start of each "
        f"round {', '.join(f'{x:.2f}' for x in loads)} (a quiet 2-core machine sits near 0; "
        "the benchmark itself adds about 2 while loading). Expect some noise; the rounds' "
        "spread (min to max) is in the detail table."
    )
    if cfg["quick"]:
        notes.insert(0, "QUICK smoke run (1 round, 3 s per level): not a result.")
    ver = versions(raw)
    git = raw.get("git", {})
    start, end = git.get("start", {}), git.get("end", {})
    source = f"Keel source: commit {start.get('commit', '?')}"
    source += " with uncommitted changes in src/" if start.get("src_dirty") == "yes" else ""
    if start and end and start != end:
        notes.append("src/ changed while the benchmark ran (others edit it concurrently).")
    out = [
        "# Keel benchmarks",
        "",
        f"Generated by `{raw.get('command') or command()}` "
        "(`make bench` runs it with the defaults) on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))}, "
        f"{(finished - started) / 60:.0f} min.",
        "",
        "## Machine and versions",
        "",
        f"- {mach['nproc']} cores ({mach['cpu']}), {mach['memory_gb']} GB RAM, "
        f"Linux {mach['kernel']}, Python {mach['python']}",
        f"- {source}",
        "- " + ", ".join(f"{k} {v}" for k, v in ver.items()),
        "",
        "## Serving: one 1-row request per call, UCI Adult LightGBM model",
        "",
        "Method. `keel init --example adult` + `keel run` in a fresh project; the registered "
        f"model ({raw['model']['n_trees']} trees, {raw['model']['n_features']} features after "
        "Keel's transform) is served by: (a) `keel serve` as shipped, prediction log ON; "
        "(b) `mlflow models serve --env-manager local -w 1` on THE SAME booster (exported with "
        "`model_to_string`, logged with `mlflow.lightgbm.log_model` to a local file store); "
        "(c) a bare ASGI app on uvicorn (uvloop, httptools) answering a constant: the HTTP "
        "floor; and, as a diagnostic, (d) `keel serve --no-log`. Each server is pinned to "
        "CPU 0 (`taskset`, one worker); wrk (one thread) is "
        f"pinned to CPU 1 and runs {cfg['duration_s']} s per connection count "
        f"({', '.join(map(str, cfg['conns']))}) after a {cfg['warmup_s']} s warm-up, bounded "
        f"in count too ({cfg['max_requests']:,} responses). Each server must first answer a "
        "real request with 200 and the in-process probability. "
        f"{cfg['rounds']} round(s), server order rotated per round; 127.0.0.1 only; servers "
        "stopped by process group. MLflow's request carries the already-transformed "
        f"{raw['model']['n_features']}-column feature vector (`dataframe_split`), so MLflow "
        "skips feature transformation: a small advantage to MLflow. Keel receives the raw "
        "14-field record and validates and transforms it. MLflow 3.17 refuses its file store "
        "unless `MLFLOW_ALLOW_FILE_STORE=true`, which is set for the export and the server. "
        "Logging stays at each server's default: MLflow's access log on; Keel's and the "
        "floor's access logs off.",
        "",
        section,
        "",
        *([pipeline_bench.render(raw["pipeline"]), ""] if "pipeline" in raw else []),
        "## Notes",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    path.write_text("\n".join(out))


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    if sys.argv[1:2] == ["--render"]:
        raw = json.loads(Path(sys.argv[2]).read_text())
        quick = raw["config"]["quick"]
        target = BENCH_DIR / ".work" / "RESULTS-quick.md" if quick else BENCH_DIR / "RESULTS.md"
        write_results(raw, target, raw["started"], raw["finished"])
        print(f"wrote {target}")
        return 0
    started = time.time()
    config = bench.Config.from_env()
    git_start = git_state()
    raw = bench.run(config)
    raw["pipeline"] = pipeline_bench.run(1 if config.quick else config.rounds)
    raw["git"] = {"start": git_start, "end": git_state()}
    raw["started"], raw["finished"] = started, time.time()
    raw["machine"] = machine()
    raw["command"] = command()
    results_dir = BENCH_DIR / ".work" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    (results_dir / f"serving-{stamp}.json").write_text(json.dumps(raw, indent=1))
    target = BENCH_DIR / ".work" / "RESULTS-quick.md" if config.quick else BENCH_DIR / "RESULTS.md"
    write_results(raw, target, started, raw["finished"])
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
