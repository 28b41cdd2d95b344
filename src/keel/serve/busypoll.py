"""Busy polling: after an answer, the event loop polls its sockets a little before it sleeps.

A server answering one client at a time sleeps in ``epoll_wait`` between the answer and the
client's next request, a few tens of microseconds later. On a virtual machine the idle core
then halts (a VM exit); on any machine the core may drop into a deeper idle state or run
someone else's work. Waking up again costs more than the request: on this project's 2-core
benchmark VM the same request took 101 µs of CPU back to back, 159 µs after 200 µs idle and
280 µs after 1 ms (``benchmarks/serving/idle_gap.py``), and a lone client's median latency
was 0.21 ms with sleeping against 0.14 ms with a 200 µs poll (``benchmarks/RESULTS.md``).

So for ``serve.busy_poll_us`` after each answer, while no other request is in progress, the
loop keeps one callback ready, which makes it poll its sockets without blocking (timeout 0)
instead of sleeping: the next request is read the moment it lands, on a core that stayed
awake with warm caches. This is what Linux's ``net.core.busy_read`` does for devices that
support it (loopback and most virtual NICs do not).

Costs and bounds:
- At most ``busy_poll_us`` of CPU per answer, and only when the server is otherwise idle: a
  server answering 100 requests a second spends at most 2 % of a core on it (200 µs each).
- It stops at once when a request is inside the server (the loop has work, or a prediction
  thread needs the core: polling then would steal its time) and never delays a callback.
- 0 turns it off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["BusyPoll"]


class BusyPoll:
    """Keeps an event loop polling for ``window_s`` after each answer while ``idle()`` holds.

    Args:
        loop: The server's event loop.
        window_s: Seconds to poll after an answer (0: never).
        idle: Whether no request is in progress (polling stops as soon as it is false).
    """

    __slots__ = ("_deadline", "_idle", "_loop", "_polling", "polls", "window_s")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, window_s: float, idle: Callable[[], bool]
    ) -> None:
        self._loop = loop
        self.window_s = window_s
        self._idle = idle
        self._deadline = 0.0
        self._polling = False
        self.polls = 0  # loop turns spent polling (tests read it)

    def answered(self) -> None:
        """An answer was written: poll until ``window_s`` from now, unless disabled."""
        if self.window_s <= 0.0:
            return
        self._deadline = time.perf_counter() + self.window_s
        if not self._polling:
            self._polling = True
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        # one loop turn: while this callback is ready again, the loop's next wait has timeout 0
        if time.perf_counter() < self._deadline and self._idle():
            self.polls += 1
            self._loop.call_soon(self._poll)
        else:
            self._polling = False
