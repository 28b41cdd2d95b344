"""`keel serve --workers N`: how connections spread over the workers, and how req/s scales.

Two measurements on the serving benchmark's Adult project (built by ``bench.py``):

- **balance** (any machine): the fleet is started with N workers; C keep-alive connections are
  opened at once (as wrk or a load balancer opens them), each sends one predict request, and
  the ``Keel-Worker`` header of each answer says which worker holds the connection. Reported:
  connections per worker, and the largest share against a fair one. A worker that holds too few
  connections idles under a closed-loop load while another queues, whatever the cores.
- **scaling** (needs N + 1 cores): the fleet pinned to cores 0..N-1 (``taskset``), wrk with
  ``-t`` threads on the cores left, c=64 for ``DURATION`` seconds per N, auth required and the
  prediction log on (``keel_auth`` in ``bench.py``); req/s for each N over N=1's. An N the
  machine has no room for is reported as such, not run.

Run from the repository root (127.0.0.1 only; every load bounded in time and count)::

    WORKERS=1,2,4 CONNS=64 DURATION=10 .venv/bin/python benchmarks/serving/workers.py
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

PROJECT = bench.WORK / "project"
BODY = bench.WORK / "body_keel.json"
PATH = "/v1/models/adult/predict"
READY_S = 120.0


@contextlib.contextmanager
def fleet(workers: int, cores: str, token: str) -> Iterator[int]:
    """``keel serve --workers N --auth required`` pinned to ``cores``; yields its port."""
    port = bench.free_port()
    keel = str(Path(sys.executable).with_name("keel"))
    cmd = ["taskset", "-c", cores, keel, "serve", "--port", str(port), "--auth", "required"]
    cmd += ["--workers", str(workers)]
    log = bench.WORK / "workers.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=PROJECT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + READY_S
        while len(seen) < workers:  # every worker up: new connections until each has answered
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers not ready (see {log})")
            with contextlib.suppress(OSError):
                seen.add(ask(http.client.HTTPConnection(bench.HOST, port, timeout=5), token)[1])
            time.sleep(0.05)
        yield port
    finally:
        bench.stop_group(proc)


def ask(connection: http.client.HTTPConnection, token: str) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    connection.request("POST", PATH, BODY.read_bytes(), headers)
    answer = connection.getresponse()
    answer.read()
    return answer.status, answer.getheader("Keel-Worker") or "?"


def balance(workers: int, conns: int, token: str) -> dict[str, int]:
    """Connections per worker for ``conns`` keep-alive connections opened at once."""
    with fleet(workers, f"0-{(os.cpu_count() or 1) - 1}", token) as port:
        connections = [http.client.HTTPConnection(bench.HOST, port, timeout=30)
                       for _ in range(conns)]  # fmt: skip
        for connection in connections:
            connection.connect()
        counts: Counter[str] = Counter()
        for connection in connections:
            status, worker = ask(connection, token)
            if status != 200:
                raise RuntimeError(f"predict answered {status}")
            counts[worker] += 1
        for connection in connections:
            connection.close()
    return dict(sorted(counts.items()))


def scaling(workers: int, conns: int, seconds: int, token: str) -> dict[str, float] | str:
    cores = os.cpu_count() or 1
    if workers + 1 > cores:
        return f"needs {workers + 1} cores ({workers} for the workers, 1 for wrk); has {cores}"
    with fleet(workers, f"0-{workers - 1}", token) as port:
        load = ",".join(str(c) for c in range(workers, cores))
        threads = min(cores - workers, 4)
        env = dict(os.environ, BODY_FILE=str(BODY), MAX_REQUESTS="20000000", AUTH_TOKEN=token)
        cmd = ["taskset", "-c", load, "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s",
               "--timeout", "5s", "-s", str(bench.HERE / "post.lua"),
               f"http://{bench.HOST}:{port}{PATH}"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=seconds + 60, check=False)  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            return {"rps": result["requests"] / (result["duration_us"] / 1e6),
                    "p99_ms": result["p99_us"] / 1000}  # fmt: skip
    raise RuntimeError(f"wrk gave no result: {done.stdout}{done.stderr}")


def main() -> None:
    if not PROJECT.exists():
        raise SystemExit(f"{PROJECT} is missing: run benchmarks/serving/bench.py once first")
    env = os.environ
    counts = [int(w) for w in env.get("WORKERS", "1,2,4").split(",")]
    conns = int(env.get("CONNS", "64"))
    seconds = int(env.get("DURATION", "10"))
    token = bench.bench_token(PROJECT)
    print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    for n in counts:
        if n > 1:
            spread = balance(n, conns, token)
            share = max(spread.values()) / (conns / n)
            print(f"balance  workers={n} c={conns}: {spread} (largest share {share:.2f}x fair)")
    base = None
    for n in counts:
        found = scaling(n, conns, seconds, token)
        if isinstance(found, str):
            print(f"scaling  workers={n}: not run: {found}")
            continue
        base = base or found["rps"]
        print(f"scaling  workers={n} c={conns}: {found['rps']:,.0f} req/s, p99 "
              f"{found['p99_ms']:.2f} ms, {found['rps'] / base:.2f}x workers=1")  # fmt: skip


if __name__ == "__main__":
    main()
