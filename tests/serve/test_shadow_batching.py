"""The shadow channel, in process: copies made on the event loop cross the
pipe in batches (one write per batch, none per copy, no thread woken), every copy is either
sent or counted as dropped, and a copy made outside an event loop is written at once; the
child stays off a core the server keeps busy."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest

from keel.serve.routing import Traffic
from keel.serve.shadow import BATCH_S, COPY, Shadows, _Child, read_copy, split_frames


class _Model:
    version = "2"


@pytest.fixture
def channel() -> Iterator[tuple[Shadows, int]]:
    """Shadows wired to a pipe whose reading end the test holds (no child process)."""
    reading, writing = os.pipe()
    os.set_blocking(writing, False)
    os.set_blocking(reading, False)
    shadows = Shadows(Traffic(), project=None)
    shadows._followed = True  # routes followed: a copy never starts a child
    shadows._child = _Child(cast(Any, None), writing, -1)
    yield shadows, reading
    os.close(reading)
    child = shadows._child
    if child is not None and child.copies >= 0:
        os.close(child.copies)


def _submit(shadows: Shadows, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        body = b'{"instances": [{"age": %d}]}' % i
        shadows.submit("adult", "d1", cast(Any, _Model()), body, b'{"predictions":[0]}', f"r{i}")


def _read(reading: int) -> list[str]:
    """The request ids of the copies in the pipe."""
    buffer = bytearray()
    while True:
        try:
            chunk = os.read(reading, 1 << 20)
        except BlockingIOError:
            break
        buffer += chunk
    frames = split_frames(buffer)
    assert not buffer and all(f[:1] == COPY for f in frames)
    return [read_copy(f[1:]).request_id for f in frames]


def test_copies_on_the_loop_cross_the_pipe_in_one_write_per_batch(
    channel: tuple[Shadows, int],
) -> None:
    shadows, reading = channel

    async def scenario() -> tuple[int, list[str], int, list[str]]:
        _submit(shadows, 300)  # as answers do, one after another on the loop
        writes_before = shadows.writes
        early = _read(reading)  # nothing crossed yet: the child is not woken per copy
        await asyncio.sleep(BATCH_S * 3)
        first = shadows.writes
        _submit(shadows, 200, start=300)
        await asyncio.sleep(BATCH_S * 3)
        return writes_before, early, first, _read(reading)

    writes_before, early, first, got = asyncio.run(scenario())
    assert writes_before == 0 and early == []
    assert first == 1  # 300 copies, one write
    assert shadows.writes == 2  # and the next 200, one more
    assert got == [f"r{i}" for i in range(500)]  # all of them, in order
    child = shadows._child
    assert child is not None and child.sent == 500 and shadows.dropped == 0


def test_a_batch_the_pipe_cannot_take_is_kept_or_dropped_and_every_copy_counted(
    channel: tuple[Shadows, int],
) -> None:
    shadows, reading = channel
    shadows.max_bytes = 64 << 10  # a small buffer: the pipe fills, then the buffer
    child = shadows._child
    assert child is not None

    async def scenario() -> None:
        for start in range(0, 40_000, 2_000):  # a child that never reads (starved)
            _submit(shadows, 2_000, start)
            await asyncio.sleep(0)
        await asyncio.sleep(BATCH_S * 3)  # retried on the loop, never by a woken thread

    asyncio.run(scenario())
    assert shadows.dropped > 0 and child.sent > 0
    assert child.sent + shadows.dropped == 40_000  # sent or dropped, none lost uncounted
    assert shadows._wakeup is None  # no keeper was needed (none started, none woken)
    assert shadows.writes <= 40_000 // 2_000 + 10  # a write per batch (or retry), not per copy
    crossed = bytearray()  # what crossed, then what waits for the next batch: whole copies
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(reading, 1 << 20):
            crossed += chunk
    crossed += shadows._pending
    frames = split_frames(crossed)
    assert not crossed and len(frames) == child.sent


def test_a_copy_made_outside_an_event_loop_is_written_at_once(
    channel: tuple[Shadows, int],
) -> None:
    shadows, reading = channel
    _submit(shadows, 3)
    assert shadows.writes == 3 and _read(reading) == ["r0", "r1", "r2"]


def test_the_child_stays_off_a_core_the_server_keeps_busy() -> None:
    """Waited for a CPU longer than it ran: contended (the child leaves the core for
    BACKOFF_S); a CPU to spare, or no statistics: not."""
    from keel.serve.shadow_worker import contended

    before = (10_000_000, 5_000_000, 40)
    assert contended(before, (14_000_000, 6_000_000, 44)) is False  # ran 4 ms, waited 1
    assert contended(before, (11_000_000, 9_000_000, 44)) is True  # ran 1 ms, waited 4
    assert contended(None, before) is False and contended(before, None) is False


def test_a_full_buffer_drops_a_copy_before_framing_it(
    channel: tuple[Shadows, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy the buffer cannot hold is counted as dropped without being framed (the
    server's cost of a copy while the child is starved: 1.4 -> 0.4 µs)."""
    from keel.serve import shadow

    def framed(*args: object) -> bytes:
        raise AssertionError("a copy the buffer cannot hold was framed")

    shadows, _ = channel
    shadows.max_bytes = 0
    monkeypatch.setattr(shadow, "copy_frame", framed)
    _submit(shadows, 5)
    assert shadows.dropped == 5 and not shadows._pending and shadows.writes == 0
