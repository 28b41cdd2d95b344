"""What an idle wait between requests costs the next one: the same request, hot and after a sleep.

At one connection a server sleeps in ``epoll_wait`` between requests, and on a shared or
virtualised core the request after the wake-up runs with cold caches and TLB. Here one
:class:`keel.serve.app.ServerApp` (the Adult project, auth on with a cached token, the
prediction log on; ``hotpath.py``'s set-up, scored inline) answers N requests through its ASGI
entry back to back, then with a blocking sleep of 200 µs and of 1 ms after each; only the
requests' own CPU time is counted (``time.process_time`` around each call), never the sleep.

    taskset -c 0 .venv/bin/python benchmarks/serving/idle_gap.py PROJECT [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead

from keel.project import Project
from keel.serve.app import create_app
from keel.serve.auth import Authenticator

GAPS_S = (0.0, 0.0002, 0.001)


async def measure(project: str, n: int, rounds: int) -> dict[str, Any]:
    token = overhead.Token("1", "bench", ("predict",))
    check = Authenticator(lambda secret: token if secret == "keel_bench" else None)
    with Project(project) as proj:
        app = create_app(proj, reload=False, auth=check)
    assert app.log is not None, "the project must log predictions (serve.log_predictions)"
    app.log.start()
    app.settings = replace(app.settings, slo_p99_ms=1e9)
    template = overhead.scope(True)
    template["keel.connections"] = ({1}, {})  # one connection, inside its request
    template["keel.body_complete"] = True

    async def send(message: Any) -> None:
        pass

    for _ in range(500):  # warm: the first requests calibrate the inline bound
        await app(dict(template), overhead.receive, send)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for gap in GAPS_S:
            spent = 0.0
            for _ in range(n):
                started = time.process_time()
                await app(dict(template), overhead.receive, send)
                spent += time.process_time() - started
                if gap:
                    time.sleep(gap)
            key = f"gap {gap * 1e6:.0f} us"
            best[key] = min(best.get(key, float("inf")), spent / n * 1e6)
    app.log.close()
    return {
        "n": n,
        "rounds": rounds,
        "cpu_us_per_request": {k: round(v, 1) for k, v in best.items()},
    }


def main() -> None:
    project = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    import uvloop

    uvloop.install()
    print(json.dumps(asyncio.run(measure(project, n, rounds)), indent=1))


if __name__ == "__main__":
    main()
