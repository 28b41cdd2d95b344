"""The serving hot path's CPU per request, in process: variants of one server A/B, interleaved.

One :class:`keel.serve.app.ServerApp` (the trained Adult project, prediction log on, auth on
with a cached token, batching ``auto``) is driven through its ASGI entry with a 1-row predict
request (no HTTP: ``overhead.py``'s driver), N requests from 1 and from 64 concurrent clients.
Variants differ only in settings of the same app, switched between measurements, so the
machine's load (shared 2-core VM) hits them alike:

- ``threaded``: every prediction handed to the prediction thread (``serve.inline_max_us: 0``);
- ``shadow``: the default with a shadow deployment of the same model (every answered request
  mirrored to the shadow process, :mod:`keel.serve.shadow`, which inherits the pinning), for
  the primary's p99 with and without a shadow; the shadow process's CPU per request and the
  copies it scored and dropped are reported beside (its CPU is not the server process's);
- ``inline``: the default: a small request arriving while no other connection is inside a
  request and no prediction is queued or running is scored on the event loop
  (``ServerApp._inline``). The scope carries what the server's HTTP protocol would report
  (``keel.connections``: 1 or 64 connections, all inside a request; ``keel.body_complete``).

CPU seconds of the process (every thread) per request, requests per wall second and the p99
of the requests' wall-clock latency in the round with the least CPU (the least disturbed), and
with ``PROFILE=1`` a cProfile of the event loop's thread and the prediction thread for the
default variant at c=64.
``VARIANTS=inline`` (comma-separated) measures only those. Pin it to one core, like the server
in ``bench.py``:

    taskset -c 0 .venv/bin/python benchmarks/serving/hotpath.py PROJECT [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead

from keel.project import Project
from keel.serve import routing
from keel.serve.app import ServerApp, create_app
from keel.serve.auth import Authenticator

VARIANTS = {"threaded": {"inline_max_us": 0.0}, "inline": {}, "shadow": {}}


async def timed(app: ServerApp, n: int, conc: int) -> tuple[float, float, float]:
    """(CPU µs per request, requests per wall second, p99 latency in ms)."""
    latencies: list[float] = []

    async def entry(scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        await app(scope, receive, send)
        latencies.append(time.perf_counter() - started)

    template = overhead.scope(True)
    # what keel.serve.protocol tells the app over HTTP: `conc` connections, each in a request
    template["keel.connections"] = (set(range(conc)), {})
    template["keel.body_complete"] = True  # the body arrived with the headers
    wall = time.perf_counter()
    cpu = await overhead.drive(entry, template, n, conc)
    rps = n / (time.perf_counter() - wall)
    latencies.sort()
    return cpu * 1e6, rps, latencies[int(0.99 * (len(latencies) - 1))] * 1e3


async def measure(project: str, n: int, rounds: int) -> dict[str, Any]:
    token = overhead.Token("1", "bench", ("predict",))
    check = Authenticator(lambda secret: token if secret == "keel_bench" else None)
    with Project(project) as proj:
        app = create_app(proj, reload=False, auth=check)
    assert app.log is not None, "the project must log predictions (serve.log_predictions)"
    app.log.start()
    base = replace(app.settings, slo_p99_ms=1e9)  # measure cost, not shedding
    result: dict[str, Any] = {"n": n, "rounds": rounds}
    if "shadow" in os.environ.get("VARIANTS", "shadow").split(","):
        result["shadow_ready_s"] = await shadow_ready(app)
    for conc in (1, 64):
        best: dict[str, tuple[float, float, float]] = {}
        extra: dict[str, dict[str, float]] = {}
        for _ in range(rounds):
            for name, changes in VARIANTS.items():
                if name not in os.environ.get("VARIANTS", name).split(","):
                    continue
                app.settings = replace(base, **changes)
                shadowed = routing.Route("bench", "shadow", shadow=app.models["adult"])
                app.routes = {"adult": shadowed} if name == "shadow" else {}
                await timed(app, n // 10, conc)  # warm
                before = shadow_counts(app)
                measured = await timed(app, n, conc)
                if name not in best or measured[0] < best[name][0]:
                    best[name] = measured
                    if name == "shadow":
                        extra[name] = shadow_delta(app, before, n)
        result[f"c={conc}"] = {
            k: {
                "cpu_us_per_request": round(c, 1),
                "requests_per_s": round(r),
                "p99_ms": round(p, 2),
            }
            for k, (c, r, p) in best.items()
        }
        for k, more in extra.items():
            result[f"c={conc}"][k].update(more)
    app.settings = base
    if len(sys.argv) > 4 or os.environ.get("PROFILE"):
        await profile(app, n)
    app.log.close()
    return result


async def shadow_ready(app: ServerApp, timeout_s: float = 120.0) -> float:
    """Mirror one request and wait (idle) until the shadow process scored it: seconds."""
    app.routes = {"adult": routing.Route("bench", "shadow", shadow=app.models["adult"])}
    started = time.monotonic()
    template = overhead.scope(True)
    template["keel.connections"] = (set(range(1)), {})
    template["keel.body_complete"] = True
    await overhead.drive(app, template, 1, 1)
    while not any(row["role"] == "shadow" for row in app.traffic.drain()):
        assert time.monotonic() - started < timeout_s, "the shadow process never answered"
        await asyncio.sleep(0.05)
    return round(time.monotonic() - started, 2)


def shadow_counts(app: ServerApp) -> tuple[float, int, int]:
    """The shadow process's CPU seconds, copies it scored (reported) and copies dropped."""
    import psutil

    pid = app.shadows.pid
    cpu = 0.0
    if pid is not None:
        times = psutil.Process(pid).cpu_times()
        cpu = times.user + times.system
    scored = sum(row["requests"] for row in app.traffic.drain() if row["role"] == "shadow")
    return cpu, scored, app.shadows.dropped


def shadow_delta(app: ServerApp, before: tuple[float, int, int], n: int) -> dict[str, float]:
    """What the shadow process did during one measurement (per primary request)."""
    cpu, scored, dropped = shadow_counts(app)
    return {
        "shadow_cpu_us_per_request": round((cpu - before[0]) / n * 1e6, 1),
        "shadow_scored": scored,
        "shadow_dropped": dropped - before[2],
    }


async def profile(app: ServerApp, n: int) -> None:
    """cProfile of both threads for the default settings at c=64 (printed to stderr)."""
    worker = cProfile.Profile()
    await app._workers.run(worker.enable)
    loop = cProfile.Profile()
    loop.enable()
    template = overhead.scope(True)
    template["keel.connections"] = (set(range(64)), {})  # as timed(): 64 busy connections
    template["keel.body_complete"] = True
    await overhead.drive(app, template, n, 64)
    loop.disable()
    await app._workers.run(worker.disable)
    for name, prof in (("event loop", loop), ("prediction thread", worker)):
        print(f"=== {name}", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)


def main() -> None:
    project = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    import uvloop

    uvloop.install()
    print(json.dumps(asyncio.run(measure(project, n, rounds)), indent=1))


if __name__ == "__main__":
    main()
