"""Who runs a run, and noticing when it died: owners, leases and reaping.

``MetadataStore.start_run`` records the run's owner: the host, the pid and the start time of
the process that runs it (so a pid the system has since given to another process does not pass
for the owner). While a step runs, :func:`keep_alive` renews the run's lease every few seconds.
A ``kill -9``, an out-of-memory kill or a power cut leaves the run ``running``; the next process
that opens the project's store (:meth:`MetadataStore.reap_dead_runs`) marks it failed:

- on the owner's host, when no process has the owner's pid, or that process is a zombie or
  started at another time than the owner did (the pid was reused), or the host has booted
  since;
- on any other host, when the run's lease expired (no heartbeat for ``lease`` seconds).

A run on another host without a lease (its runner does not heartbeat), or without an owner (a
run recorded by an older Keel), cannot be judged from here: it is ``unknown``, and
``keel doctor`` reports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import psutil
import sqlalchemy as sa

from keel.errors import ConfigError
from keel.store.processes import identity, this_boot, this_host, ticks_since_boot
from keel.store.tables import runs, utc_now

__all__ = [
    "DEFAULT_HEARTBEAT_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "Heartbeat",
    "Liveness",
    "Owner",
    "ReapedRun",
    "RunningRun",
    "keep_alive",
]

DEFAULT_HEARTBEAT_SECONDS = 10.0
"""How often :func:`keep_alive` renews a lease."""
DEFAULT_LEASE_SECONDS = 60.0
"""How long a lease lasts without a heartbeat: six missed heartbeats before another host may
declare the run dead."""
# Epoch start times (older rows, systems without /proc) come from the boot time plus clock
# ticks, and the boot time moves with the clock: allow for rounding, not for reuse.
_START_TOLERANCE_SECONDS = 1.0
# Starts since boot are whole clock ticks (1/100 s): equal, or another process.
_TICK_TOLERANCE_SECONDS = 0.005

Liveness = Literal["alive", "dead", "expired", "unknown"]
"""``alive``: the owner runs; ``dead``: its process is gone (same host); ``expired``: its
lease ran out (another host); ``unknown``: nothing to judge by."""

_log = logging.getLogger("keel.store")
_CURRENT: dict[int, Owner] = {}


@dataclass(frozen=True)
class Owner:
    """The process that runs a run.

    Attributes:
        host: The host name of its machine.
        pid: Its process id there.
        started_at: When the process started (None: unknown), which tells the owner from a later
            process that was given the same pid: seconds since boot (clock ticks, which no
            clock change moves) when ``boot_id`` is set, else seconds since the epoch (systems
            without ``/proc``, and runs recorded before migration 0012).
        boot_id: The host's boot (``/proc/sys/kernel/random/boot_id``), or None.
    """

    host: str
    pid: int
    started_at: float | None = None
    boot_id: str | None = None

    @classmethod
    def current(cls) -> Owner:
        """This process (looked up once per process)."""
        pid = os.getpid()
        if pid not in _CURRENT:  # keyed by pid: a forked child is a new owner
            _CURRENT[pid] = cls.of(pid)
        return _CURRENT[pid]

    @classmethod
    def of(cls, pid: int) -> Owner:
        """Process ``pid`` of this host (its start unknown when there is no such process)."""
        started_at, boot_id = identity(pid)
        return cls(host=this_host(), pid=pid, started_at=started_at, boot_id=boot_id)

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


@dataclass(frozen=True)
class RunningRun:
    """A run whose status is ``running``, with what can be said of its owner.

    Attributes:
        run_id: The run.
        step: Its step.
        started_at: When it started.
        owner: Its owner, or None (recorded by an older Keel).
        lease_expires_at: When its lease runs out, or None (no heartbeat yet).
        liveness: The verdict on its owner (see :data:`Liveness`).
        reason: The verdict in words, e.g. ``process 1234 on web-1 is gone``.
    """

    run_id: str
    step: str
    started_at: datetime
    owner: Owner | None
    lease_expires_at: datetime | None
    liveness: Liveness
    reason: str


@dataclass(frozen=True)
class ReapedRun:
    """A run marked failed because its owner died.

    Attributes:
        run_id: The run.
        step: Its step.
        error: The error recorded on it, which says who died, who noticed and when.
    """

    run_id: str
    step: str
    error: str


class _Heartbeats(Protocol):
    """What :func:`keep_alive` needs of a metadata store."""

    def heartbeat(self, run_id: str, *, lease_seconds: float = ...) -> bool: ...


class Heartbeat:
    """A daemon thread that renews a run's lease until stopped; :func:`keep_alive` runs one.

    Args:
        store: The metadata store holding the run.
        run_id: The running run.
        interval: Seconds between renewals.
        lease: Seconds each renewal lasts; more than ``interval``, so a missed renewal or two
            (a busy database) does not lose the lease.
    """

    def __init__(self, store: _Heartbeats, run_id: str, *, interval: float, lease: float) -> None:
        if not 0 < interval < lease:
            msg = f"keep_alive: need 0 < interval < lease, got interval={interval}, lease={lease}"
            raise ConfigError(msg, field="interval")
        self._store = store
        self._run_id = run_id
        self._interval = interval
        self._lease = lease
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name=f"keel-heartbeat-{run_id[:8]}", daemon=True
        )

    @property
    def lost(self) -> bool:
        """Whether the run stopped being ``running`` under us (finished or reaped elsewhere)."""
        return self._lost.is_set()

    def start(self) -> None:
        """Renew the lease now (errors propagate), then every ``interval`` in the background."""
        if not self._store.heartbeat(self._run_id, lease_seconds=self._lease):
            self._lost.set()
            return
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing; waits for a renewal in flight to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                held = self._store.heartbeat(self._run_id, lease_seconds=self._lease)
            except Exception as exc:  # the step must not die of its heartbeat
                # A busy or briefly unreachable database: the lease outlives a few misses.
                _log.warning("heartbeat of run %s failed, will retry: %s", self._run_id, exc)
                continue
            if not held:
                self._lost.set()
                return


@contextlib.contextmanager
def keep_alive(
    store: _Heartbeats,
    run_id: str,
    *,
    interval: float = DEFAULT_HEARTBEAT_SECONDS,
    lease: float = DEFAULT_LEASE_SECONDS,
) -> Iterator[Heartbeat]:
    """Renew a running run's lease while the block runs, so other hosts see it is alive.

    Args:
        store: The metadata store (``project.metadata``).
        run_id: The id ``start_run`` returned.
        interval: Seconds between renewals.
        lease: Seconds a renewal lasts; another host marks the run failed once it lapses.

    Yields:
        The heartbeat; ``heartbeat.lost`` turns true if the run was finished or reaped by
        someone else meanwhile (the step should stop: its result can no longer be recorded).

    Raises:
        BackendError: The first renewal could not reach the database.

    Example:
        >>> from keel.store import MetadataStore
        >>> store = MetadataStore("sqlite://")
        >>> run = store.start_run("train", cache_key="k", config_hash="c", code_version="v")
        >>> with keep_alive(store, run.id, interval=5, lease=30) as beat:
        ...     beat.lost
        False
    """
    beat = Heartbeat(store, run_id, interval=interval, lease=lease)
    beat.start()
    try:
        yield beat
    finally:
        beat.stop()


# -- judging owners --------------------------------------------------------------------------


def judge(
    owner: Owner | None, lease_expires_at: datetime | None, now: datetime
) -> tuple[Liveness, str]:
    """Whether the owner of a running run is alive, and the evidence, in a few words."""
    if owner is None:
        return "unknown", "no owner was recorded: an older Keel started it"
    if owner.host == this_host():
        return _judge_local(owner)
    if lease_expires_at is None:
        return "unknown", f"it renews no lease, so it cannot be checked from {this_host()}"
    if lease_expires_at < now:
        return "expired", f"its lease expired at {_when(lease_expires_at)}"
    return "alive", f"its lease is valid until {_when(lease_expires_at)}"


def _judge_local(owner: Owner) -> tuple[Liveness, str]:
    boot = this_boot()
    if owner.boot_id is not None and boot is not None and owner.boot_id != boot:
        return "dead", f"{owner.host} has restarted since it started"
    try:
        process = psutil.Process(owner.pid)
        epoch_start = process.create_time()
        zombie = process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return "dead", "no process has that pid any more"
    except (psutil.Error, OSError):
        # It exists but we may not look at it (another user's process): assume it is the owner.
        return "alive", "it is running"
    if zombie:
        return "dead", "it was killed: only its zombie is left"
    if owner.started_at is not None and not _same_start(owner, owner.pid, epoch_start):
        return "dead", "its pid now belongs to a later process"
    return "alive", "it is running"


def _same_start(owner: Owner, pid: int, epoch_start: float) -> bool:
    """Whether process ``pid`` (started at ``epoch_start`` by the clock) is the owner."""
    assert owner.started_at is not None
    if owner.boot_id is not None:
        since_boot = ticks_since_boot(pid)
        if since_boot is not None:
            return abs(since_boot - owner.started_at) <= _TICK_TOLERANCE_SECONDS
    return abs(epoch_start - owner.started_at) <= _START_TOLERANCE_SECONDS


def reaper_name() -> str:
    """Who is reaping, for the error message: the command (``keel doctor``) and this process."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("keel", "cli.py"):
        words = [w for w in sys.argv[1:] if not w.startswith("-")][:1]
        program = " ".join(["keel", *words])
    return f"{program} ({Owner.current()})"


