"""The lean HTTP path: a whole small predict, infer, explain or features request, no ASGI.

uvicorn turns every request into an ASGI scope dict, a request/response cycle, a task, a
``receive`` and two ``send`` messages, and Keel's middleware into a closure around ``send``:
about 90 of the ~160 Python calls the event loop makes per request at 64 connections, more
than the middleware and the model together. A request that arrives whole in one read (its
headers and its complete body: what every small client sends) needs none of it. Keel's HTTP
protocol (:mod:`keel.serve.protocol`) hands such a request's bytes to :func:`parse`, which
accepts only a plain subset of HTTP/1.1 (anything else goes the ASGI way, unchanged), and
then to :class:`Exchange`, which runs the very steps the ASGI path runs, as plain calls:
:class:`~keel.serve.middleware.Observe`'s request id, its error answers, metrics and access
log, :class:`~keel.serve.middleware.Guard`'s token, scope and content-type checks, and
:meth:`ServerApp.score <keel.serve.app.ServerApp.score>` with the shadow copy after the
answer. A batched request's answer is written from a callback on its batch's future: no task.

:func:`parse` takes a request only when all of these hold, so that it never reads a request
differently from uvicorn's parser: ``POST``, a path of plain characters (no ``%``, ``?`` or
``#``), ``HTTP/1.1`` or ``HTTP/1.0``, well-formed header fields with no trailing white space
and none repeated, a ``Content-Length`` that the rest of the read matches exactly (no second
request behind it), no ``Transfer-Encoding``, ``Expect`` or ``Upgrade``; headers under 16 KiB.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from keel.errors import KeelError
from keel.serve.middleware import Route, classify, error_answer

if TYPE_CHECKING:
    from keel.serve.app import ServerApp

__all__ = ["Exchange", "Reply", "Request", "answer_headers", "parse"]

_MAX_HEAD = 16 * 1024
# the request line and header fields; possessive: no backtracking, linear in the head's size
_HEAD = re.compile(
    rb"POST (/[A-Za-z0-9._~!$&'()*+,;=:@/-]*+) HTTP/1\.([01])\r\n"
    rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]++:[ \t]*+[^\x00-\x08\x0a-\x1f\x7f]*+\r\n)*+\r\n"
)
_FIELD = re.compile(rb"([^:\r\n]+):[ \t]*([^\r\n]*)\r\n")
_ERROR = logging.getLogger("uvicorn.error")
_INTERNAL = (  # uvicorn's answer when the app raised something else than a KeelError
    500,
    [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"21"),
        (b"connection", b"close"),
    ],
    b"Internal Server Error",
)


class Request(NamedTuple):
    """A whole request :func:`parse` accepted."""

    method: str
    path: str
    version: str  # "1.1" or "1.0"
    keep_alive: bool
    headers: dict[bytes, bytes]  # names lower-cased
    body: bytes


Reply = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
_JSON = (b"content-type", b"application/json")


def answer_headers(payload: bytes, version: str) -> list[tuple[bytes, bytes]]:
    """A scored request's answer headers, either path (the middleware adds the request id)."""
    headers = [_JSON, (b"content-length", str(len(payload)).encode())]
    if version:
        headers.append((b"keel-model-version", version.encode()))
    return headers


