"""uvicorn's HTTP protocol with a header deadline, a connection cap, and one write per answer.

uvicorn arms its keep-alive timer only after a response, and cancels it when any byte arrives:
a client that connects and sends half a header line keeps its socket (and a file descriptor)
forever, and 20,000 of them exhaust the process. Here a connection that is not inside a request
(just opened, or idle between requests) must finish its request headers within
``serve.idle_timeout_s`` or it is closed; headers larger than 64 KiB get 431. At
``serve.max_connections`` a new connection evicts the oldest such idle one (an attacker's
half-open sockets go first, a client mid-request is never cut); when every connection is busy
the new one is closed at once. Each request's scope carries ``keel.connections`` (the open
connections and the idle ones, live): how many are inside a request, which the app reads to
score a lone small request on the event loop (``ServerApp._inline``); once the whole body is in,
``keel.body_complete`` and ``keel.body`` (the body ``receive()`` would hand over, which Keel's
router then takes without a ``receive()``).

What a request costs the event loop here, beyond uvicorn's parsing:

- *No timer per request.* The idle connections are kept in one dict per server, oldest first,
  with the time each became idle; one sweep per server (every quarter of the deadline, at most
  a second) closes those past it. This deadline is also the keep-alive timeout, so uvicorn's
  own keep-alive timer (armed after every response, cancelled by the next request) is not
  armed. A connection is closed between ``idle_timeout_s`` and ``idle_timeout_s`` plus the
  sweep period after it went idle.
- *One write per answer.* uvicorn writes the status line and headers, then the body: two
  system calls, two TCP segments and two wake-ups of the client for one small answer (on
  loopback each write also runs the receiver's TCP input and wake-up on this core). The
  answer's head is held back here and written with the first body chunk (an empty one when
  the answer has no body). An app that starts an answer and fails before its body gets its
  connection closed by uvicorn, as before, now without the head.
- *No task for a lone client's request.* uvicorn starts every request in a new task, which
  runs on the loop's next turn: a task and one more loop turn (a system call) per request.
  When this is the only open connection (no other request can arrive in the same turn, so
  none could be batched with it) and a predict, infer or features request came whole, Keel's
  router runs at once inside ``data_received``; an inline prediction answers before it
  returns. Should it wait (a batch, a thread), a task carries it on from there, in the same
  context. With other connections open, requests start in tasks as before.
- *No ASGI for a whole small prediction.* A predict, infer, explain or features request that
  arrives whole in one read (headers and complete body) on a connection between requests is
  answered by the lean path (:mod:`keel.serve.exchange`): no scope dict, request/response
  cycle, task or ASGI messages; the same middleware steps and scoring as plain calls, and the
  answer in one write, the same bytes. Its start waits for the loop's other reads of this
  turn when other connections are open (concurrent requests then see each other and are
  batched); a batched answer is written from a callback on the batch's future. Bytes that
  arrive while it is in flight are held and read after its answer (HTTP order).
- *No sleep right after an answer.* For ``serve.busy_poll_us`` after each answer, while no
  connection is inside a request, the loop polls its sockets instead of sleeping
  (:mod:`keel.serve.busypoll`): a lone client's next request is read on an awake core.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, ClassVar

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from keel.serve.busypoll import BusyPoll
from keel.serve.exchange import Exchange, Reply, parse
from keel.serve.middleware import classify

__all__ = ["guarded_protocol"]


_NAMES_OK: set[bytes] = set()  # response header names already found valid


_PLAIN: tuple[list[tuple[bytes, bytes]], bytes | None] = ([], None)  # the last default block


def _default_block(defaults: list[tuple[bytes, bytes]]) -> bytes | None:
    """uvicorn's default response headers (``date``, ``server``) as one encoded block.

    uvicorn replaces the server's list once a second (the date); the block is encoded once per
    list. None when a default header would change the answer's framing (a configured
    ``content-length``, ``transfer-encoding`` or ``connection``) or is invalid: those go
    through the checks of every header, as in uvicorn.
    """
    global _PLAIN
    seen, block = _PLAIN
    if seen is defaults:
        return block
    block = None
    if not any(
        HEADER_RE.search(name)
        or HEADER_VALUE_RE.search(value)
        or name.lower() in (b"content-length", b"transfer-encoding", b"connection")
        for name, value in defaults
    ):
        block = b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in defaults)
    _PLAIN = (defaults, block)
    return block


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle, writing a response's head with its first body chunk."""

    _head: bytes = b""  # the status line and headers, held until the body comes

    async def send(self, message: Any) -> None:  # uvicorn's ASGISendEvent
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self._head = self._start(message)
            return
        if self.response_complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already "
                "completed."
            )
        if message["type"] != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
            )
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        head, self._head = self._head, b""
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            data = head
        elif self.chunked_encoding:
            chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            data = head + chunk + (b"" if more_body else b"0\r\n\r\n")
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            data = head + body if head else body
        if data:
            self.transport.write(data)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _start(self, message: Any) -> bytes:
        """A response's status line and headers (uvicorn's checks and defaults)."""
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status_code,
            )
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        seen, block = _PLAIN
        if seen is not self.default_headers:  # the server's list changed (once a second)
            block = _default_block(self.default_headers)
        if block is not None:  # the server's date and name: encoded once per second
            content.append(block)
            headers = message.get("headers", ())
        else:
            headers = self.default_headers + list(message.get("headers", []))
        for name, value in headers:
            if name not in _NAMES_OK:
                if HEADER_RE.search(name):
                    raise RuntimeError("Invalid HTTP header name.")
                if len(_NAMES_OK) < 256:  # the few names a server sends, checked once each
                    _NAMES_OK.add(name)
            if HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                has_connection_close = True
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status_code not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)


