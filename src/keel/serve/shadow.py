"""Shadow deployments, the server's side: copies of answered requests go to a child process.

A shadow version scores a copy of each answered predict and OIP infer request, off the
primary's CPU time: :class:`Shadows` hands the copies to one child process per server process
(:mod:`keel.serve.shadow_worker`) that scores scheduled ``SCHED_IDLE`` (elsewhere ``nice 19``;
it starts at ``nice 10``), so it never holds the server's GIL and the kernel preempts it
whenever the server has work.
The child loads the shadow version from the registry as the server loads any version
(verified package, never unpickled), scores the copies in batches, compares its answers with
the primary's, writes ``role=shadow`` records to its own prediction log file and reports its
copies' latency, errors and disagreements back, summed per deployment and version; the server
merges the sums into its :class:`~keel.serve.routing.Traffic` (a few additions a report, so the
thread reading them holds the GIL for microseconds), and ``keel deployments status`` and REST
show them as for any arm.

The channel is a pipe of length-prefixed frames (:func:`copy_frame`) written without ever
blocking a request. The event loop adds each copy to a bounded buffer and writes the buffer
to the pipe at most every :data:`BATCH_S` seconds, in one non-blocking ``write`` from a timer
callback: the child is woken once per batch, never per copy, and nothing else in the server
wakes up for a copy. (On one core a per-copy write and the keeper thread it woke when the
pipe was full cost a lone client's p99 more than the child's scoring: the keeper's wake-ups
preempted the event loop and took the GIL from it hundreds of times a second.) What the pipe
cannot take stays buffered for the next batch; a full buffer drops the copy, as does a copy
made while the child is down; both are counted in :attr:`Shadows.dropped`
(``keel_shadow_dropped``), with the copies a dead child took with it (sent, never reported).
A copy made outside an event loop is written at once (what the pipe cannot take is then
flushed by the keeper thread).
The keeper thread sleeps until a report, a new child or such a full pipe wakes it; it restarts a
child that died (after 0.25 s, doubling up to 5 s while it keeps dying) and, at
:meth:`Shadows.close`, lets it finish what it holds and waits for it (killed after a grace
period). The child lives while a deployment shadows something: once none does, its pipe is
closed, it finishes, reports and exits, and the keeper reaps it (a new shadow deployment
starts a new one). It also exits by itself when the server dies (the pipe's end of file). The
server's readiness does not depend on the shadow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from keel.serve.models import LoadedModel
    from keel.serve.routing import Copies, Traffic

__all__ = ["Copy", "Shadows", "WorkerSettings", "copy_frame", "read_copy", "split_frames"]

log = logging.getLogger("keel.serve")

_LENGTH = struct.Struct("<I")
_PARTS = struct.Struct("<III")  # a copy's meta, body and answer lengths
COPY, WANT, REPORT = b"C", b"W", b"R"
PIPE_BYTES = 1 << 20
"""The pipe's capacity asked for (Linux; the unprivileged maximum by default)."""
RESTART_S = (0.25, 5.0)
"""A dead child is restarted after the first delay, doubling while it keeps dying, to the
second."""
_STABLE_S = 10.0  # a child that lived this long died by accident: the next restart is quick
KEEPER_WAIT_S = 1.0
"""The keeper thread's longest sleep: reports, a new child or the pipe's overflow wake it."""
FLUSH_WAIT_S = 0.005  # how often the keeper retries copies written outside an event loop
BATCH_S = 0.02
"""Copies wait in the server at most this long, then cross the pipe in one write (the child
is woken at most ``1 / BATCH_S`` times a second, whatever the request rate)."""
RETIRE_S = 10.0
"""A child no longer wanted that has not exited this long after its pipe closed is killed."""


@dataclass(frozen=True)
class Copy:
    """One mirrored request as the child receives it."""

    deployment: str
    name: str
    version: str
    request_id: str
    label: str  # predict, or infer (an Open Inference Protocol request and answer)
    body: bytes
    answer: bytes


