"""The middleware every request passes through, predict included: pure ASGI, no framework.

:class:`Observe` (outermost) classifies the route, gives the request an id (the
``Keel-Request-Id`` header on every response; a well-formed incoming ``Keel-Request-Id`` or
``X-Request-Id`` is kept), turns a :class:`~keel.errors.KeelError` raised below into its JSON
answer (with ``Retry-After`` when it has one), counts the request in the metrics and writes the
access log. :class:`Guard` checks the token for the route's scope
(when auth is on) and that a POST body is JSON. Body size, body deadline and JSON shape are
enforced where the body is read (:mod:`keel.serve.limits`).

Both are plain ``async def __call__(scope, receive, send)`` classes (Starlette's
``BaseHTTPMiddleware`` costs a task and a stream per request); together they add a few
microseconds (``benchmarks/serving/overhead.py``: 2-5 µs with auth on). ``Observe(Guard(app))``
runs as one layer: Observe makes Guard's checks itself and calls Guard's app. The steps
(:meth:`Observe.request_id`, ``Observe.check``, :func:`error_answer`, :meth:`Observe.done`)
are plain calls, which the server's lean HTTP path (:mod:`keel.serve.exchange`) calls too.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from keel.errors import KeelError
from keel.serve.auth import Authenticator
from keel.serve.limits import Forbidden, Unauthorized, check_content_type
from keel.serve.metrics import Metrics
from keel.serve.request_ids import RequestIds

__all__ = ["ASGIApp", "Guard", "Observe", "Route", "classify", "error_answer"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("keel.serve.access")
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class Route:
    """What a request is: a bounded metrics label, the scope it needs, its model and version."""

    label: str
    scope: str | None  # None: open (health)
    model: str = ""
    version: str | None = None
    fast: bool = False  # answered by the server's own router (predict, infer, features)
    changes: bool = False  # changes state: needs a token even where auth is off (loopback)
    #: A known path asked with a method it does not take: the app answers 405 with ``Allow``.
    #: Where auth is on, any valid token passes (a missing or unknown one is still 401: who
    #: may not call the server learns nothing of its routes), whatever its scopes (a route
    #: the method does not reach has no scope to lack, so never 403).
    wrong_method: bool = False


_OPEN = {
    "/v2/health/live": Route("/v2/health/live", None),
    "/v2/health/ready": Route("/v2/health/ready", None),
}
_READ = {p: Route(p, "read") for p in ("/metrics", "/v2", "/docs", "/openapi.json")}
_FEATURES = Route("features", "predict", fast=True)
_OTHER = Route("other", "read")
_REGISTRY_READ = Route("registry", "read")
_REGISTRY_CHANGE = Route("registry_change", "admin", changes=True)
_DEPLOYMENTS_READ = Route("deployments", "read")
_DEPLOYMENTS_CHANGE = Route("deployments_change", "admin", changes=True)
_POST_ONLY = Route("method_not_allowed", "predict", wrong_method=True)  # predict, infer...
_GET_ONLY = Route("method_not_allowed", "read", wrong_method=True)  # metrics, metadata...
_READS = frozenset({"GET", "HEAD"})


_SEEN: dict[tuple[str, str], Route] = {}  # (method, path) -> its route, classified once
_SEEN_MAX = 1024  # paths come from clients: a bounded memo, emptied when full


def classify(method: str, path: str) -> Route:
    """The route of a request (no regular expressions: a few string tests).

    A path seen before (a served model's predict path, every request) answers from a bounded
    memo: routes are frozen, so one instance serves every request to its path.
    """
    key = (method, path)
    found = _SEEN.get(key)
    if found is None:
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        found = _SEEN[key] = _classify(method, path)
    return found


def _classify(method: str, path: str) -> Route:
    found = _OPEN.get(path) or _READ.get(path)
    if found is not None:
        return found if method in _READS or found.scope is None else _GET_ONLY
    if method != "POST" and _posted(path):
        return _POST_ONLY
    if path.startswith("/v1/models/") and path.endswith("/predict") and method == "POST":
        name, version = _name_version(path[11:-8])  # .../{name}[/versions/{v}]/predict
        return Route("predict", "predict", name, version, fast=True)
    if path.startswith("/v1/models/") and path.endswith("/explain") and method == "POST":
        name, version = _name_version(path[11:-8])
        return Route("explain", "predict", name, version, fast=True)
    if path.startswith("/v1/models/") and path.endswith("/feedback") and method == "POST":
        return Route("feedback", "predict", path[11:-9])  # labels: whoever may predict
    if path.startswith("/v2/models/"):
        rest = path[11:]
        if rest.endswith("/infer") and method == "POST":
            name, version = _name_version(rest[:-6])
            return Route("infer", "predict", name, version, fast=True)
        if method not in _READS:
            return _GET_ONLY
        label = "model_ready" if rest.endswith("/ready") else "model_metadata"
        return Route(label, "read")
    if path == "/v1/features" and method == "POST":
        return _FEATURES
    if path.startswith("/v1/registry/"):
        return _REGISTRY_READ if method in ("GET", "HEAD") else _REGISTRY_CHANGE
    if path == "/v1/deployments" or path.startswith("/v1/deployments/"):
        return _DEPLOYMENTS_READ if method in ("GET", "HEAD") else _DEPLOYMENTS_CHANGE
    return _OTHER


def _posted(path: str) -> bool:
    """Whether ``path`` is one that only POST reaches (predict, explain, feedback, infer,
    features)."""
    if path.startswith("/v1/models/"):
        return path.endswith(("/predict", "/explain", "/feedback"))
    return path == "/v1/features" or (path.startswith("/v2/models/") and path.endswith("/infer"))


def _name_version(rest: str) -> tuple[str, str | None]:
    name, marker, version = rest.partition("/versions/")
    return name, (version if marker else None)


class Observe:
    """Request id, error answers, metrics and access log for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, ids: RequestIds | None = None) -> None:
        self.app = app
        self.metrics = metrics
        # a Guard just inside is run in this pass (its checks, then its app): one layer less
        self._guard = app if isinstance(app, Guard) else None
        self._inner = app.app if isinstance(app, Guard) else app
        #: The ids given to requests that come without one.
        self.ids = ids or RequestIds()
        self._new_id = self.ids.new
        #: Headers added to every answer after the request id (``--workers``: Keel-Worker).
        self.headers: tuple[tuple[bytes, bytes], ...] = ()
        #: Guard's checks (token and scope, content type; raises KeelError) as
        #: ``check(method, headers, route)``, the token back (None: no Guard, or an open
        #: route): Guard's own ``verify``, bound here so that the lean path makes one call.
        self.check: Callable[[str, Mapping[bytes, bytes], Route], Any] = (
            _unchecked if self._guard is None else self._guard.verify
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        scope["keel.headers"] = headers
        method, path = scope["method"], scope["path"]
        route = _SEEN.get((method, path)) or classify(method, path)  # the memo, then classify
        scope["keel.route"] = route
        request_id = scope["keel.request_id"] = self.request_id(headers)
        id_header = (b"keel-request-id", request_id.encode())
        status = 500
        started_response = False

        def send_with_id(message: Message) -> Awaitable[None]:
            # a plain function handing back send's awaitable: no coroutine of its own per
            # message (the caller awaits it at once, so the bookkeeping here is as timely)
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", ()), id_header, *self.headers]
            return send(message)

        try:
            if self._guard is not None:
                self._guard.check(scope, headers, route)
            await self._inner(scope, receive, send_with_id)
        except KeelError as exc:
            if started_response:
                raise
            status, error_headers, body = error_answer(exc)
            await send_with_id(
                {"type": "http.response.start", "status": status, "headers": error_headers}
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            self.done(route, method, path, request_id, status, started)

    # The steps of a request, as plain calls: ``__call__`` above and the server's lean HTTP
    # path (:mod:`keel.serve.exchange`) both run these, so the two answer alike.

    def request_id(self, headers: Mapping[bytes, bytes]) -> str:
        """The request's id: a well-formed incoming one kept, else a new one."""
        given = headers.get(b"keel-request-id") or headers.get(b"x-request-id")
        request_id = given.decode("latin-1") if given else ""
        if not request_id or not _ID.fullmatch(request_id):
            request_id = self._new_id()
        return request_id

    def done(
        self, route: Route, method: str, path: str, request_id: str, status: int, started: float
    ) -> None:
        """Count the answered request in the metrics and write its access log line."""
        elapsed = time.perf_counter() - started
        self.metrics.observe(route.label, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %d %.3f ms", request_id, method, path, status, elapsed * 1000)


def _unchecked(method: str, headers: Mapping[bytes, bytes], route: Route) -> Any:
    return None


def error_answer(exc: KeelError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A KeelError's answer: status, headers (``Retry-After`` when it has one; the connection
    closed on 408 and 413, whose body is left unread) and JSON body."""
    body = orjson.dumps(exc.to_dict())
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if exc.http_status in (408, 413):  # the rest of the body is not read: end the connection
        headers.append((b"connection", b"close"))
    return exc.http_status, headers, body


class Guard:
    """Auth (the route's scope) and the JSON content type of POST bodies."""

    def __init__(
        self, app: ASGIApp, auth: Authenticator | None, changes: Authenticator | None = None
    ) -> None:
        self.app = app
        self.auth = auth
        self.changes = auth or changes  # state changes are checked even with auth off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.check(scope, scope["keel.headers"], scope["keel.route"])
        await self.app(scope, receive, send)

    def check(self, scope: Scope, headers: Mapping[bytes, bytes], route: Route) -> None:
        """:meth:`verify`, the token kept in the scope (``keel.token``) for the routes."""
        token = self.verify(scope["method"], headers, route)
        if token is not None:
            scope["keel.token"] = token

    def verify(self, method: str, headers: Mapping[bytes, bytes], route: Route) -> Any:
        """The token for the route's scope, and a JSON body for a POST (raises KeelError);
        the token, or None where the route needs none."""
        checker = self.changes if route.changes else self.auth
        token = None
        if checker is not None and route.scope is not None:
            try:
                token = checker.check(headers.get(b"authorization"), route.scope)
            except Forbidden:  # a valid token: a method the path does not take is 405
                if not route.wrong_method:
                    raise
        elif route.changes:
            raise Unauthorized(
                "this server cannot check tokens, so it refuses changes; serve a project "
                "to change its registry over HTTP.",
                field="authorization",
            )
        if method == "POST":
            media = headers.get(b"content-type")
            if media != b"application/json" and not route.wrong_method:  # (no call for JSON)
                check_content_type(media)
        return token
