"""Busy polling after an answer: the loop polls while idle, stops when a request is in progress."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from keel.config.project import ServeConfig
from keel.serve.busypoll import BusyPoll
from keel.serve.protocol import guarded_protocol
from tests.serve.test_protocol import POST, _connect, _settle, answer

SLOW = POST.replace(b"/adult/", b"/slow/")  # the test app holds it on the loop for 10 ms


def _server(busy_poll_us: float) -> tuple[Any, Any, ServerState]:
    cls = guarded_protocol(header_timeout=5.0, max_connections=64, busy_poll_us=busy_poll_us)
    config = uvicorn.Config(answer, http=cls, lifespan="off", log_level="critical",
                            proxy_headers=False, timeout_keep_alive=5)  # fmt: skip
    config.load()
    return cls, config, ServerState()


async def _turns(seconds: float) -> int:
    """How many times the loop ran a ready callback of ours in ``seconds`` of waiting."""
    deadline = time.perf_counter() + seconds
    turns = 0
    while time.perf_counter() < deadline:
        await asyncio.sleep(0)
        turns += 1
    return turns


async def _test_polls_for_its_window_then_stops() -> None:
    loop = asyncio.get_running_loop()
    poll = BusyPoll(loop, 0.05, lambda: True)
    poll.answered()
    started = time.perf_counter()
    while poll._polling:
        assert time.perf_counter() - started < 2.0, "polling never stopped"
        await asyncio.sleep(0.001)
    assert poll.polls >= 3  # the loop kept turning without sleeping
    assert time.perf_counter() - started >= 0.05
    polls = poll.polls
    await asyncio.sleep(0.06)
    assert poll.polls == polls  # nothing after the window


def test_polls_for_its_window_then_stops() -> None:
    asyncio.run(_test_polls_for_its_window_then_stops())


async def _test_stops_at_once_when_a_request_is_in_progress() -> None:
    loop = asyncio.get_running_loop()
    busy = False
    poll = BusyPoll(loop, 5.0, lambda: not busy)
    poll.answered()
    await _turns(0.005)
    assert poll.polls > 0
    busy = True
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    polls = poll.polls
    await asyncio.sleep(0.02)
    assert poll.polls == polls and not poll._polling
    busy = False
    poll.answered()  # the next answer polls again
    await _turns(0.005)
    assert poll.polls > polls


def test_stops_at_once_when_a_request_is_in_progress() -> None:
    asyncio.run(_test_stops_at_once_when_a_request_is_in_progress())


async def _test_off_schedules_nothing() -> None:
    poll = BusyPoll(asyncio.get_running_loop(), 0.0, lambda: True)
    poll.answered()
    await asyncio.sleep(0.01)
    assert poll.polls == 0 and not poll._polling


def test_off_schedules_nothing() -> None:
    asyncio.run(_test_off_schedules_nothing())


async def _test_the_protocol_polls_after_an_answer_and_not_while_a_request_runs() -> None:
    cls, config, state = _server(busy_poll_us=50_000)
    first, transport = _connect(cls, config, state)
    first.data_received(POST)
    await _settle(transport, 1)
    assert transport.writes[0].startswith(b"HTTP/1.1 200")
    poll: BusyPoll = state.keel_poll  # type: ignore[attr-defined]
    await _turns(0.005)
    assert poll.polls > 0  # idle after the answer: polling
    # a second connection's request holds the loop's attention for 10 ms: no polling meanwhile
    second, other = _connect(cls, config, state)
    second.data_received(SLOW)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    polls = poll.polls
    await asyncio.sleep(0.005)  # inside the slow request
    assert poll.polls == polls
    await _settle(other, 1)
    assert other.writes[0].startswith(b"HTTP/1.1 200")
    await _turns(0.005)
    assert poll.polls > polls  # its answer polls again
    for protocol in (first, second):
        protocol.connection_lost(None)


def test_the_protocol_polls_after_an_answer_and_not_while_a_request_runs() -> None:
    asyncio.run(_test_the_protocol_polls_after_an_answer_and_not_while_a_request_runs())


async def _test_off_by_setting_never_polls() -> None:
    cls, config, state = _server(busy_poll_us=0)
    protocol, transport = _connect(cls, config, state)
    protocol.data_received(POST)
    await _settle(transport, 1)
    await asyncio.sleep(0.01)
    assert state.keel_poll.polls == 0  # type: ignore[attr-defined]
    protocol.connection_lost(None)


def test_off_by_setting_never_polls() -> None:
    asyncio.run(_test_off_by_setting_never_polls())


def test_the_default_window() -> None:
    assert ServeConfig().busy_poll_us == 200.0
