"""Where a served request's CPU goes over HTTP: CPU and thread switches per request, per thread.

Starts one server pinned to CPU 0 (``keel serve --auth required`` on the serving benchmark's
project, prediction log on; or the HTTP floor), checks one real answer, warms it up, then
drives it with wrk (``post.lua``, pinned to CPU 1) at each connection count and reads, before
and after, every thread's CPU time and voluntary/involuntary context switches from
``/proc/PID/task/*/stat|status``. Per request: the process's CPU µs, each thread's CPU µs and
its switches (a voluntary switch is a thread going to sleep: every wake-up shows).

    .venv/bin/python benchmarks/serving/httpcost.py [keel|floor] [CONNS] [SECONDS]

``CONNS`` like ``1,64``. The project is ``benchmarks/.work/serving/project`` (``bench.py``
builds it); a predict token is created in it for the run. Prints one JSON document.
``SYSCALLS=1``: also the server's system calls per request during each wrk run
(``perf stat -e 'syscalls:sys_enter_*' -p PID``; needs perf and tracepoint access).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[int, dict[str, Any]]:
    """Every live thread of ``pid``: name, CPU seconds, voluntary and involuntary switches."""
    found: dict[int, dict[str, Any]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        info: dict[str, Any] = {"name": name, "cpu_s": (int(fields[11]) + int(fields[12])) / TICK}
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                info["vol"] = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                info["invol"] = int(line.split()[1])
        found[int(task.name)] = info
    return found


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def per_request(before: dict[int, Any], after: dict[int, Any], requests: int) -> list[Any]:
    rows = []
    for tid, now in after.items():
        was = before.get(tid, {"cpu_s": 0.0, "vol": 0, "invol": 0})
        cpu = now["cpu_s"] - was["cpu_s"]
        vol, invol = now["vol"] - was["vol"], now["invol"] - was["invol"]
        if cpu or vol or invol:
            rows.append(
                {
                    "thread": now["name"],
                    "cpu_us_per_req": round(cpu / requests * 1e6, 1),
                    "vol_per_req": round(vol / requests, 3),
                    "invol_per_req": round(invol / requests, 3),
                }
            )
    return sorted(rows, key=lambda r: -r["cpu_us_per_req"])


def syscalls_start(pid: int) -> tuple[subprocess.Popen[bytes], Path] | None:
    """``perf stat`` counting the system calls of ``pid`` until stopped (None: not asked)."""
    if os.environ.get("SYSCALLS", "") in ("", "0"):
        return None
    out = Path(tempfile.mkstemp(suffix=".perf")[1])
    cmd = ["perf", "stat", "-x", ",", "-o", str(out), "-e", "syscalls:sys_enter_*", "-p", str(pid)]
    perf = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the load starts
    return perf, out


def syscalls_stop(running: tuple[subprocess.Popen[bytes], Path] | None, n: int) -> dict[str, float]:
    """The counted system calls per request, those at 0.01 or more, most first."""
    if running is None:
        return {}
    perf, out = running
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=30)
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].strip().isdigit():
            name = fields[2].removeprefix("syscalls:sys_enter_")
            counts[name] = int(fields[0]) / n
    out.unlink()
    found = {k: round(v, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v >= 0.01}
    found["all"] = round(sum(counts.values()), 3)
    return found


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "keel"
    conns = [int(c) for c in (sys.argv[2] if len(sys.argv) > 2 else "1,64").split(",")]
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    work = bench.WORK
    project = work / "project"
    body = work / "body_keel.json"
    config = bench.Config(conns=tuple(conns), duration_s=seconds, max_requests=2_000_000)
    port = bench.free_port()
    if which == "floor":
        cmd = [sys.executable, "-m", "uvicorn", "http_floor:app", "--host", bench.HOST,
               "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http",
               "httptools", "--no-access-log", "--log-level", "warning"]  # fmt: skip
        token = None

        def check(raw: bytes) -> str | None:
            return None if raw.startswith(b'{"predictions"') else "unexpected"
    else:
        token = bench.bench_token(project)
        cmd = [bench.keel_bin("keel"), "serve", "--project", str(project), "--host", bench.HOST,
               "--port", str(port), "--auth", "required"]  # fmt: skip

        def check(raw: bytes) -> str | None:
            return None if b'"model_version"' in raw else "no model_version"

    path = "/v1/models/adult/predict"
    server = bench.Server(which, which, cmd, path, body, check, token=token)
    url = f"http://{bench.HOST}:{port}{path}"
    result: dict[str, Any] = {"server": which, "loadavg_before": os.getloadavg()[0]}
    with bench.running(server, port, work / "servers.log") as proc:
        bench.wait_ready(proc, server, url, time.monotonic())
        pid = proc.pid
        bench.wrk(config, url, body, 8, 2, token)
        for conn in conns:
            perf = syscalls_start(pid)
            snap, cpu = threads(pid), process_cpu_s(pid)
            load = bench.wrk(config, url, body, conn, seconds, token)
            after, cpu_after = threads(pid), process_cpu_s(pid)
            n = max(int(load["requests"]), 1)
            calls = syscalls_stop(perf, n)
            result[f"c={conn}"] = {
                "requests": n,
                "rps": round(load["rps"]),
                "p50_ms": load["p50_us"] / 1e3,
                "p99_ms": load["p99_us"] / 1e3,
                "non2xx": load["not_2xx"],
                "cpu_us_per_req": round((cpu_after - cpu) / n * 1e6, 1),
                "threads": per_request(snap, after, n),
            }
            if calls:
                result[f"c={conn}"]["syscalls_per_req"] = calls
    result["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
