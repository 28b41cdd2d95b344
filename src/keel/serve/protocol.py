"""uvicorn's HTTP protocol with a header deadline and a connection cap that evicts idle ones.

uvicorn arms its keep-alive timer only after a response, and cancels it when any byte arrives:
a client that connects and sends half a header line keeps its socket (and a file descriptor)
forever, and 20,000 of them exhaust the process. Here a connection that is not inside a request
(just opened, or idle between requests) must finish its request headers within
``serve.idle_timeout_s`` or it is closed; headers larger than 64 KiB get 431. At
``serve.max_connections`` a new connection evicts the oldest such idle one (an attacker's
half-open sockets go first, a client mid-request is never cut); when every connection is busy
the new one is closed at once. Each request's scope carries ``keel.connections`` (the open
connections and the idle ones, live): how many are inside a request, which the app reads to
score a lone small request on the event loop (``ServerApp._inline``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["guarded_protocol"]


class _Guarded(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 5.0
    max_connections: ClassVar[int] = 2048
    max_header_bytes: ClassVar[int] = 64 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        if len(self.connections) > self.max_connections and not self._evict():
            transport.close()
            return
        self._idle()

    def _pending(self) -> dict[_Guarded, None]:
        pending: dict[_Guarded, None] | None = getattr(self.server_state, "keel_idle", None)
        if pending is None:
            pending = {}
            self.server_state.keel_idle = pending  # type: ignore[attr-defined]
        return pending

    def _evict(self) -> bool:
        """Close the oldest idle connection; False when none is idle."""
        pending = self._pending()
        while pending:
            oldest = next(iter(pending))
            del pending[oldest]
            if oldest is not self and not oldest.transport.is_closing():
                oldest._close()
                return True
        return False

    def _idle(self) -> None:
        """Not inside a request: the next request's headers must arrive before the deadline."""
        self._pending()[self] = None
        self._header_bytes = 0
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._close)

    def _busy(self) -> None:
        self._pending().pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close(self) -> None:
        self._busy()
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None:  # inside a request: its body is the app's to limit
            super().data_received(data)
            return
        self._header_bytes += len(data)
        super().data_received(data)  # may complete the headers (and carry the body's start)
        if self._deadline is not None and self._header_bytes > self.max_header_bytes:
            self._busy()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._busy()
        # how many connections are inside a request, live, for the app (ServerApp._inline)
        self.scope["keel.connections"] = (self.connections, self._pending())  # type: ignore[typeddict-unknown-key]
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # the whole body is in: the app's first receive() answers at once (limits.read_body)
        self.scope["keel.body_complete"] = True  # type: ignore[typeddict-unknown-key]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # idle unless a pipelined request started in its place
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._busy()
        super().connection_lost(exc)


def guarded_protocol(*, header_timeout: float, max_connections: int) -> type[Any]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    return type(
        "KeelHttpProtocol",
        (_Guarded,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )
