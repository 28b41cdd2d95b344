"""The HTTP side's CPU per request without the kernel: Keel's HTTP protocol driven in process.

``hotpath.py`` calls the app's ASGI entry directly; ``http_floor.py`` over real sockets mixes
Python with the kernel's TCP work (and, at one connection, a cold core after every idle
wait). Here the real protocol class ``keel serve`` gives uvicorn
(:func:`keel.serve.protocol.guarded_protocol`) gets a request's raw bytes through
``data_received`` on a fake transport, exactly as uvloop hands them over, and the response
bytes it writes are collected: uvicorn's parser callbacks, its request/response cycle,
the proxy-headers middleware, Keel's middleware, app and answer, and the protocol's
bookkeeping, on the event loop, no sockets. Apps compared, interleaved over rounds:

- ``keel``: the served Adult project (auth on with a cached token, limits, request ids,
  metrics and the prediction log on, batching ``auto``), 1-row predict;
- ``floor``: ``http_floor.app`` (reads the body, answers a constant) behind the same protocol.

CPU µs per request (the process, every thread), writes per response, the least of the rounds.
``PROFILE=1``: a cProfile of the event loop for ``keel`` at c=1 (stderr; ``PROFILE_CONC=64``
at c=64, ``SORT=cumulative`` and ``TOP=N`` for pstats' order and length).

    taskset -c 0 .venv/bin/python benchmarks/serving/protocol_path.py PROJECT [N] [ROUNDS]
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

import http_floor
import overhead
import uvicorn
from uvicorn.server import ServerState

from keel.project import Project
from keel.serve.app import create_app
from keel.serve.auth import Authenticator
from keel.serve.protocol import guarded_protocol

REQUEST = (
    b"POST /v1/models/adult/predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"Authorization: Bearer keel_bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s"
) % (len(overhead.BODY), overhead.BODY)


class Transport(asyncio.Transport):
    """What the protocol writes to; counts writes and bytes, never blocks."""

    def __init__(self, peer: int) -> None:
        super().__init__()
        self.writes = 0
        self.out: list[bytes] = []
        self.closing = False
        self._extra = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", peer)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Client:
    """One keep-alive connection: feeds a request, waits for its response to complete."""

    def __init__(self, protocol_class: type[Any], config: Any, state: Any, peer: int) -> None:
        self.protocol = protocol_class(config=config, server_state=state, app_state={})
        self.transport = Transport(peer)
        self.protocol.connection_made(self.transport)
        self.done: asyncio.Future[None] | None = None
        complete = self.protocol.on_response_complete

        def on_response_complete() -> None:
            complete()
            if self.done is not None and not self.done.done():
                self.done.set_result(None)

        self.protocol.on_response_complete = on_response_complete

    async def request(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.protocol.data_received(REQUEST)
        await self.done


async def drive(clients: list[Client], n: int) -> tuple[float, float]:
    """(CPU seconds per request, transport writes per request) for ``n`` requests."""

    async def run(client: Client, count: int) -> None:
        for _ in range(count):
            await client.request()

    each = n // len(clients)
    writes = sum(c.transport.writes for c in clients)
    started = time.process_time()
    await asyncio.gather(*(run(c, each) for c in clients))
    spent = time.process_time() - started
    writes = sum(c.transport.writes for c in clients) - writes
    for client in clients:
        last = b"".join(client.transport.out[-2:])
        assert b" 200 OK" in last, last[:200]
        client.transport.out.clear()
    return spent / (each * len(clients)), writes / (each * len(clients))


def keel_app(project: str) -> tuple[Any, Any]:
    """``keel serve``'s app on ``project`` (auth on with a bench token, its prediction log
    started, no load shedding: cost is measured) and the HTTP protocol class it listens with."""
    token = overhead.Token("1", "bench", ("predict",))
    check = Authenticator(lambda secret: token if secret == "keel_bench" else None)
    with Project(project) as proj:
        app = create_app(proj, reload=False, auth=check)
        serve = proj.config.serve
    assert app.log is not None, "the project must log predictions (serve.log_predictions)"
    app.log.start()
    app.settings = replace(app.settings, slo_p99_ms=1e9)  # measure cost, not shedding
    protocol = guarded_protocol(
        header_timeout=serve.idle_timeout_s, max_connections=serve.max_connections
    )
    return app, protocol


async def measure(project: str, n: int, rounds: int) -> dict[str, Any]:
    app, protocol = keel_app(project)
    configs = {}
    for name, target in (("keel", app), ("floor", http_floor.app)):
        config = uvicorn.Config(target, http=protocol, lifespan="off", log_level="warning",
                                access_log=False, timeout_keep_alive=5)  # fmt: skip
        config.load()
        configs[name] = config
    result: dict[str, Any] = {"n": n, "rounds": rounds}
    for conc in (1, 64):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for name, config in configs.items():
                state = ServerState()
                clients = [Client(protocol, config, state, 40000 + i) for i in range(conc)]
                await drive(clients, max(n // 10, conc))  # warm
                measured = await drive(clients, n)
                if name not in best or measured[0] < best[name][0]:
                    best[name] = measured
                for client in clients:
                    client.protocol.connection_lost(None)
        result[f"c={conc}"] = {
            k: {"cpu_us_per_request": round(c * 1e6, 1), "writes_per_response": round(w, 2)}
            for k, (c, w) in best.items()
        }
        keel, floor = best["keel"][0], best["floor"][0]
        result[f"c={conc}"]["keel_minus_floor_us"] = round((keel - floor) * 1e6, 1)
    if os.environ.get("PROFILE"):
        state = ServerState()
        conc = int(os.environ.get("PROFILE_CONC", "1"))
        clients = [Client(protocol, configs["keel"], state, 40000 + i) for i in range(conc)]
        profile = cProfile.Profile()
        profile.enable()
        await drive(clients, n)
        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats(
            os.environ.get("SORT", "tottime")
        ).print_stats(int(os.environ.get("TOP", "40")))
    app.log.close()
    return result


def main() -> None:
    project = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    import uvloop

    uvloop.install()
    print(json.dumps(asyncio.run(measure(project, n, rounds)), indent=1))


if __name__ == "__main__":
    main()
