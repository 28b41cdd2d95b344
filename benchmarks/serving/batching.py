"""Adaptive batching benchmark: ``keel serve`` with ``serve.batching: off`` vs ``auto``.

Same Adult project and 1-row request as ``bench.py``. Two copies of the trained project differ
only in ``serve.batching``; each server runs pinned to CPU 0 (``taskset``, one worker, the
prediction log on, loopback: auth off), wrk (one thread) pinned to CPU 1 loads it at each
connection count for DURATION seconds after a short warm-up; the servers alternate, the order
rotated per round. After each load ``/metrics`` is read for the batches formed (requests per
batch and the time requests waited in the batch queue). Only 127.0.0.1 is used; servers are
stopped by process group, always.

The HTTP figures on a shared 2-core machine move by tens of percent with the other load, so the
same servers are also driven in process (``INPROCESS=1``, or ``--in-process``): the
``ServerApp`` of each project copy through its ASGI entry (as ``overhead.py`` does), N requests
from 1, 8 and 64 concurrent clients, CPU seconds of all threads per request and wall-clock
requests per second, the best of ROUNDS interleaved rounds; pin it with ``taskset -c 0``.

Run: ``nice .venv/bin/python benchmarks/serving/batching.py`` (env: ROUNDS=3, DURATION=5,
CONNS=1,8,64, MODES=off,auto; also auto-nowait, on). It reuses
``benchmarks/.work/serving/project`` when ``bench.py`` made one, else trains a fresh project
(``keel init --example adult`` + ``keel run``). Prints a Markdown table and writes
``benchmarks/.work/batching/results.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import overhead  # noqa: E402

WORK = bench.BENCH_DIR / ".work" / "batching"
# server variants: name -> its serve: settings (MODES=off,auto,auto-nowait chooses)
SETTINGS = {
    "off": "  batching: off\n",
    "auto": "  batching: auto\n",
    "auto-nowait": "  batching: auto\n  max_batch_wait_ms: 0\n",
    "on": "  batching: on\n",
}
MODES = tuple(os.environ.get("MODES", "off,auto").split(","))


def scope_of(conc: int) -> dict[str, Any]:
    """A request's scope as Keel's HTTP protocol gives it with ``conc`` busy connections."""
    scope = overhead.scope(False)
    scope["keel.connections"] = (set(range(conc)), {})
    scope["keel.body_complete"] = True  # the body arrived with the headers
    return scope


def project_copies(log: Path) -> dict[str, Path]:
    """One trained project per batching mode (its own registry and prediction log)."""
    WORK.mkdir(parents=True, exist_ok=True)
    source = bench.WORK / "project"
    if not (source / ".keel").exists():
        source = bench.make_project(WORK, log)
    copies = {}
    for mode in MODES:
        target = WORK / f"project_{mode}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("predictions"))
        config = target / "keel.yaml"
        text = config.read_text()
        assert "serve:\n" in text, "keel.yaml has no serve: section"
        config.write_text(text.replace("serve:\n", "serve:\n" + SETTINGS[mode], 1))
        copies[mode] = target
    return copies


def scrape(base: str) -> dict[str, float]:
    """The batch metrics of a running server."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    names = ("keel_batch_size_count", "keel_batch_size_sum", "keel_batch_wait_seconds_sum",
             'keel_batch_wait_seconds_bucket{le="0.0001"}')  # fmt: skip
    for name in names:
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        out[name] = float(found[1]) if found else 0.0
    return out