@dataclass(frozen=True)
class WorkerSettings:
    """What the child needs to start (passed as JSON on its command line).

    Attributes:
        project: The project root (the registry the versions are loaded from).
        copies: The descriptor the child reads copies from.
        reports: The descriptor the child writes its reports to.
        parent: The server's process id (the child stops when it changes).
        log_dir: Where role=shadow records go (the server's prediction log), None: not logged.
        pii: ``serve.log_pii``: personal data columns hashed or dropped in the records.
        want: ``(name, version)`` pairs to load at start.
    """

    project: str
    copies: int
    reports: int
    parent: int
    log_dir: str | None = None
    pii: str = "hash"
    want: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerSettings:
        given = orjson.loads(raw)
        given["want"] = tuple((str(n), str(v)) for n, v in given.get("want", ()))
        return cls(**given)


def copy_frame(
    deployment: str, name: str, version: str, request_id: str, label: str, body: bytes,
    answer: bytes,
) -> bytes:  # fmt: skip
    """One copy as a frame: length, kind, the three part lengths, meta (JSON), body, answer."""
    meta = orjson.dumps((deployment, name, version, request_id, label))
    parts = _PARTS.pack(len(meta), len(body), len(answer))
    size = 1 + _PARTS.size + len(meta) + len(body) + len(answer)
    return b"".join((_LENGTH.pack(size), COPY, parts, meta, body, answer))


def frame(kind: bytes, payload: bytes) -> bytes:
    """A ``want`` or ``report`` frame: length, kind, JSON payload."""
    return _LENGTH.pack(1 + len(payload)) + kind + payload


def split_frames(buffer: bytearray) -> list[bytes]:
    """The complete frames at the start of ``buffer`` (kind byte first), removed from it."""
    frames, at, end = [], 0, len(buffer)
    while end - at >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(buffer, at)
        if end - at - _LENGTH.size < size:
            break
        frames.append(bytes(buffer[at + _LENGTH.size : at + _LENGTH.size + size]))
        at += _LENGTH.size + size
    del buffer[:at]
    return frames


def read_copy(payload: bytes) -> Copy:
    """A copy frame's payload (after the kind byte) -> :class:`Copy`."""
    metas, bodies, answers = _PARTS.unpack_from(payload)
    at = _PARTS.size
    deployment, name, version, request_id, label = orjson.loads(payload[at : at + metas])
    at += metas
    body = payload[at : at + bodies]
    answer = payload[at + bodies : at + bodies + answers]
    return Copy(deployment, name, version, request_id, label, body, answer)


class _Child:
    """One child process and the server's ends of its two pipes."""

    def __init__(self, process: subprocess.Popen[bytes], copies: int, reports: int) -> None:
        self.process = process
        self.copies = copies
        self.reports = reports
        self.started = time.monotonic()
        self.sent = 0  # copies accepted for this child
        self.reported = 0  # copies it reported scored (or failed)
        self.held: dict[Copies, int] = {}  # per deployment and version: sent, not reported
        self.buffer = bytearray()  # its reports, read but not yet complete
        self.retired = 0.0  # when it was asked to exit (no version wanted any more)