# -- database side (called by MetadataStore, inside its transactions) ------------------------


def owner_values(owner: Owner, lease_seconds: float | None, now: datetime) -> dict[str, Any]:
    """The ``runs`` columns that record an owner (and a first lease) at start."""
    expires = None if lease_seconds is None else now + timedelta(seconds=lease_seconds)
    return {
        "owner_host": owner.host[:255],
        "owner_pid": owner.pid,
        "owner_started_at": owner.started_at,
        "owner_boot_id": owner.boot_id,
        "lease_expires_at": expires,
    }


def renew(conn: sa.Connection, run_id: str, lease_seconds: float) -> bool:
    """Push a running run's lease ``lease_seconds`` into the future; False when not running."""
    if lease_seconds <= 0:
        msg = f"heartbeat: lease_seconds must be positive, got {lease_seconds}"
        raise ConfigError(msg, field="lease_seconds")
    expires = utc_now() + timedelta(seconds=lease_seconds)
    result = conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id, runs.c.status == "running")
        .values(lease_expires_at=expires)
    )
    return result.rowcount == 1


_RUNNING = (
    sa.select(
        runs.c.id,
        runs.c.step,
        runs.c.started_at,
        runs.c.owner_host,
        runs.c.owner_pid,
        runs.c.owner_started_at,
        runs.c.owner_boot_id,
        runs.c.lease_expires_at,
    )
    .where(runs.c.status == "running")
    .order_by(runs.c.started_at, runs.c.id)
)


