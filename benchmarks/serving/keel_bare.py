"""The Keel server with its hardening off, for measuring what the hardening costs.

The same :class:`keel.serve.app.ServerApp` (same worker threads, prediction log, router) with
the middleware stack (request id, error answers, metrics, access log, auth, content type)
replaced by the three scope keys the router reads, and the same uvicorn settings and HTTP
protocol class as ``keel serve`` (one write per answer, no timer per request, a lone request run
at once, busy polling, and its lean path for whole small requests, there with the middleware's
steps as no-ops: a fixed request id, no token or content-type check, no metrics, no access
log) with its guards off (no header deadline, no connection cap). Benchmark only.

usage: python keel_bare.py PROJECT PORT
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

    def request_id(self, headers: Any) -> str:
        return "bare"

    def check(self, method: str, headers: Any, route: Route) -> Any:
        return None

    def done(self, *args: Any) -> None:
        return None


def main(project: str, port: int) -> None:
    proj = Project(project)
    app = create_app(proj, reload=False)
    route = app._route
    app.stack = _Unobserved(app.stack.app, app.metrics)

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["keel.headers"] = dict(scope["headers"])
            scope["keel.route"] = classify(scope["method"], scope["path"])
            scope["keel.request_id"] = uuid.uuid4().hex
        await route(scope, receive, send)

    bare.exchange = Exchange(app)  # type: ignore[attr-defined]  # Keel's protocol finds it
    unguarded = guarded_protocol(
        header_timeout=86_400.0,
        max_connections=1 << 30,
        busy_poll_us=proj.config.serve.busy_poll_us,
    )
    uvicorn.run(bare, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http=unguarded, lifespan="on")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
