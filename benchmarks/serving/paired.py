"""Two builds of ``keel serve`` side by side over HTTP: CPU per request, wrk alternating.

Starts two ``keel serve --auth required`` processes on the serving benchmark's project, both
pinned to CPU 0: ``before`` with ``BEFORE_SRC`` (a copy of ``src/`` to compare against) first
on ``PYTHONPATH``, ``after`` with ``AFTER_SRC`` (default: the working tree's ``src/``; a copy
keeps other work in the tree out of the comparison). wrk (pinned to CPU 1) then loads them in
turn, ``ROUNDS`` short runs each per connection count, alternating, so both see the same load
on the machine; the server's CPU per request comes from ``/proc/PID/stat`` around each run.
Prints one JSON document: per build and connection count the medians and minima of CPU µs per
request, req/s, p50 and p99, and the load average before and after.

    BEFORE_SRC=/tmp/before/src ROUNDS=6 SECONDS_EACH=3 CONNS=1,64 \\
        .venv/bin/python benchmarks/serving/paired.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
from httpcost import process_cpu_s  # noqa: E402


def main() -> None:
    before_src = os.environ["BEFORE_SRC"]
    rounds = int(os.environ.get("ROUNDS", "6"))
    seconds = int(os.environ.get("SECONDS_EACH", "3"))
    conns = [int(c) for c in os.environ.get("CONNS", "1,64").split(",")]
    project = bench.WORK / "project"
    body = bench.WORK / "body_keel.json"
    token = bench.bench_token(project)
    config = bench.Config(conns=tuple(conns), duration_s=seconds, max_requests=2_000_000)
    path = "/v1/models/adult/predict"

    def check(raw: bytes) -> str | None:
        return None if b'"model_version"' in raw else "no model_version"

    after_src = os.environ.get("AFTER_SRC") or str(HERE.parents[1] / "src")
    builds = {"before": before_src, "after": after_src}
    result: dict[str, Any] = {"loadavg_before": os.getloadavg()[0], "rounds": rounds,
                              "seconds_each": seconds}  # fmt: skip
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with ExitStack() as stack:
        servers: dict[str, tuple[int, str]] = {}
        for name, src in builds.items():
            port = bench.free_port()
            cmd = [bench.keel_bin("keel"), "serve", "--project", str(project),
                   "--host", bench.HOST, "--port", str(port), "--auth", "required"]  # fmt: skip
            server = bench.Server(name, name, cmd, path, body, check, token=token,
                                  env={"PYTHONPATH": src})  # fmt: skip
            url = f"http://{bench.HOST}:{port}{path}"
            proc = stack.enter_context(bench.running(server, port, bench.WORK / "servers.log"))
            bench.wait_ready(proc, server, url, time.monotonic())
            bench.wrk(config, url, body, 8, 2, token)  # warm
            servers[name] = (proc.pid, url)
        for _ in range(rounds):
            for conn in conns:
                for name, (pid, url) in servers.items():
                    cpu = process_cpu_s(pid)
                    load = bench.wrk(config, url, body, conn, seconds, token)
                    spent = process_cpu_s(pid) - cpu
                    n = max(int(load["requests"]), 1)
                    runs.setdefault((name, conn), []).append(
                        {
                            "cpu_us": spent / n * 1e6,
                            "rps": load["rps"],
                            "p50_ms": load["p50_us"] / 1e3,
                            "p99_ms": load["p99_us"] / 1e3,
                            "non2xx": load["not_2xx"],
                        }
                    )
    for (name, conn), each in runs.items():
        result[f"{name} c={conn}"] = {
            key: round(statistics.median(r[key] for r in each), 3)
            for key in ("cpu_us", "rps", "p50_ms", "p99_ms")
        } | {
            "cpu_us_min": round(min(r["cpu_us"] for r in each), 1),
            "non2xx": sum(r["non2xx"] for r in each),
        }
    result["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