def list_running(conn: sa.Connection) -> list[RunningRun]:
    """Every running run, oldest first, with the verdict on its owner."""
    now = utc_now()
    found = []
    for row in conn.execute(_RUNNING).mappings():
        owner = None
        if row["owner_host"] is not None and row["owner_pid"] is not None:
            owner = Owner(
                row["owner_host"],
                int(row["owner_pid"]),
                row["owner_started_at"],
                row["owner_boot_id"],
            )
        liveness, reason = judge(owner, row["lease_expires_at"], now)
        found.append(
            RunningRun(
                run_id=row["id"],
                step=row["step"],
                started_at=row["started_at"],
                owner=owner,
                lease_expires_at=row["lease_expires_at"],
                liveness=liveness,
                reason=reason,
            )
        )
    return found


def mark_failed(
    conn: sa.Connection, found: Sequence[RunningRun], *, reaper: str
) -> list[ReapedRun]:
    """Mark runs failed with a message naming their owner, the evidence, ``reaper`` and the time.

    A run is changed only while it is still ``running`` as judged: a run that finished
    meanwhile, or whose lease was renewed since, is left alone.
    """
    now = utc_now()
    reaped = []
    for run in found:
        error = (
            f"{run.owner or 'its process'} {_VERBS[run.liveness]} while running step "
            f"'{run.step}' ({run.reason}); marked failed by {reaper} at {_when(now)}. "
            "Run the pipeline again to redo the step."
        )
        query = sa.update(runs).where(runs.c.id == run.run_id, runs.c.status == "running")
        if run.liveness == "expired":
            query = query.where(runs.c.lease_expires_at < now)
        duration = max((now - run.started_at).total_seconds(), 0.0)
        values = {"status": "failed", "ended_at": now, "error": error, "duration_seconds": duration}
        if conn.execute(query.values(**values)).rowcount == 1:
            reaped.append(ReapedRun(run.run_id, run.step, error))
    return reaped


_VERBS: dict[Liveness, str] = {
    "dead": "died",
    "expired": "stopped renewing its lease",
    "unknown": "was presumed dead",
    "alive": "was stopped",
}


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
