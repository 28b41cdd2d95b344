"""Several server processes on one port: a supervisor that starts, restarts and stops them.

``keel serve --workers N`` binds and listens in the supervisor (so a taken port fails before
anything starts); each worker is a fresh Python process (not a fork: a fork of a process whose
OpenMP runtime is already started can hang in the child) that inherits a listening socket and
runs the whole server on it: its own event loop, model copies, prediction threads pinned to one
OpenMP thread each, and prediction log file (the log names its files by process id, so writers
never share one).

On Linux each worker has its own socket, all of one ``SO_REUSEPORT`` group on the port: the
kernel spreads connections over them by their addresses, so 64 keep-alive connections land
about 32/32 on two workers. (On one shared socket whichever worker wakes first takes the
queue: 60 of 64 landed on one worker.) The supervisor keeps every socket open, so a dead
worker's socket goes on queueing its share of new connections, which its replacement answers
once it has started (a second or two), rather than the kernel resetting them. Elsewhere the
workers share one socket, and a connection queued when a worker dies goes to the others.

The supervisor restarts a worker that exits unexpectedly (logged with its exit status; after
0.25 s, doubling with each recent exit up to 5 s), at most ``max_restarts`` times within
``window_s`` seconds; beyond that the workers are crash-looping
(a bad model, a broken environment), so it stops them all and :meth:`Supervisor.run` returns 1.
SIGTERM and SIGINT stop the workers gracefully (SIGTERM forwarded: in-flight requests finish),
SIGKILL after ``grace_s``; a worker whose supervisor disappears stops itself
(:func:`watch_parent`).

Each worker answers with a ``Keel-Worker`` header (its index, 0..N-1, kept across restarts),
so a client can tell which process served it (:func:`tag_worker`).

Given a ``run_dir`` (``.keel/run``), the supervisor makes the server's directory there and names
it to the workers (``KEEL_FLEET_DIR``, with ``KEEL_WORKERS``), where they publish their metrics
for ``/metrics`` to report the whole fleet (:mod:`keel.serve.fleet`); it folds a dead worker's
counts into the retired totals before restarting it, and removes the directory when it stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.serve.fleet import FLEET_ENV, WORKERS_ENV, prepare, retire

__all__ = [
    "WORKER_ENV",
    "Supervisor",
    "max_workers",
    "tag_worker",
    "watch_parent",
]

WORKER_ENV = "KEEL_WORKER_ID"
"""Environment variable naming a worker's index (set by the supervisor in each worker)."""

Log = Callable[[str], None]


def max_workers() -> int:
    """The most workers ``--workers`` accepts: four per CPU core."""
    return 4 * (os.cpu_count() or 1)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float


class Supervisor:
    """Runs ``workers`` copies of ``command`` on inherited listening sockets.

    Args:
        command: The worker's argv; ``--worker-fd FD`` is appended (the socket's descriptor).
        sock: The bound, listening socket the workers share, or one per worker (worker ``i``
            gets ``sock[i]``, also when it is restarted).
        workers: How many worker processes.
        log: Where lifecycle messages go (a line each).
        max_restarts: Restarts allowed within ``window_s`` before giving up.
        window_s: The window the restart budget applies to.
        grace_s: Seconds a stopping worker gets before SIGKILL.
        env: Extra environment for the workers.
        run_dir: Where the server's directory for the workers' metrics goes (None: each
            worker reports its own numbers only).
    """

    def __init__(
        self,
        command: Sequence[str],
        sock: socket.socket | Sequence[socket.socket],
        workers: int,
        *,
        log: Log,
        max_restarts: int = 5,
        window_s: float = 60.0,
        grace_s: float = 30.0,
        env: dict[str, str] | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.sockets = [sock] if isinstance(sock, socket.socket) else list(sock)
        self.workers = workers
        self.log = log
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.grace_s = grace_s
        self.env = env or {}
        self.run_dir = run_dir
        self.fleet_dir: Path | None = None
        self.restarts = 0
        self._running: dict[int, _Worker] = {}
        self._recent: deque[float] = deque()
        self._stop = threading.Event()
        self._signal: int | None = None

    def run(self) -> int:
        """Start the workers and supervise them until a stop signal (0) or a crash loop (1)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            if self.run_dir is not None:
                try:
                    self.fleet_dir = prepare(self.run_dir)
                except OSError as exc:  # serving matters more than one /metrics for all
                    self.log(f"cannot use {self.run_dir} ({exc}): /metrics is per worker")
            for index in range(self.workers):
                self._start(index)
            code = self._supervise()
        finally:
            self._stop_all()
            if self.fleet_dir is not None:
                shutil.rmtree(self.fleet_dir, ignore_errors=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in self.sockets:
                sock.close()
        return code

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum
        self._stop.set()

    def _start(self, index: int) -> None:
        fd = self.sockets[index % len(self.sockets)].fileno()
        env = {**os.environ, **self.env, WORKER_ENV: str(index), WORKERS_ENV: str(self.workers)}
        if self.fleet_dir is not None:
            env[FLEET_ENV] = str(self.fleet_dir)
        env.setdefault("OMP_NUM_THREADS", "1")  # model threads pinned; serve.threads scales
        process = subprocess.Popen(
            [*self.command, "--worker-fd", str(fd)],
            pass_fds=(fd,),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self._running[index] = _Worker(index, process, time.monotonic())

    def _supervise(self) -> int:
        while not self._stop.wait(0.2):
            for index, worker in list(self._running.items()):
                status = worker.process.poll()
                if status is None or self._stop.is_set():
                    continue
                del self._running[index]
                if self.fleet_dir is not None:  # its counts stay in the fleet's totals
                    retire(self.fleet_dir, index)
                self.log(
                    f"worker {index} (pid {worker.process.pid}) {_describe(status)} after "
                    f"{time.monotonic() - worker.started:.1f} s"
                )
                if not self._may_restart():
                    self.log(
                        f"workers exited {self.max_restarts + 1} times within "
                        f"{self.window_s:g} s: giving up (see the errors above)"
                    )
                    return 1
                delay = min(0.25 * 2 ** (len(self._recent) - 1), 5.0)  # back off in a burst
                if self._stop.wait(delay):
                    break
                self.restarts += 1
                self.log(f"restarting worker {index}")
                self._start(index)
        if self._signal is not None:
            self.log(f"{signal.Signals(self._signal).name}: stopping {len(self._running)} workers")
        return 0

    def _may_restart(self) -> bool:
        now = time.monotonic()
        recent = self._recent
        recent.append(now)
        while recent and recent[0] < now - self.window_s:
            recent.popleft()
        return len(recent) <= self.max_restarts

    def _stop_all(self) -> None:
        """SIGTERM every worker, wait up to ``grace_s``, then SIGKILL what is left."""
        workers = list(self._running.values())
        self._running.clear()
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"worker {worker.index} (pid {worker.process.pid}) killed: past grace")
                worker.process.kill()
                worker.process.wait()


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def watch_parent(interval: float = 0.5) -> threading.Thread:
    """In a worker: SIGTERM this process when its supervisor is gone (re-parented).

    A SIGKILLed supervisor cannot forward a stop; without this its workers would keep the port.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="keel-watch-supervisor", daemon=True)
    thread.start()
    return thread


def tag_worker(server_app: Any, index: int) -> None:
    """Every answer of ``server_app`` (a :class:`~keel.serve.app.ServerApp`), either HTTP path,
    carries ``Keel-Worker: <index>``."""
    server_app.stack.headers = ((b"keel-worker", str(index).encode()),)
