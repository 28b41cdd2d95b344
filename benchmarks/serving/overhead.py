"""What the server's hardening costs per request, in CPU, without HTTP noise.

The same :class:`keel.serve.app.ServerApp` (same model, prediction log on) is driven in
process through its ASGI entry with a 1-row predict request, N requests per measurement, in
four variants interleaved round after round:

- ``bare``: the router alone (the scope keys the middleware would set, nothing else), the
  prediction run inline on the loop: what the server was before (no middleware, no thread);
- ``thread``: the router alone, the prediction in the worker thread (off the event loop);
- ``hardened``: the whole stack, auth off (request id, metrics, content type, limits, thread);
- ``hardened_auth``: the whole stack with token auth (a cached verification per request).

CPU seconds of the process (all threads) per request, one client at a time and 64 concurrent
clients, the minimum over rounds (the machine is shared: the minimum is the least disturbed),
and each variant's cost over ``thread`` (the hardening proper) and over ``bare``. Pin it to one
core (``taskset -c 0``) like the server in ``bench.py``.

usage: python benchmarks/serving/overhead.py PROJECT [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from keel.demo import SAMPLE
from keel.project import Project
from keel.serve.app import ServerApp, create_app
from keel.serve.auth import Authenticator
from keel.serve.middleware import Guard, Observe, classify

BODY = json.dumps({"instances": [dict(SAMPLE)]}).encode()
PATH = "/v1/models/adult/predict"


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None = None


def scope(token: bool) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(BODY)).encode())]  # fmt: skip
    if token:
        headers.append((b"authorization", b"Bearer keel_bench"))
    return {"type": "http", "method": "POST", "path": PATH, "headers": headers}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def drive(entry: Callable[..., Any], template: dict[str, Any], n: int, conc: int) -> float:
    """CPU seconds per request for ``n`` requests from ``conc`` concurrent clients."""
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def client(count: int) -> None:
        for _ in range(count):
            await entry(dict(template), receive, send)

    started = time.process_time()
    await asyncio.gather(*(client(n // conc) for _ in range(conc)))
    spent = time.process_time() - started
    assert set(statuses) == {200}, statuses[:5]
    return spent / (n // conc * conc)


def variants(app: ServerApp) -> dict[str, tuple[Callable[..., Any], bool]]:
    route = app._route

    async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["keel.headers"] = dict(scope["headers"])
        scope["keel.route"] = classify(scope["method"], scope["path"])
        scope["keel.request_id"] = uuid.uuid4().hex
        await route(scope, receive, send)

    return {"thread": (bare, False), "hardened": (app, False)}


async def measure(project: str, n: int, rounds: int) -> dict[str, Any]:
    with Project(project) as proj:
        plain = create_app(proj, reload=False)
        token = Token("1", "bench", ("predict",))
        check = Authenticator(lambda secret: token if secret == "keel_bench" else None)
        secured = create_app(proj, reload=False, auth=check)
    inline = create_app(Project(project), reload=False)

    async def run_inline(work: Any, *args: Any) -> Any:
        return work(*args)

    inline._run = run_inline  # type: ignore[method-assign]
    for app in (plain, secured, inline):  # measure cost, not shedding: no latency objective
        # the threaded design's cost: no inline scoring (hotpath.py measures that)
        app.settings = replace(app.settings, slo_p99_ms=1e9, inline_max_us=0.0)
    entries = variants(plain)
    entries["bare"] = variants(inline)["thread"]
    entries["hardened_auth"] = (secured, True)
    for app in (plain, secured, inline):
        if app.log is not None:
            app.log.start()
    result: dict[str, Any] = {"n": n, "rounds": rounds}
    for conc in (1, 64):
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, (entry, token_on) in entries.items():
                await drive(entry, scope(token_on), n // 10, conc)  # warm
                per = await drive(entry, scope(token_on), n, conc)
                best[name] = min(best.get(name, per), per)
        us = {k: round(v * 1e6, 1) for k, v in best.items()}
        result[f"c={conc}"] = {
            "cpu_us_per_request": us,
            "hardening_over_thread_pct": {
                k: round(100 * (us[k] - us["thread"]) / us["thread"], 1)
                for k in ("hardened", "hardened_auth")
            },
            "thread_over_bare_pct": round(100 * (us["thread"] - us["bare"]) / us["bare"], 1),
            "all_over_bare_pct": round(100 * (us["hardened_auth"] - us["bare"]) / us["bare"], 1),
        }
    for app in (plain, secured, inline):
        if app.log is not None:
            app.log.close()
    result["middleware_only"] = await middleware_only(secured, n * 10, rounds)
    return result


async def middleware_only(app: ServerApp, n: int, rounds: int) -> dict[str, float]:
    """The stack's own cost: Observe + Guard (auth on) around an app that answers at once,
    against the same answer with the scope keys set by hand. Microseconds per request."""
    headers = [(b"content-type", b"application/json")]

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def by_hand(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["keel.headers"] = dict(scope["headers"])
        scope["keel.route"] = classify(scope["method"], scope["path"])
        scope["keel.request_id"] = uuid.uuid4().hex
        await answer(scope, receive, send)

    stack = Observe(Guard(answer, app.auth), app.metrics)
    best = {"bare_us": float("inf"), "stack_us": float("inf")}
    for _ in range(rounds):
        best["bare_us"] = min(best["bare_us"], await drive(by_hand, scope(True), n, 1) * 1e6)
        best["stack_us"] = min(best["stack_us"], await drive(stack, scope(True), n, 1) * 1e6)
    best["added_us"] = best["stack_us"] - best["bare_us"]
    return {k: round(v, 2) for k, v in best.items()}


def main() -> None:
    project = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(measure(project, n, rounds)), indent=1))


if __name__ == "__main__":
    main()
