"""keel.evaluate.workshare: tasks shared between threads, results in order, errors handed back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from keel.evaluate.workshare import Workshare, serially


def test_results_come_back_in_order_whichever_thread_ran_them() -> None:
    work = Workshare()
    ran_on: dict[int, str] = {}
    release = threading.Event()

    def task(i: int) -> int:
        if i == 0:  # hold the first task until another thread has taken one
            release.wait(timeout=10)
        elif i == 1:
            release.set()
        ran_on[i] = threading.current_thread().name
        return i * i

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="helper") as pool:
        served = pool.submit(work.serve)
        try:
            squares = work.map([lambda i=i: task(i) for i in range(40)])
        finally:
            work.close()
        served.result(timeout=10)  # serve() returns once closed
    assert squares == [i * i for i in range(40)]
    assert {n.split("_")[0] for n in ran_on.values()} == {"helper", "MainThread"}


def test_a_task_error_reaches_the_thread_that_waits_for_its_batch() -> None:
    work = Workshare()

    def boom() -> int:
        raise ZeroDivisionError("task 1")

    with pytest.raises(ZeroDivisionError, match="task 1"):
        work.map([lambda: 1, boom, lambda: 3])
    assert work.map([]) == []
    assert serially([lambda: 2, lambda: 5]) == [2, 5]


def test_urgent_tasks_run_before_those_queued_earlier() -> None:
    work = Workshare()
    seen: list[str] = []
    later = work.post([lambda: seen.append("queued")])
    assert work.map([lambda: seen.append("urgent")]) == [None]
    assert seen == ["urgent"]  # the map ran its own task first and returned
    later.result()
    assert seen == ["urgent", "queued"]
