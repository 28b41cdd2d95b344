"""Prediction worker threads: model work off the event loop, handed over in batches.

``loop.run_in_executor`` costs about 40 µs of CPU per call on one core (a
``concurrent.futures.Future`` with its lock and condition, a chained asyncio future, one
loop wake-up per call). Here one :class:`queue.SimpleQueue` (C, lock-free for the common case)
feeds the threads; a thread that finishes takes whatever else is already queued (up to
``batch`` items) before it wakes the loop once for all of their results. At one request at a
time that halves the hand-over; under concurrency it amortises to a couple of microseconds.

:meth:`Workers.submit_batch` hands over one call that answers many waiting requests (the
adaptive batcher, :mod:`keel.serve.batching`): its results resolve one future each, and a
callback on the loop says the thread is free for the next batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Workers"]

T = TypeVar("T")


class _Batch:
    """The waiting requests one batch call answers, and what to run on the loop after it."""

    __slots__ = ("done", "futures")

    def __init__(self, futures: list[asyncio.Future[Any]], done: Callable[[], None]) -> None:
        self.futures = futures
        self.done = done


_Job = tuple["asyncio.Future[Any] | _Batch", Callable[..., Any], tuple[Any, ...]]
# (future, result, error); a batch's: (its _Batch, its results in order, error), one entry
_Done = tuple["asyncio.Future[Any] | _Batch", Any, BaseException | None]


class Workers:
    """``threads`` daemon threads running submitted calls; results resolve asyncio futures.

    Args:
        threads: How many threads (each runs ``initializer`` first).
        initializer: Run once in each thread before its first job (thread pinning).
        batch: Most results delivered to the loop per wake-up.
    """

    def __init__(
        self, threads: int, *, initializer: Callable[[], None] | None = None, batch: int = 32
    ) -> None:
        self.threads = threads
        self.initializer = initializer
        self.batch = batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: list[threading.Thread] = []

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread and wait for its result (or exception)."""
        loop = self._loop
        if loop is None:
            loop = self._start()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((future, fn, args))
        return await future

    def submit_batch(
        self,
        fn: Callable[..., list[Any]],
        args: tuple[Any, ...],
        futures: list[asyncio.Future[Any]],
        done: Callable[[], None],
    ) -> None:
        """Run ``fn(*args)`` in a worker thread; its i-th result resolves ``futures[i]``.

        Call from the event loop. ``done`` runs on the loop once the results are delivered (or
        the call raised: then every future gets the exception).
        """
        if self._loop is None:
            self._start()
        self._queue.put((_Batch(futures, done), fn, args))

    def _start(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        for index in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"keel-predict-{index}", daemon=True)
            thread.start()
            self._started.append(thread)
        return self._loop

    def close(self) -> None:
        """Stop the threads after the jobs already queued."""
        for _ in self._started:
            self._queue.put(None)
        for thread in self._started:
            thread.join(timeout=10)
        self._started.clear()
        self._loop = None

    def _work(self) -> None:
        if self.initializer is not None:
            self.initializer()
        jobs = self._queue
        loop = self._loop
        assert loop is not None
        while True:
            job = jobs.get()
            if job is None:
                return
            done = [_call(job)]
            results = _results(job)
            stop = False
            while results < self.batch:
                try:
                    more = jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                done.append(_call(more))
                results += _results(more)
            try:
                loop.call_soon_threadsafe(_deliver, done)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                return
            if stop:
                return


def _results(job: _Job) -> int:
    """What a job hands back counted in results (a batch: one per request, and its done)."""
    target = job[0]
    return len(target.futures) + 1 if isinstance(target, _Batch) else 1


def _call(job: _Job) -> _Done:
    target, fn, args = job
    try:
        result = fn(*args)
    except BaseException as exc:  # delivered to the awaiting request(s), raised there
        return (target, None, exc)
    if isinstance(target, _Batch) and len(result) != len(target.futures):
        raise ValueError(f"{len(result)} results for {len(target.futures)} requests")
    return (target, result, None)


def _deliver(done: list[_Done]) -> None:
    for target, result, error in done:
        if isinstance(target, _Batch):  # one result per request, then its thread is free
            if error is not None:
                for future in target.futures:
                    if not future.cancelled():
                        future.set_exception(error)
            else:
                for future, each in zip(target.futures, result, strict=True):
                    if not future.cancelled():
                        future.set_result(each)
            target.done()
            continue
        if target.cancelled():
            continue
        if error is not None:
            target.set_exception(error)
        else:
            target.set_result(result)
