"""Keel's HTTP protocol driven in process: one write per answer, idle deadlines by one sweep.

The protocol class ``keel serve`` gives uvicorn gets raw request bytes through
``data_received`` on a recording transport (as uvloop hands them over), so what it writes and
when it closes a connection are seen exactly. The real server behind it is covered by
tests/serve/test_hardening.py (slow clients, 431) and test_inline.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from keel.serve.protocol import guarded_protocol
from tests.serve.transport import Transport

BODY = b'{"instances": [{"age": 39}]}'
POST = (
    b"POST /v1/models/adult/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ANSWER = b'{"predictions": [1]}'


async def answer(scope: Any, receive: Any, send: Any) -> None:
    """Reads the body; answers by the path: sized, chunked (streamed), HEAD, or a broken app."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/v1/models/slow/predict":  # waits on the loop before answering
        await asyncio.sleep(0.01)
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})
        return
    if path.startswith("/bad-"):  # a header name with a space, or a value with a line break
        bad = (b"x bad", b"1") if path == "/bad-name" else (b"x-bad", b"1\r\nset-cookie: a")
        await send({"type": "http.response.start", "status": 200, "headers": [bad]})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/broken":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("the app fails after starting its answer")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def _protocol(header_timeout: float = 5.0, max_connections: int = 64) -> tuple[Any, Any]:
    cls = guarded_protocol(header_timeout=header_timeout, max_connections=max_connections)
    config = uvicorn.Config(answer, http=cls, lifespan="off", log_level="critical",
                            proxy_headers=False, timeout_keep_alive=5)  # fmt: skip
    config.load()
    return cls, config


def _connect(cls: Any, config: Any, state: ServerState) -> tuple[Any, Transport]:
    protocol = cls(config=config, server_state=state, app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def _settle(transport: Transport, writes: int) -> None:
    deadline = time.monotonic() + 5
    while len(transport.writes) < writes and not transport.closed:
        assert time.monotonic() < deadline, transport.writes
        await asyncio.sleep(0)


def test_an_answer_is_one_write_and_keep_alive_arms_no_timer() -> None:
    async def run() -> None:
        cls, config = _protocol()
        protocol, transport = _connect(cls, config, ServerState())
        for count in (1, 2, 3):  # keep-alive: three requests on one connection
            protocol.data_received(POST)
            await _settle(transport, count)
            await asyncio.sleep(0)
            assert len(transport.writes) == count  # head and body in one write
            head, _, body = transport.writes[-1].partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"content-length: %d" % len(ANSWER) in head
            assert body == ANSWER
            assert protocol.timeout_keep_alive_task is None  # the idle sweep stands in
            assert not transport.closed
        protocol.connection_lost(None)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (b"POST /stream HTTP/1.1", b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n"),
        (b"HEAD /sized HTTP/1.1", b"content-length: 20\r\n\r\n"),
    ],
)
def test_streamed_and_head_answers_keep_http_framing(request_line: bytes, expected: bytes) -> None:
    async def run() -> bytes:
        cls, config = _protocol()
        protocol, transport = _connect(cls, config, ServerState())
        request = POST.replace(b"POST /v1/models/adult/predict HTTP/1.1", request_line)
        protocol.data_received(request)
        await _settle(transport, 2 if b"stream" in request_line else 1)
        await asyncio.sleep(0)
        protocol.connection_lost(None)
        return b"".join(transport.writes)

    sent = asyncio.run(run())
    assert expected in sent
    if b"stream" in request_line:  # the head rides with the first chunk; the end follows
        assert sent.endswith(b"2\r\ncd\r\n0\r\n\r\n")
    else:
        assert sent.endswith(b"\r\n\r\n") and ANSWER not in sent


# "/bad-name" twice: a name found invalid is never cached as checked
@pytest.mark.parametrize("path", [b"/broken", b"/bad-name", b"/bad-value", b"/bad-name"])
def test_a_broken_app_or_header_ends_the_connection_unanswered(path: bytes) -> None:
    async def run() -> Transport:
        cls, config = _protocol()
        protocol, transport = _connect(cls, config, ServerState())
        protocol.data_received(POST.replace(b"/v1/models/adult/predict", path))
        deadline = time.monotonic() + 5
        while not transport.closed:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(run())
    assert transport.closed  # the answer was started and not finished: the client sees a close
    assert not transport.writes  # nothing of it went out (a bad header never does)


