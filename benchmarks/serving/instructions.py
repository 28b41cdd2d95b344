"""Instructions per served request under callgrind: a figure the machine's load does not move.

CPU time per request on this shared 2-core VM moves with the other sessions' work by more than
most changes to the hot path are worth; the count of instructions executed does not. This
runs the in-process drives of ``protocol_path.py`` (``protocol``: Keel's HTTP protocol fed raw
request bytes, one connection, the app scoring inline) and ``hotpath.py`` (``asgi``: the app's
ASGI entry with 64 connections reported busy, so requests go through the batcher and the
prediction thread) under ``valgrind --tool=callgrind --instr-atstart=no`` (``protocol`` with
``serve.inline_max_us`` lifted: callgrind's slowdown would otherwise send the lone request to
the prediction thread, unlike the real server; ``protocol64``: the protocol with 64
connections, requests in tasks and the batcher, the HTTP side at c=64): instrumentation is
switched on (``callgrind_control -i on``) after the imports, the model load and a warm-up, and
off again after ``N`` requests, so the count is the requests' alone (every thread).

    .venv/bin/python benchmarks/serving/instructions.py PROJECT [protocol|protocol64|asgi] [N]

``BEFORE_SRC=/path/to/src``: the same for a copy of ``src/`` first on ``PYTHONPATH`` too,
printed beside. ``HARDENING=off``: the app as ``keel_bare.py`` serves it (the middleware's steps
off), for what the hardening costs; ``HARDENING=id,check,done`` (any of them): only those
steps off. ``NOLOG=1``: no prediction log (``keel serve --no-log``).
``CALLGRIND_OUT=path``: keep callgrind's profile there.
``FILL=N``: first remember N request ids for feedback, as a server that has answered N
requests holds them. ``CACHE_SIM=1``: callgrind simulates the caches too and the misses per
request are printed (``D1mr``, ``DLmr``, ...: a figure for memory traffic the load does not move).
``GC_FREEZE=1``: freeze the heap after the warm-up, as the server does before its first
request; ``GC_THRESHOLD=N``: the collector's youngest generation collected every N objects.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WARM = 300


async def drive(project: str, mode: str, n: int, signals: Path | None) -> None:
    """Warm up, then answer ``n`` requests between the ``warm`` and ``done`` signals."""
    import overhead
    import protocol_path
    import uvicorn
    from uvicorn.server import ServerState

    app, protocol = protocol_path.keel_app(project)
    fill = int(os.environ.get("FILL", "0"))  # a server that has answered this many already
    if fill:
        recent, ids = app.feedback.recent, getattr(app.stack, "ids", None)
        made = [ids.new() if ids else os.urandom(16).hex() for _ in range(fill)]
        for start in range(0, fill, 64):
            for request_id in made[start : start + 64]:
                recent.add("adult", request_id, [{}])
        del made
    if os.environ.get("NOLOG"):  # as `keel serve --no-log`: no prediction log
        app.log = None
    hardening = os.environ.get("HARDENING", "")
    if hardening:  # as keel_bare.py serves: the middleware's steps off (all, or those named)
        from keel_bare import _Unobserved

        off = {"id", "check", "done"} if hardening == "off" else set(hardening.split(","))
        stack = app.stack
        bare = _Unobserved(stack.app, app.metrics)
        for step, method in (("id", "request_id"), ("check", "check"), ("done", "done")):
            if step in off:
                setattr(stack, method, getattr(bare, method))
        app.exchange.observe = stack  # the lean path's steps: made with the app
    if mode == "protocol64":  # 64 connections through Keel's protocol: tasks, the batcher
        config = uvicorn.Config(app, http=protocol, lifespan="off", log_level="warning",
                                access_log=False)  # fmt: skip
        config.load()
        state = ServerState()
        clients = [protocol_path.Client(protocol, config, state, 40000 + i) for i in range(64)]

        async def run(count: int) -> None:
            await protocol_path.drive(clients, count)  # count / 64 requests each
    elif mode == "protocol":
        # under callgrind a lone request's measured CPU is ~30x its real 40-70 µs, past
        # serve.inline_max_us: without this the drive would score it in the prediction
        # thread, which the real server at one connection does not do
        app.settings = replace(app.settings, inline_max_us=1e12)
        config = uvicorn.Config(app, http=protocol, lifespan="off", log_level="warning",
                                access_log=False)  # fmt: skip
        config.load()
        client = protocol_path.Client(protocol, config, ServerState(), 40000)

        async def run(count: int) -> None:
            await protocol_path.drive([client], count)
    else:
        template = overhead.scope(True)
        template["keel.connections"] = (set(range(64)), {})  # 64 connections, all busy
        template["keel.body_complete"] = True

        async def run(count: int) -> None:
            await overhead.drive(app, template, count, 64)

    await run(WARM)
    if os.environ.get("GC_FREEZE"):  # as the server's lifespan does before its first request
        gc.collect()
        gc.freeze()
    if os.environ.get("GC_THRESHOLD"):  # the youngest generation's threshold
        gc.set_threshold(int(os.environ["GC_THRESHOLD"]), *gc.get_threshold()[1:])
    _signal(signals, "warm", "go")
    await run(n)
    _signal(signals, "done", "stop")
    if app.log is not None:  # NOLOG: none
        app.log.close()


def _signal(signals: Path | None, mine: str, awaited: str) -> None:
    """Tell the parent ``mine`` and wait until it answers ``awaited`` (callgrind toggled)."""
    if signals is None:
        return
    (signals / mine).touch()
    while not (signals / awaited).exists():
        time.sleep(0.02)


def instructions(project: str, mode: str, n: int, src: str | None) -> dict[str, int]:
    """What callgrind counts while ``n`` requests are answered after the warm-up: instructions
    (``Ir``), and with ``CACHE_SIM`` the simulated caches' reads, writes and misses."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        signals = Path(tmp)
        out = Path(os.environ.get("CALLGRIND_OUT") or signals / "callgrind.out")
        env["KEEL_BENCH_SIGNALS"] = str(signals)
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               *(["--cache-sim=yes"] if os.environ.get("CACHE_SIM") else []),
               f"--callgrind-out-file={out}", sys.executable, __file__, project, mode, str(n),
               "--drive"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        for mine, answer, switch in (("warm", "go", "on"), ("done", "stop", "off")):
            while not (signals / mine).exists():
                if proc.poll() is not None:
                    raise SystemExit(f"the drive ended early:\n{proc.stderr.read()[-2000:]}")
                time.sleep(0.05)
            toggled = subprocess.run(["callgrind_control", "-i", switch, str(proc.pid)],
                                     capture_output=True, text=True, check=False)  # fmt: skip
            if toggled.returncode != 0:
                proc.kill()
                raise SystemExit(f"callgrind_control failed: {toggled.stderr}")
            (signals / answer).touch()
        _, err = proc.communicate()
        found = re.search(r"Collected : ([\d ]+)", err)
        if proc.returncode != 0 or found is None:
            raise SystemExit("callgrind printed no total:\n" + err[-2000:])
        events = re.search(r"Events    : ([\w ]+)", err)
        counts = [int(c) for c in found.group(1).split()]
        names = events.group(1).split() if events else ["Ir"]
        return dict(zip(names, counts, strict=False))


def main() -> None:
    project = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "protocol"
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 640
    if mode not in ("protocol", "protocol64", "asgi"):
        raise SystemExit(f"mode must be protocol, protocol64 or asgi, not {mode!r}")
    if mode == "protocol64" and n % 64:
        raise SystemExit("protocol64 drives 64 connections alike: N must be a multiple of 64")
    if "--drive" in sys.argv:
        import uvloop

        uvloop.install()
        signals = os.environ.get("KEEL_BENCH_SIGNALS")
        asyncio.run(drive(project, mode, n, Path(signals) if signals else None))
        return
    builds: dict[str, str | None] = {"after": None}
    if os.environ.get("BEFORE_SRC"):
        builds = {"before": os.environ["BEFORE_SRC"], **builds}
    result: dict[str, Any] = {"mode": mode, "n": n}
    for name, src in builds.items():
        counted = instructions(project, mode, n, src)
        result[name] = {"instructions_per_request": round(counted.pop("Ir") / n)}
        result[name].update({f"{k}_per_request": round(v / n, 1) for k, v in counted.items()})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
