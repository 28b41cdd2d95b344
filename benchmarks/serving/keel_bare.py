"""The Keel server with its hardening off, for measuring what the hardening costs.

The same :class:`keel.serve.app.ServerApp` (same worker threads, prediction log, router), the
same uvicorn settings and HTTP protocol class as ``keel serve`` (one write per answer, no timer
per request, a lone request run at once, busy polling, the lean path for whole small requests),
with the hardening off: no token or content-type check (Guard) and the protocol's guards off
(no header deadline, no connection cap). What every answer needs whether or not the server is
hardened stays on: the request id (each answer's ``request_id`` and ``Keel-Request-Id``, the
ids feedback finds), the error answers, the metrics and the access log (Observe without Guard).

``--steps none``: every middleware step off as well (a fixed request id, no metrics, no access
log; the ASGI path's scope keys set directly): what the whole middleware costs. Benchmark only.

usage: python keel_bare.py PROJECT PORT [--steps none]
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn

from keel.project import Project
from keel.serve.app import create_app
from keel.serve.exchange import Exchange
from keel.serve.middleware import Observe, Route, classify
from keel.serve.protocol import guarded_protocol


class _Unobserved(Observe):
    """The middleware's steps, off: what the lean path calls does nothing."""

    def __init__(self, app: Any, metrics: Any) -> None:
        super().__init__(app, metrics)
        self.check = _unchecked

    def request_id(self, headers: Any) -> str:
        return "bare"

    def done(self, *args: Any) -> None:
        return None


def _unchecked(method: str, headers: Any, route: Route) -> Any:
    return None


def main(project: str, port: int, steps: str = "kept") -> None:
    proj = Project(project)
    app = create_app(proj, reload=False)
    route = app._route
    entry: Any
    if steps == "none":
        app.stack = _Unobserved(app.stack.app, app.metrics)

        async def entry(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope["keel.headers"] = dict(scope["headers"])
                scope["keel.route"] = classify(scope["method"], scope["path"])
                scope["keel.request_id"] = uuid.uuid4().hex
            await route(scope, receive, send)

    else:  # the request id, error answers, metrics and access log, without Guard's checks
        entry = app.stack = Observe(route, app.metrics, app.stack.ids)
    entry.exchange = Exchange(app)  # Keel's protocol finds it
    unguarded = guarded_protocol(
        header_timeout=86_400.0,
        max_connections=1 << 30,
        busy_poll_us=proj.config.serve.busy_poll_us,
    )
    uvicorn.run(entry, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http=unguarded, lifespan="on")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5) or (len(sys.argv) == 5 and sys.argv[3:] != ["--steps", "none"]):
        raise SystemExit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), "none" if len(sys.argv) == 5 else "kept")
