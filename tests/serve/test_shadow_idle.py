"""The shadow child leaves a core the server keeps busy: after a read for which it waited for
the CPU longer than it ran, it reports and only looks, every BACKOFF_S, whether the CPU is free
(it ran at once on waking); it reads again once it is, or after MAX_LOOKS looks (it never
stops scoring). The copies meanwhile wait in the pipe (beyond it the server drops and counts
them). With a CPU to spare it reads on at full speed, never sleeping."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from keel.serve import shadow_worker
from keel.serve.shadow import Copy, WorkerSettings, copy_frame
from keel.serve.shadow_worker import (
    BACKOFF_S,
    FREE_WAIT_NS,
    MAX_LOOKS,
    MAX_ROWS,
    SHARED_ROWS,
    ShadowWorker,
    free_after,
)


class _Cpu:
    """A scripted ``/proc/thread-self/schedstat``: each reading adds 1 ms run, and 5 ms of
    waiting for a CPU while ``busy`` (the server keeps the core), none otherwise."""

    def __init__(self, busy: bool) -> None:
        self.busy = busy
        self.ran = self.waited = self.runs = 0

    def read(self) -> tuple[int, int, int]:
        self.ran += 1_000_000
        self.waited += 5_000_000 if self.busy else 0
        self.runs += 1
        return self.ran, self.waited, self.runs


class _Worker(ShadowWorker):
    """The child's loop without a project: it records what it scored and reported."""

    def __init__(self, settings: WorkerSettings, events: list[str]) -> None:  # no project
        self.settings = settings
        self.events = events
        self.log = None
        self.backoffs = self.looks = 0

    def handle(self, frames: Sequence[bytes]) -> None:
        self.events.extend(f"copy {frame[-4:].decode()}" for frame in frames)

    def report(self) -> None:
        self.events.append("report")


def _copies(ids: range) -> bytes:
    return b"".join(
        copy_frame("d", "adult", "2", f"r{i:04d}", "predict", b"{}", b"%04d" % i) for i in ids
    )


def _run(monkeypatch: pytest.MonkeyPatch, cpu: _Cpu, events: list[str], free_at: int) -> _Worker:
    """Nine copies in the pipe, three per read; the CPU is free from the ``free_at``-th sleep
    on (the server went idle)."""
    monkeypatch.setattr(shadow_worker, "_schedstat", cpu.read)
    monkeypatch.setattr(shadow_worker, "READ_BYTES", len(_copies(range(3))))
    copies_in, copies_out = os.pipe()
    os.write(copies_out, _copies(range(9)))
    sleeps = iter(range(1, 100))

    def sleep(seconds: float) -> None:
        events.append(f"sleep {seconds}")
        if next(sleeps) == free_at:
            cpu.busy = False

    monkeypatch.setattr(shadow_worker.time, "sleep", sleep)
    os.close(copies_out)  # the child reads what the pipe holds, then its end
    settings = WorkerSettings(project="", copies=copies_in, reports=-1, parent=os.getppid())
    worker = _Worker(settings, events)
    try:
        worker.run()
    finally:
        os.close(copies_in)
    return worker


def test_free_after_reads_the_wait_on_waking() -> None:
    assert free_after((0, 0, 0), (10_000, FREE_WAIT_NS, 1)) is True  # ran at once on waking
    assert free_after((0, 0, 0), (10_000, FREE_WAIT_NS + 1, 1)) is False  # queued: busy
    assert free_after(None, (1, 2, 3)) is True and free_after((1, 2, 3), None) is True


def test_on_a_busy_core_the_child_only_looks_until_it_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    worker = _run(monkeypatch, _Cpu(busy=True), events, free_at=MAX_LOOKS + 1)
    read = [f"copy {i:04d}" for i in range(9)]
    sleep = f"sleep {BACKOFF_S}"
    assert events[:4] == [*read[0:3], "report"]  # scored, reported, then off the CPU
    looks = 4 + MAX_LOOKS
    assert events[4:looks] == [sleep] * MAX_LOOKS  # nothing read while busy: only looks
    assert events[looks : looks + 3] == read[3:6]  # one read after MAX_LOOKS (never stops)
    assert events[looks + 3 : looks + 5] == ["report", sleep]  # still busy: off again
    assert events[looks + 5 : looks + 8] == read[6:9]  # free at the first look: read on
    assert sleep not in events[looks + 5 :]
    assert worker.backoffs == 2 and worker.looks == MAX_LOOKS + 1


def test_with_a_cpu_to_spare_the_child_reads_on_at_full_speed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    worker = _run(monkeypatch, _Cpu(busy=False), events, free_at=0)
    assert [e for e in events if e != "report"] == [f"copy {i:04d}" for i in range(9)]
    assert worker.backoffs == 0 and worker.looks == 0


class _Scorer(ShadowWorker):
    """score() alone: the rows of each model call it makes, and the CPU yields between."""

    def __init__(self, rows: int, events: list[str]) -> None:  # no project
        self.rows = rows
        self.events = events

    def _batch(
        self, model: object, batch: Sequence[tuple[Copy, list[object], list[object]]]
    ) -> None:
        self.events.append(f"call {sum(len(rows) for _, rows, _ in batch)}")


def test_on_a_shared_core_the_child_scores_in_short_calls_yielding_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    monkeypatch.setattr(shadow_worker, "_yield", lambda: events.append("yield"))
    copies = [
        Copy("d", "adult", "2", f"r{i}", "predict", b'{"instances": [{}]}', b'{"predictions": [1]}')
        for i in range(10)
    ]
    _Scorer(SHARED_ROWS, events).score(None, copies)  # after a contended read
    calls = [f"call {SHARED_ROWS}", "yield"] * (10 // SHARED_ROWS)
    assert events == [*calls, f"call {10 % SHARED_ROWS}"]
    events.clear()
    _Scorer(MAX_ROWS, events).score(None, copies)  # a CPU to spare: one call, no yield
    assert events == ["call 10"]