class Shadows:
    """Mirrors answered requests to shadow versions in a low-priority child process.

    Args:
        traffic: Where the shadow's latency, errors and disagreements are counted.
        project: The project root the child loads versions from; None: copies are dropped.
        log_dir: The prediction log's directory for role=shadow records; None: not logged.
        pii: ``serve.log_pii`` (``hash`` or ``drop``) for the child's records.
        log_dropped: Called with ``(name, version, "shadow")`` for each record the child's
            prediction log dropped.
        max_bytes: Copies waiting for the pipe at most (bytes); more are dropped and counted.
    """

    def __init__(
        self,
        traffic: Traffic,
        *,
        project: Path | None,
        log_dir: Path | None = None,
        pii: str = "hash",
        log_dropped: Callable[[str, str, str], None] | None = None,
        max_bytes: int = 1 << 20,
    ) -> None:
        self.traffic = traffic
        self.project = project
        self.log_dir = log_dir
        self.pii = pii
        self.log_dropped = log_dropped
        self.max_bytes = max_bytes
        self.dropped = 0  # copies never scored: buffer full, child down, lost with a child
        self.shed = 0  # copies the server did not make: its primaries were queued (app.py)
        self.under_load = 0  # answers while primaries were queued: 1 in 16 still mirrored
        self.restarts = 0
        self.writes = 0  # writes of copies to the pipe (one per batch; tests read it)
        self._batch: asyncio.TimerHandle | None = None  # the loop's next batch write
        self._lock = threading.Lock()
        self._starting = threading.Lock()  # one child started at a time (loop or keeper)
        self._pending = bytearray()  # frames the pipe did not take yet
        self._child: _Child | None = None
        self._retiring: list[_Child] = []  # no longer wanted: finishing what they hold
        self._want: tuple[tuple[str, str], ...] = ()
        self._followed = False  # follow() drives the child (else the first copy starts it)
        self._keeper: threading.Thread | None = None
        self._wakeup: tuple[int, int] | None = None  # a pipe that wakes the keeper's select
        self._closing = threading.Event()
        self._delay = RESTART_S[0]
        self._next_start = 0.0

    @property
    def pid(self) -> int | None:
        """The child's process id, None while none runs."""
        child = self._child
        return None if child is None else child.process.pid

    def follow(self, wanted: Iterable[tuple[str, str]]) -> None:
        """The shadow versions the routing table holds now, as ``(name, version)``: the child
        loads new ones beside the old before dropping those no longer wanted, and exits once
        no version is wanted (a later shadow deployment starts a new one)."""
        want = tuple(sorted(set(wanted)))
        self._followed = True
        if want == self._want:
            return
        self._want = want
        if not want:
            self._retire()
        elif self._child is not None:
            self._send(frame(WANT, orjson.dumps(want)), count=False)
        else:  # started with the wanted versions
            self._ensure_started()

    def submit(self, name: str, deployment: str, model: LoadedModel, body: bytes,
               answer: bytes, request_id: str, label: str = "predict",
               copies: Copies | None = None) -> None:  # fmt: skip
        """Send a copy of an answered ``predict`` or ``infer`` request to the child (never
        blocks: a full buffer, or no child, drops it and counts it, in the totals and in
        ``copies``, the deployment's counter: None, looked up)."""
        if copies is None:
            copies = self.traffic.copies(deployment, model.version)
        if self._keeper is None and not self._followed:  # routes set by hand (benchmarks)
            self._ensure_started()
        if len(self._pending) + len(body) + len(answer) > self.max_bytes:  # full: not framed
            with self._lock:
                self.dropped += 1
                copies.full += 1
            return
        data = copy_frame(deployment, name, model.version, request_id, label, body, answer)
        self._send(data, copies=copies)

    def close(self, grace_s: float = 5.0) -> None:
        """Let the child finish the copies it holds, then stop it (killed after ``grace_s``)."""
        self._closing.set()
        with self._lock:  # no copy is written after this
            child, rest = self._child, bytes(self._pending)
            self._pending.clear()
            fd = -1
            if child is not None:
                fd, child.copies = child.copies, -1
        if child is not None and fd >= 0:
            _write_all(fd, rest, time.monotonic() + grace_s / 2)
            os.close(fd)  # end of file: the child finishes and exits
        self._wake()
        keeper = self._keeper
        if keeper is not None:
            keeper.join(timeout=grace_s)  # it reaps the children once their reports end
            if keeper.is_alive():  # a child did not finish in time
                with self._lock:
                    running = [c for c in (self._child, *self._retiring) if c is not None]
                for late in running:
                    with contextlib.suppress(OSError):
                        late.process.kill()
                keeper.join(timeout=5)
        wakeup = self._wakeup
        if wakeup is not None and (keeper is None or not keeper.is_alive()):
            self._wakeup = None
            for end in wakeup:
                os.close(end)

    # --- the request side -------------------------------------------------------------------

    def _send(self, data: bytes, *, count: bool = True, copies: Copies | None = None) -> None:
        """Buffer a frame; a copy (``count``: counted in ``copies`` too) made on an event loop
        is written with the next batch, anything else at once."""
        loop = None
        if count:
            with contextlib.suppress(RuntimeError):  # no loop: a caller of its own
                loop = asyncio.get_running_loop()
        with self._lock:
            child = self._child
            if child is None or child.copies < 0 or len(self._pending) + len(data) > self.max_bytes:
                self.dropped += count
                if copies is not None:  # why: no child takes copies, or the buffer is full
                    if child is None or child.copies < 0:
                        copies.down += 1
                    else:
                        copies.full += 1
                return
            child.sent += count
            if copies is not None:
                child.held[copies] = child.held.get(copies, 0) + 1
            self._pending += data
            if loop is not None:
                if self._batch is None:  # the first copy of a batch: written BATCH_S later
                    self._batch = loop.call_later(BATCH_S, self._flush)
                return
            self._write(child)
            if not self._pending or self._batch is not None:
                return
        self._wake()  # the pipe is full: the keeper writes the rest when it has room

    def _flush(self) -> None:
        """The loop's timer: one write of the batch; what the pipe cannot take waits for the
        next (the child is starved of CPU time: the buffer fills and drops)."""
        with self._lock:
            self._batch = None
            child = self._child
            if child is None or child.copies < 0 or not self._pending:
                return
            self._write(child)
            if self._pending:
                self._batch = asyncio.get_running_loop().call_later(BATCH_S, self._flush)

    def _write(self, child: _Child) -> None:
        """Write what the pipe takes now (holding the lock; never blocks)."""
        try:
            written = os.write(child.copies, self._pending)
        except BlockingIOError:
            return
        except OSError:  # the child is gone; the keeper restarts it and counts what it lost
            return
        self.writes += 1
        del self._pending[:written]

    def _retire(self) -> None:
        """No version is wanted: close the child's pipe (what it holds is scored, reported and
        logged; what the pipe cannot take now is counted as dropped), and let it exit."""
        with self._lock:
            child, self._child = self._child, None
            if child is None:
                return
            fd, child.copies = child.copies, -1
            rest = bytes(self._pending)
            self._pending.clear()
            child.retired = time.monotonic()
            self._retiring.append(child)
        with contextlib.suppress(OSError):  # never waits: this runs on the event loop
            if rest:
                os.write(fd, rest)
        os.close(fd)  # end of file: the child finishes and exits; the keeper reaps it
        log.info("shadow: no shadow version wanted; process %d exits", child.process.pid)

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            with contextlib.suppress(OSError):  # full: it will wake anyway
                os.write(wakeup[1], b"w")

    # --- the keeper thread ------------------------------------------------------------------

    def _needed(self) -> bool:
        """Whether a child should run: something to shadow (or routes set by hand)."""
        if self._closing.is_set() or self.project is None:
            return False
        return bool(self._want) or not self._followed

    def _ensure_started(self) -> None:
        """Start the child (now, so that the first copies find a pipe) and the keeper."""
        if self._closing.is_set() or self.project is None:
            return
        if self._child is None and time.monotonic() >= self._next_start:
            self._start_child()
        with self._lock:
            if self._keeper is not None:
                start = False
            else:
                if self._wakeup is None:
                    self._wakeup = os.pipe()
                    for end in self._wakeup:
                        os.set_blocking(end, False)
                self._keeper = threading.Thread(target=self._keep, name="keel-shadow", daemon=True)
                start = True
        if start:
            assert self._keeper is not None
            self._keeper.start()
        else:
            self._wake()  # a new child to watch

    def _start_child(self) -> None:
        with self._starting:
            if self._child is not None or not self._needed() or self.project is None:
                return
            try:
                child = _spawn(self.project, self.log_dir, self.pii, self._want)
            except Exception as exc:  # retried with backoff by the keeper
                log.warning("shadow: could not start the shadow process: %s", exc)
                self._backoff()
                return
            with self._lock:
                self._pending.clear()  # half a frame, perhaps: the new child starts clean
                self._child = child
        log.info("shadow: process %d started", child.process.pid)

    def _backoff(self) -> None:
        self._next_start = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, RESTART_S[1])

    def _keep(self) -> None:
        """Read the children's reports, flush what the pipe did not take, restart a child that
        died; exit when no child runs and none is needed."""
        while True:
            with self._lock:
                child = self._child
                children = [c for c in (child, *self._retiring) if c is not None]
                if not children and not self._needed():
                    self._keeper = None
                    return
                # the loop's timer writes its batches; the keeper only what came from elsewhere
                flush = child is not None and bool(self._pending) and self._batch is None
                restart = child is None and self._needed()
            timeout = KEEPER_WAIT_S
            if restart:  # after the backoff
                wait = self._next_start - time.monotonic()
                if wait <= 0:
                    self._start_child()
                    continue
                timeout = min(timeout, wait)
            elif flush:
                timeout = FLUSH_WAIT_S
            for late in self._retiring:  # starved at idle priority: killed after a while
                timeout = max(0.0, min(timeout, late.retired + RETIRE_S - time.monotonic()))
            assert self._wakeup is not None
            by_fd = {c.reports: c for c in children}
            readable, _, _ = select.select([*by_fd, self._wakeup[0]], [], [], timeout)
            for fd in readable:
                if fd == self._wakeup[0]:
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 4096)
                else:
                    self._read(by_fd[fd])
            if flush:
                with self._lock:
                    if self._child is child and child is not None and child.copies >= 0:
                        self._write(child)
            for late in self._retiring:
                if time.monotonic() - late.retired >= RETIRE_S and late.process.poll() is None:
                    log.warning("shadow: process %d did not exit; killed", late.process.pid)
                    with contextlib.suppress(OSError):
                        late.process.kill()  # its reports end: reaped, its copies counted

    def _read(self, child: _Child) -> None:
        chunk = os.read(child.reports, 1 << 16)
        if not chunk:
            self._ended(child)
            return
        child.buffer += chunk
        for payload in split_frames(child.buffer):
            if payload[:1] == REPORT:
                self._record(child, orjson.loads(payload[1:]))

    def _record(self, child: _Child, report: dict[str, Any]) -> None:
        """Merge a report: a few sums per (deployment, version), whatever the copies."""
        for deployment, version, errors, compared, disagreed, latency in report["traffic"]:
            counts = dict(latency)
            self.traffic.merge(
                deployment, version, "shadow", counts,
                errors=errors, compared=compared, disagreed=disagreed,
            )  # fmt: skip
            copies = self.traffic.copies(deployment, version)
            with self._lock:  # the loop adds to held meanwhile
                child.held[copies] = child.held.get(copies, 0) - sum(counts.values())
        child.reported += report["copies"]
        if self.log_dropped is not None:
            for name, version, count in report.get("log_dropped", ()):
                for _ in range(count):
                    self.log_dropped(name, version, "shadow")

    def _ended(self, child: _Child) -> None:
        """A child's reports ended: it exited. Reap it; restart it unless it was retired or
        the server closes."""
        with self._lock:
            current = self._child is child
            if current:
                self._child = None
                self._pending.clear()
            else:
                self._retiring.remove(child)
            if child.copies >= 0:
                os.close(child.copies)
                child.copies = -1
            lost = max(0, child.sent - child.reported)
            self.dropped += lost
            for copies, held in child.held.items():  # per deployment and version
                copies.lost += max(0, held)
        os.close(child.reports)
        code = _stop(child.process)
        if not current or self._closing.is_set():
            return
        if time.monotonic() - child.started > _STABLE_S:
            self._delay = RESTART_S[0]
        log.warning(
            "shadow: process %d exited with %s (%d copies lost); restarting",
            child.process.pid, code, lost,
        )  # fmt: skip
        self.restarts += 1
        self._backoff()