def run_server(config: bench.Config, mode: str, project: Path, body: Path, log: Path) -> dict:
    """Start one server, check its answer, load it at each connection count, stop it."""
    port = bench.free_port()
    base = f"http://{bench.HOST}:{port}"
    url = f"{base}/v1/models/adult/predict"
    cmd = [bench.keel_bin("keel"), "serve", "--project", str(project), "--host", bench.HOST]
    cmd += ["--port", str(port)]
    server = bench.Server(
        key=f"batching_{mode}",
        label=mode,
        cmd=cmd,
        path="/v1/models/adult/predict",
        body_file=body,
        check=lambda raw: None if b'"probabilities"' in raw else "no probabilities",
    )
    record: dict[str, Any] = {"loadavg_before": os.getloadavg()[0], "loads": {}}
    started = time.monotonic()
    with bench.running(server, port, log) as proc:
        record["startup_s"] = bench.wait_ready(proc, server, url, started)
        bench.wrk(config, url, body, 8, config.warmup_s)
        for conns in config.conns:
            before = scrape(base)
            load = bench.wrk(config, url, body, conns, config.duration_s)
            after = scrape(base)
            batches = after["keel_batch_size_count"] - before["keel_batch_size_count"]
            requests = after["keel_batch_size_sum"] - before["keel_batch_size_sum"]
            waited = after["keel_batch_wait_seconds_sum"] - before["keel_batch_wait_seconds_sum"]
            load["mean_batch"] = requests / batches if batches else None
            load["mean_wait_us"] = waited / requests * 1e6 if requests else None
            quick = 'keel_batch_wait_seconds_bucket{le="0.0001"}'
            load["waits_under_100us_pct"] = (
                100 * (after[quick] - before[quick]) / requests if requests else None
            )
            record["loads"][str(conns)] = load
        if proc.poll() is not None:
            raise RuntimeError(f"the {mode} server died under load (code {proc.returncode})")
    record["loadavg_after"] = os.getloadavg()[0]
    return record


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def table(rounds: list[dict[str, Any]], conns: tuple[int, ...]) -> str:
    lines = [
        "| conns | batching | req/s (min-max) | p50 ms | p99 ms | requests per batch | "
        "batch-queue wait µs: mean, share <= 100 µs | non-2xx / errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in conns:
        for mode in MODES:
            loads = [r[mode]["loads"][str(c)] for r in rounds if str(c) in r[mode]["loads"]]
            rps = [load["rps"] for load in loads]
            batch = [load["mean_batch"] for load in loads if load["mean_batch"] is not None]
            wait = [load["mean_wait_us"] for load in loads if load["mean_wait_us"] is not None]
            share = [x["waits_under_100us_pct"] for x in loads if x.get("waits_under_100us_pct")]
            bad = sum(load["not_2xx"] + load["errors"] for load in loads)
            lines.append(
                f"| {c} | {mode} | {median(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) | "
                f"{median([x['p50_us'] for x in loads]) / 1000:.3g} | "
                f"{median([x['p99_us'] for x in loads]) / 1000:.3g} | "
                f"{f'{median(batch):.1f}' if batch else '- (unbatched)'} | "
                f"{f'{median(wait):.0f}, {median(share):.1f} %' if wait else '-'} | {bad} |"
            )
    return "\n".join(lines)


async def in_process(copies: dict[str, Path], n: int, rounds: int) -> dict[str, Any]:
    """CPU µs per request and requests/s through each server's ASGI entry, best of rounds."""
    from dataclasses import replace

    from keel.project import Project
    from keel.serve.app import create_app

    apps = {}
    for mode in MODES:
        with Project(copies[mode]) as project:
            app = create_app(project, reload=False)
        app.settings = replace(app.settings, slo_p99_ms=1e9)  # cost, not shedding
        if app.log is not None:
            app.log.start()
        apps[mode] = app
    result: dict[str, Any] = {"n": n, "rounds": rounds}
    try:
        for conc in (1, 8, 64):
            cpu: dict[str, float] = {}
            rps: dict[str, float] = {}
            for _ in range(rounds):
                for mode, app in apps.items():
                    await overhead.drive(app, scope_of(conc), n // 10, conc)  # warm
                    started = time.perf_counter()
                    per = await overhead.drive(app, scope_of(conc), n, conc)
                    wall = time.perf_counter() - started
                    cpu[mode] = min(cpu.get(mode, per), per)
                    rps[mode] = max(rps.get(mode, 0.0), (n // conc * conc) / wall)
            result[f"c={conc}"] = {
                "cpu_us_per_request": {k: round(v * 1e6, 1) for k, v in cpu.items()},
                "requests_per_s": {k: round(v) for k, v in rps.items()},
            }
    finally:
        for app in apps.values():
            if app.log is not None:
                app.log.close()
            app._workers.close()
    return result


def main() -> None:
    config = bench.Config.from_env()
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "servers.log"
    copies = project_copies(log)
    if os.environ.get("INPROCESS") or "--in-process" in sys.argv:
        import asyncio

        n = int(os.environ.get("N", "4096"))
        measured = asyncio.run(in_process(copies, n, config.rounds))
        (WORK / "in_process.json").write_text(json.dumps(measured, indent=1))
        print(json.dumps(measured, indent=1))
        print(f"1-minute load average after: {os.getloadavg()[0]:.2f}")
        return
    body = WORK / "body.json"
    body.write_text(json.dumps({"instances": [bench.ROW]}))
    rounds = []
    for index in range(config.rounds):
        order = MODES if index % 2 == 0 else MODES[::-1]
        rounds.append({mode: run_server(config, mode, copies[mode], body, log) for mode in order})
    result = {
        "config": {"rounds": config.rounds, "duration_s": config.duration_s, "conns": config.conns},
        "rounds": rounds,
        "uptime": os.getloadavg(),
    }
    (WORK / "results.json").write_text(json.dumps(result, indent=1))
    print(table(rounds, config.conns))
    loads = [r[m][k] for r in rounds for m in MODES for k in ("loadavg_before", "loadavg_after")]
    print(f"\n1-minute load average during the runs: {min(loads):.2f}-{max(loads):.2f}")


if __name__ == "__main__":
    main()