def test_idle_connections_are_swept_past_the_deadline_and_busy_ones_are_not() -> None:
    async def run() -> None:
        cls, config = _protocol(header_timeout=0.2)
        state = ServerState()
        idle, idle_transport = _connect(cls, config, state)
        half, half_transport = _connect(cls, config, state)
        busy, busy_transport = _connect(cls, config, state)
        served, served_transport = _connect(cls, config, state)
        half.data_received(b"POST /v1/models/adult/predict HTTP/1.1\r\nHost: x\r\nContent-")
        busy.data_received(POST.split(b"\r\n\r\n")[0] + b"\r\n\r\n{")  # inside its request
        served.data_received(POST)
        await _settle(served_transport, 1)
        assert len(state.keel_idle) == 3  # type: ignore[attr-defined]  # idle, half, served
        started = time.monotonic()
        while not (idle_transport.closed and half_transport.closed and served_transport.closed):
            assert time.monotonic() - started < 2.0, "the sweep did not close idle connections"
            await asyncio.sleep(0.01)
        assert time.monotonic() - started >= 0.15  # not before the deadline
        assert not busy_transport.closed  # a client mid-request is never cut by the deadline
        assert not state.keel_idle  # type: ignore[attr-defined]
        for protocol in (idle, half, busy, served):
            protocol.connection_lost(None)

    asyncio.run(run())


def test_the_connection_cap_evicts_the_oldest_idle_connection() -> None:
    async def run() -> None:
        cls, config = _protocol(max_connections=2)
        state = ServerState()
        first, first_transport = _connect(cls, config, state)
        second, second_transport = _connect(cls, config, state)
        third, third_transport = _connect(cls, config, state)  # over the cap: evicts the first
        assert first_transport.closed and not second_transport.closed
        assert not third_transport.closed
        assert second in state.keel_idle and third in state.keel_idle  # type: ignore[attr-defined]
        for protocol in (first, second, third):
            protocol.connection_lost(None)

    asyncio.run(run())


def test_a_lone_connections_complete_request_is_answered_without_a_loop_turn() -> None:
    async def run() -> None:
        cls, config = _protocol()
        state = ServerState()
        protocol, transport = _connect(cls, config, state)
        protocol.data_received(POST)  # no await: answered inside data_received
        assert len(transport.writes) == 1 and transport.writes[0].endswith(ANSWER)
        assert not state.tasks  # no task was made for it
        # a body still on its way: started in a task as uvicorn does, answered once it is in
        head, _, body = POST.partition(b"\r\n\r\n")
        protocol.data_received(head + b"\r\n\r\n" + body[:5])
        assert len(transport.writes) == 1 and state.tasks
        protocol.data_received(body[5:])
        await _settle(transport, 2)
        assert transport.writes[1].endswith(ANSWER)
        # an answer that waits goes on in a task from where it stopped
        protocol.data_received(POST.replace(b"/adult/", b"/slow/"))
        assert len(transport.writes) == 2
        assert len([task for task in state.tasks if not task.done()]) == 1
        await _settle(transport, 3)
        assert transport.writes[2].endswith(ANSWER)
        protocol.connection_lost(None)

    asyncio.run(run())


def test_with_other_connections_open_a_request_waits_for_the_loop() -> None:
    async def run() -> None:
        cls, config = _protocol()
        state = ServerState()
        protocol, transport = _connect(cls, config, state)
        other, _ = _connect(cls, config, state)  # a request on it could arrive in this turn
        protocol.data_received(POST)
        assert not transport.writes and len(state.tasks) == 1  # batched with it, if it comes
        await _settle(transport, 1)
        assert transport.writes[0].endswith(ANSWER)
        for each in (protocol, other):
            each.connection_lost(None)

    asyncio.run(run())