def parse(data: bytes) -> Request | None:
    """The one whole request ``data`` holds, or None: not one the lean path takes."""
    end = data.find(b"\r\n\r\n", 0, _MAX_HEAD)
    if end < 0:
        return None
    head = _HEAD.fullmatch(data, 0, end + 4)
    if head is None:
        return None
    fields = head.end(2) + 2
    if data.find(b" \r\n", fields, end + 2) >= 0 or data.find(b"\t\r\n", fields, end + 2) >= 0:
        return None  # a value with trailing white space: the parser strips it
    pairs = _FIELD.findall(data, fields, end + 2)
    headers = {name.lower(): value for name, value in pairs}
    length = headers.get(b"content-length")
    if (
        len(headers) != len(pairs)  # a field given twice
        or length is None
        or not length.isdigit()
        or len(data) - end - 4 != int(length)  # a body still to come, or another request
        or b"transfer-encoding" in headers
        or b"expect" in headers
        or b"upgrade" in headers
    ):
        return None
    keep_alive = head.group(2) == b"1"
    connection = headers.get(b"connection")
    if connection is not None:
        tokens = [token.strip().lower() for token in connection.split(b",")]
        if b"upgrade" in tokens:
            return None
        keep_alive = keep_alive and b"close" not in tokens
    version = "1.1" if head.group(2) == b"1" else "1.0"
    return Request(
        "POST", head.group(1).decode("ascii"), version, keep_alive, headers, data[end + 4 :]
    )


class Exchange:
    """The server's entry for the lean path: the middleware's steps and the scoring, as calls.

    Args:
        app: The server; its ``stack`` (Observe and Guard) and ``score``.
    """

    def __init__(self, app: ServerApp) -> None:
        self.app = app
        self.observe = app.stack
        self._tasks: set[asyncio.Future[Any]] = set()

    def route(self, request: Request) -> Route | None:
        """The request's route, or None: the ASGI path answers it (not a fast route, or a
        body past ``serve.max_body_mb``, refused there)."""
        route = classify(request.method, request.path)
        if not route.fast or len(request.body) > self.app.settings.limits.max_body:
            return None
        return route

    def start(
        self,
        route: Route,
        request: Request,
        scope: Mapping[str, Any],
        deliver: Callable[[Reply], None],
    ) -> None:
        """Answer ``request``: ``deliver(reply)`` now (inline, refused) or once scored.

        ``scope`` carries the server's live connection counts (``keel.connections``).
        """
        observe = self.observe
        started = time.perf_counter()
        request_id = observe.request_id(request.headers)
        end = partial(self._end, route, request, request_id, started, deliver)
        try:
            observe.check(request.method, request.headers, route)
            answered = self.app.score(route, request.body, request_id, scope)
        except Exception as exc:
            end(exc, None)
            return
        if isinstance(answered, tuple):
            end(None, answered)
            return
        if not isinstance(answered, asyncio.Future):  # a thread, a deployment's arm, features
            answered = asyncio.ensure_future(answered)
            self._tasks.add(answered)  # held: the loop keeps only weak references to tasks
            answered.add_done_callback(self._tasks.discard)
        answered.add_done_callback(partial(self._landed, end))

    @staticmethod
    def _landed(
        end: Callable[[BaseException | None, Any], None], future: asyncio.Future[Any]
    ) -> None:
        if future.cancelled():
            end(asyncio.CancelledError(), None)
        else:
            exc = future.exception()
            end(exc, None if exc is not None else future.result())

    def _end(
        self,
        route: Route,
        request: Request,
        request_id: str,
        started: float,
        deliver: Callable[[Reply], None],
        exc: BaseException | None,
        answered: tuple[int, bytes, str] | None,
    ) -> None:
        id_header = (b"keel-request-id", request_id.encode())
        if answered is not None:
            status, payload, version = answered
            headers = answer_headers(payload, version)
            headers.append(id_header)
            headers.extend(self.observe.headers)
            reply: Reply = (status, headers, payload)
        elif isinstance(exc, KeelError):
            status, headers, payload = error_answer(exc)
            headers.append(id_header)
            headers.extend(self.observe.headers)
            reply = (status, headers, payload)
        else:  # as uvicorn answers an app that raised: logged, 500, connection closed
            _ERROR.error("Exception in ASGI application\n", exc_info=exc)
            status, reply = 500, _INTERNAL
        deliver(reply)  # then, as in the ASGI path: the shadow copy, metrics and access log
        if answered is not None:
            self.app.mirror(route, status, request.body, answered[1], request_id)
        self.observe.done(route, request.method, request.path, request_id, status, started)
