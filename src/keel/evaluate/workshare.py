"""Small tasks that the threads of one step work through together.

The evaluate step has a few large pieces of work (bootstrap resamples, TreeSHAP rows,
permutation importance) and two threads. Run as whole pieces, one thread finishes first and
waits for the other. Cut into small tasks on one queue, every thread takes the next task when
it is free: a thread that needs a batch's results helps with queued tasks (any batch's) until
that batch is done, and a helper thread serves the queue until it is closed.

Results come back in the order the tasks were given, whichever thread ran them, so what is
computed does not depend on the scheduling. NumPy releases the GIL inside its loops, which is
what lets two threads running NumPy-heavy tasks use two cores.

Example:
    >>> work = Workshare()
    >>> with ThreadPoolExecutor(1) as pool:
    ...     pool.submit(work.serve)
    ...     try:
    ...         squares = work.map([lambda i=i: i * i for i in range(4)])
    ...     finally:
    ...         work.close()
    >>> squares
    [0, 1, 4, 9]
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batch", "Runner", "Workshare", "serially"]

T = TypeVar("T")
Runner = Callable[[Sequence[Callable[[], T]]], list[T]]  # runs tasks, results in order


def serially(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """The tasks one after the other on this thread (the default :data:`Runner`)."""
    return [task() for task in tasks]


class Batch(Generic[T]):
    """Tasks posted together; :meth:`result` returns their results in order."""

    def __init__(self, share: Workshare, size: int) -> None:
        self._share = share
        self._results: list[T | None] = [None] * size
        self._left = size
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        if size == 0:
            self._done.set()

    def _run(self, index: int, task: Callable[[], T]) -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = task()
        except BaseException as exc:  # handed to the thread that waits for the batch
            error = exc
        with self._lock:
            self._results[index] = value
            if error is not None and self._error is None:
                self._error = error
            self._left -= 1
            if self._left == 0:
                self._done.set()

    def result(self) -> list[T]:
        """The results in order: this thread runs queued tasks (any batch's) until none is
        left, then waits for the ones other threads are running.

        Raises:
            BaseException: The first exception a task of this batch raised.
        """
        while not self._done.is_set() and self._share.run_one(wait=False):
            pass
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._results  # type: ignore[return-value]  # every slot was filled


class Workshare:
    """One queue of tasks for the threads of one piece of work (see the module)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._queue: deque[tuple[Batch[object], int, Callable[[], object]]] = deque()
        self._closed = False

    def post(self, tasks: Sequence[Callable[[], T]], *, urgent: bool = False) -> Batch[T]:
        """Queue ``tasks`` (``urgent``: ahead of those queued, for a batch a thread is about to
        wait for) and return their batch without waiting."""
        batch: Batch[T] = Batch(self, len(tasks))
        entries = [(batch, i, task) for i, task in enumerate(tasks)]
        with self._ready:
            if urgent:
                self._queue.extendleft(reversed(entries))  # type: ignore[arg-type]
            else:
                self._queue.extend(entries)  # type: ignore[arg-type]
            self._ready.notify_all()
        return batch

    def map(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        """Run ``tasks`` on whichever threads are free (this one included); results in order."""
        return self.post(tasks, urgent=True).result()

    def run_one(self, *, wait: bool) -> bool:
        """Run the next queued task; False when there is none (``wait``: until one is posted
        or the queue is closed)."""
        with self._ready:
            while not self._queue:
                if not wait or self._closed:
                    return False
                self._ready.wait()
            batch, index, task = self._queue.popleft()
        batch._run(index, task)
        return True

    def serve(self) -> None:
        """Run tasks as they are posted until :meth:`close` (a helper thread's loop)."""
        while self.run_one(wait=True):
            pass

    def close(self) -> None:
        """Let :meth:`serve` return once the queue is empty."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