def _spawn(
    project: Path, log_dir: Path | None, pii: str, want: tuple[tuple[str, str], ...]
) -> _Child:
    """Start the child: a fresh interpreter (not a fork of a process whose OpenMP runtime
    runs), reading copies from one pipe and writing reports to another."""
    copies_in, copies_out = os.pipe()
    reports_in, reports_out = os.pipe()
    with contextlib.suppress(AttributeError, OSError):
        import fcntl

        fcntl.fcntl(copies_out, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    os.set_blocking(copies_out, False)
    settings = WorkerSettings(
        project=str(project),
        copies=copies_in,
        reports=reports_out,
        parent=os.getpid(),
        log_dir=None if log_dir is None else str(log_dir),
        pii=pii,
        want=want,
    )
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "keel.serve.shadow_worker", settings.to_json().decode()],
            pass_fds=(copies_in, reports_out),
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        for fd in (copies_in, copies_out, reports_in, reports_out):
            os.close(fd)
        raise
    os.close(copies_in)
    os.close(reports_out)
    return _Child(process, copies_out, reports_in)


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    """Write ``data`` to a non-blocking pipe, waiting for room until ``deadline``."""
    view = memoryview(data)
    while view and time.monotonic() < deadline:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
        except OSError:
            return


def _stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> int | None:
    """Reap the child (killed when it does not exit within ``grace_s``); its exit status."""
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(timeout=5)
    return None