class _Guarded(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 5.0
    max_connections: ClassVar[int] = 2048
    max_header_bytes: ClassVar[int] = 64 * 1024
    busy_poll_s: ClassVar[float] = 0.0  # seconds the loop polls after an answer (busypoll)
    lean: ClassVar[bool] = True  # whole small fast requests skip ASGI (keel.serve.exchange)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting = False  # idle: the next request's headers are due before the deadline
        self._header_bytes = 0
        self._idle_ones = self._pending()
        self._poller: BusyPoll = self.server_state.keel_poll  # type: ignore[attr-defined]
        self._deferring = False
        self._deferred: tuple[Any, Any] | None = None
        self._exchange = _exchange(self) if self.lean else None
        self._parsing = False  # uvicorn's parser is inside a request (holds some of its bytes)
        self._held: list[bytes] | None = None  # a lean request is in flight: bytes after it
        self._lean_request: Any = None  # that request (keep-alive, the access log line)
        self._lean_scope = {  # what the app reads of a scope (ServerApp._inline)
            "keel.connections": (self.connections, self._idle_ones),
            "keel.body_complete": True,
        }
        if len(self.connections) > self.max_connections and not self._evict():
            transport.close()
            return
        self._idle()

    def _pending(self) -> dict[_Guarded, float]:
        """The server's idle connections, oldest first, with the loop time each went idle."""
        pending: dict[_Guarded, float] | None = getattr(self.server_state, "keel_idle", None)
        if pending is None:
            pending = {}
            self.server_state.keel_idle = pending  # type: ignore[attr-defined]
            self.server_state.keel_sweep = None  # type: ignore[attr-defined]
            connections = self.connections  # every open one; idle ones are in pending too
            self.server_state.keel_poll = BusyPoll(  # type: ignore[attr-defined]
                self.loop, self.busy_poll_s, lambda: len(connections) == len(pending)
            )
        return pending

    def _evict(self) -> bool:
        """Close the oldest idle connection; False when none is idle."""
        pending = self._pending()
        while pending:
            oldest = next(iter(pending))
            del pending[oldest]
            oldest._waiting = False
            if oldest is not self and not oldest.transport.is_closing():
                oldest._close()
                return True
        return False

    def _idle(self) -> None:
        """Not inside a request: the next request's headers must arrive before the deadline."""
        self._header_bytes = 0
        if self._waiting:
            return
        self._waiting = True
        self._idle_ones[self] = self.loop.time()
        if self.server_state.keel_sweep is None:  # type: ignore[attr-defined]
            self._arm_sweep()

    def _busy(self) -> None:
        if self._waiting:
            self._waiting = False
            self._idle_ones.pop(self, None)

    def _arm_sweep(self) -> None:
        period = min(1.0, self.header_timeout / 4)
        state = self.server_state
        state.keel_sweep = self.loop.call_later(  # type: ignore[attr-defined]
            period, _sweep, self.loop, state, self.header_timeout, period
        )

    def _close(self) -> None:
        self._busy()
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._waiting:  # inside a request: its body is the app's to limit
            if self._held is not None:  # a lean request's answer goes first (HTTP order)
                self._held.append(data)
                if len(self._held) > 1:  # a client pipelining more: stop reading it
                    self.flow.pause_reading()
                return
            super().data_received(data)
            return
        if self._exchange is not None and not self._parsing and self._lean(data):
            return
        self._header_bytes += len(data)
        self._deferred = None
        self._deferring = True  # a request whose headers complete here starts below
        try:
            super().data_received(data)  # may complete the headers (and carry the body's start)
        finally:
            self._deferring = False
        if self._waiting and self._header_bytes > self.max_header_bytes:
            self._busy()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()
        deferred = self._deferred
        if deferred is not None:
            self._deferred = None
            cycle, app = deferred
            scope = cycle.scope
            if (
                len(self.connections) == 1  # nothing else can arrive in this loop iteration
                and scope.get("keel.body_complete")
                and classify(scope["method"], scope["path"]).fast
            ):
                self._run_eagerly(cycle, app)
            else:
                super()._start_asgi_task(cycle, app)

    def _lean(self, data: bytes) -> bool:
        """Answer a whole small predict/infer/explain/features request without ASGI
        (:mod:`keel.serve.exchange`); False: not one, uvicorn's parser takes ``data``."""
        request = parse(data)
        if request is None or self.flow.write_paused:
            return False
        exchange = self._exchange
        assert exchange is not None
        route = exchange.route(request)
        if route is None:
            return False
        if self.access_log and (
            b"x-forwarded-for" in request.headers or b"x-forwarded-proto" in request.headers
        ):  # uvicorn's access log would name the proxied client (ProxyHeadersMiddleware)
            return False
        defaults = self.server_state.default_headers
        if (_PLAIN[1] if _PLAIN[0] is defaults else _default_block(defaults)) is None:
            return False
        if self._waiting:  # _busy(), written out
            self._waiting = False
            self._idle_ones.pop(self, None)
        self._lean_request = request
        self._held = []  # until it is answered: what else this client sends waits here
        if len(self.connections) == 1:  # nothing else can arrive in this loop iteration
            exchange.start(route, request, self._lean_scope, self._deliver)
        else:  # after this turn's other reads, so that concurrent requests see each other
            # (ServerApp._inline counts the connections inside a request: they are batched)
            self.loop.call_soon(exchange.start, route, request, self._lean_scope, self._deliver)
        return True

    def _deliver(self, reply: Reply) -> None:
        """A lean request's answer: one write, then as after any answer."""
        held, self._held = self._held, None
        request, self._lean_request = self._lean_request, None
        transport = self.transport
        if transport.is_closing():  # the client left (or the server closed it) meanwhile
            return
        status, headers, body = reply
        defaults = self.server_state.default_headers
        block = _PLAIN[1] if _PLAIN[0] is defaults else _default_block(defaults)
        content = [STATUS_LINE[status], block or b""]  # the date and server name, as uvicorn
        keep_alive, has_close = request.keep_alive, False
        for name, value in headers:
            content.extend((name, b": ", value, b"\r\n"))
            if name == b"connection":  # only ever "close" here (middleware.error_answer)
                keep_alive, has_close = False, True
        if not keep_alive and not has_close:
            content.append(b"connection: close\r\n")
        content.extend((b"\r\n", body))
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                f"{self.client[0]}:{self.client[1]}" if self.client else "",
                request.method,
                request.path,
                request.version,
                status,
            )
        transport.write(b"".join(content))
        if not keep_alive:
            transport.close()
        self.on_response_complete()  # the idle deadline, the busy poll, total_requests
        if held and not transport.is_closing():
            self.data_received(b"".join(held))

    def shutdown(self) -> None:
        if self._held is not None:  # a lean request in flight: close after its answer
            self._lean_request = self._lean_request._replace(keep_alive=False)
            return
        super().shutdown()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._deferring:  # called while parsing: the body may follow in this very chunk
            self._deferred = (cycle, app)
            return
        super()._start_asgi_task(cycle, app)

    def _run_eagerly(self, cycle: Any, app: Any) -> None:
        """Run a predict/infer/features request now, as far as it goes without waiting.

        Its whole body is in, so Keel's router reads it without a deadline timer and an
        inline prediction answers without ever waiting: no task, no loop iteration (and no
        system call) between the request and its answer. A request that waits (batched or
        threaded) goes on in a task from where it stopped, in the same context.
        """
        context = contextvars.copy_context()
        coro = cycle.run_asgi(app)
        try:
            yielded = context.run(coro.send, None)
        except StopIteration:
            return
        task = self.loop.create_task(_resume(coro, yielded), context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_headers_complete(self) -> None:
        if self._waiting:  # _busy(), written out: every request passes here
            self._waiting = False
            self._idle_ones.pop(self, None)
        # how many connections are inside a request, live, for the app (ServerApp._inline)
        self.scope["keel.connections"] = (self.connections, self._idle_ones)  # type: ignore[typeddict-unknown-key]
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = _Cycle  # one write per answer (uvicorn made it)

    def on_message_begin(self) -> None:
        self._parsing = True
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._parsing = False
        super().on_message_complete()
        # the whole body is in: the app's first receive() answers at once (limits.read_body)
        self.scope["keel.body_complete"] = True  # type: ignore[typeddict-unknown-key]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # and Keel's router takes it from here without a receive() (a coroutine and a
            # message) for it; receive() still hands it to any other app
            self.scope["keel.body"] = cycle.body  # type: ignore[typeddict-unknown-key]

    def on_response_complete(self) -> None:
        """uvicorn's, with the idle deadline (swept) in place of its keep-alive timer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request starts in its place
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._waiting:  # _idle(), written out: after every answer
            self._header_bytes = 0
            self._waiting = True
            self._idle_ones[self] = self.loop.time()
            if self.server_state.keel_sweep is None:  # type: ignore[attr-defined]
                self._arm_sweep()
        else:
            self._header_bytes = 0
        self._poller.answered()  # the next request is read without the loop sleeping first

    def connection_lost(self, exc: Exception | None) -> None:
        self._busy()
        super().connection_lost(exc)


def _sweep(loop: asyncio.AbstractEventLoop, state: Any, timeout: float, period: float) -> None:
    """Close the connections idle for ``timeout`` seconds or more; again in ``period``."""
    pending: dict[_Guarded, float] = state.keel_idle
    now = loop.time()
    while pending:
        oldest, since = next(iter(pending.items()))
        if now - since < timeout:
            break
        oldest._close()  # leaves pending
        pending.pop(oldest, None)
    state.keel_sweep = (
        loop.call_later(period, _sweep, loop, state, timeout, period) if pending else None
    )


class _Resume:
    """Awaits what a started coroutine waits for, then drives it on to its end."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        self.coro, self.yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, None]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # cancelled: the coroutine sees it where it waits
                try:
                    yielded = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration:
                    return


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    await _Resume(coro, yielded)


def _exchange(protocol: HttpToolsProtocol) -> Exchange | None:
    """The lean path's entry of the served app, or None: requests all go the ASGI way.

    Only Keel's server has one, served as uvicorn serves it (behind its proxy-headers
    middleware at most, no root path, no concurrency limit answered with 503).
    """
    app = protocol.app
    if isinstance(app, ProxyHeadersMiddleware):  # its rewrite of the client is not used here
        app = app.app
    exchange = getattr(app, "exchange", None)
    if protocol.root_path or protocol.limit_concurrency is not None:
        return None
    return exchange if isinstance(exchange, Exchange) else None


def guarded_protocol(
    *, header_timeout: float, max_connections: int, busy_poll_us: float = 0.0, lean: bool = True
) -> type[Any]:
    """The protocol class to give ``uvicorn.Config(http=...)`` (``lean``: False sends every
    request the ASGI way, :mod:`keel.serve.exchange`)."""
    return type(
        "KeelHttpProtocol",
        (_Guarded,),
        {
            "header_timeout": header_timeout,
            "max_connections": max_connections,
            "busy_poll_s": busy_poll_us / 1e6,
            "lean": lean,
        },
    )
