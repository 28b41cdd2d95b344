"""The scheduler: of any number of ``keel scheduler`` processes on one metadata database, the one
holding the leader lease runs the schedules' due ticks, each exactly once.

Leadership needs nothing but the database (SQLite or PostgreSQL): a :class:`LeaseKeeper` thread
takes the lease row when it is free or expired and renews it every third of its length, also
while a pipeline runs; a follower looks again when the lease would expire, so a leader killed
with SIGKILL is replaced within one lease length. Every tick is claimed in one transaction that
checks the lease, advances the schedule by compare-and-set and inserts the tick under a unique
(schedule, tick_at): a leader that lost its lease without noticing cannot run a tick twice.

The pipeline is reached through a narrow :data:`Action` (run the pipeline with this trigger and
reason), so this module knows nothing of how a pipeline runs; ``keel scheduler`` passes
:func:`keel.api.run`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from keel.config import CONFIG_FILE, KeelConfig, load_config
from keel.errors import ConfigError, KeelError
from keel.pipeline.cron import Timing, plan_ticks
from keel.pipeline.triggers import observe, observe_event
from keel.store.schedule_tables import Schedule, Tick, TickStatus
from keel.store.schedules import ScheduleStore
from keel.store.tables import utc_now

__all__ = [
    "Action",
    "LeaseKeeper",
    "Scheduler",
    "SchedulerOptions",
    "TickRequest",
    "default_owner",
    "install_signal_handlers",
]

_SLICE = 0.1
"""Longest uninterrupted sleep: a stop request is noticed within this many seconds."""
_MIN_WAIT = 0.005
_RETRY = 0.05
"""Seconds before evaluating again when a claim lost (the schedule changed, the lease went)."""


@dataclass(frozen=True, slots=True)
class TickRequest:
    """What the scheduler asks of its action: run the pipeline, for this reason (an ``alert``
    tick also names the new alerts, for the project's ``retrain:`` policy)."""

    schedule: str
    trigger: str
    reason: str
    tick_at: datetime
    tick_id: int
    alert_ids: tuple[int, ...] = ()


Action = Callable[[TickRequest], Mapping[str, Any] | None]
"""Runs the pipeline for a tick; returns a JSON-ready summary (its ``pipeline_run_id`` is
recorded with the tick) or raises to fail the tick."""


def default_owner() -> str:
    """``host:pid:random``, unique per scheduler process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """How a scheduler process behaves.

    Attributes:
        lease_seconds: How long the leader lease lasts unrenewed: a dead leader is replaced
            within this time. It is renewed every third of it.
        poll_seconds: How often event triggers are looked at, and the longest a follower
            waits before looking at the lease again.
        owner: This process's name in the lease and in the ticks it runs.
    """

    lease_seconds: float = 15.0
    poll_seconds: float = 1.0
    owner: str = field(default_factory=default_owner)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lease_seconds) and self.lease_seconds >= 0.5):
            msg = f"--lease {self.lease_seconds:g}: the lease must last at least 0.5 seconds"
            raise ConfigError(msg, field="lease")
        if not (math.isfinite(self.poll_seconds) and self.poll_seconds >= 0.01):
            raise ConfigError(
                f"--poll {self.poll_seconds:g}: poll at least every 0.01 s", field="poll"
            )
        if self.poll_seconds > self.lease_seconds / 2:
            msg = (
                f"--poll {self.poll_seconds:g} is more than half of --lease "
                f"{self.lease_seconds:g}: a follower would notice a dead leader late. "
                "Poll more often or lengthen the lease."
            )
            raise ConfigError(msg, field="poll")


class LeaseKeeper:
    """Takes and keeps the leader lease on a thread of its own.

    :meth:`generation` is the lease generation while this process holds an unexpired lease,
    else None. :meth:`close` stops the thread and releases the lease, so a follower takes over
    at once.
    """

    def __init__(
        self,
        store: ScheduleStore,
        options: SchedulerOptions,
        *,
        clock: Callable[[], datetime] = utc_now,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._store, self._options, self._clock, self._log = store, options, clock, log
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._valid_until = 0.0
        self._halt = threading.Event()
        self._problem: str | None = None
        self._thread = threading.Thread(target=self._loop, name="keel-lease", daemon=True)

    def start(self) -> None:
        """Start taking and renewing the lease."""
        self._thread.start()

    def generation(self) -> int | None:
        """The lease generation this process leads in, or None when it does not lead."""
        with self._lock:
            if self._generation is not None and time.monotonic() < self._valid_until:
                return self._generation
            return None

    def close(self) -> None:
        """Stop the thread and release the lease if held."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._options.lease_seconds + 5)
        with self._lock:
            held, self._generation = self._generation, None
        if held is not None:
            try:
                self._store.release_lease(self._options.owner)
                self._log("released the leader lease")
            except KeelError as exc:
                self._log(f"could not release the leader lease ({exc.message}); it expires")

    def _loop(self) -> None:
        # bounded by close(): every pass waits at least _MIN_WAIT, and wakes when halted
        while not self._halt.is_set():
            self._halt.wait(max(_MIN_WAIT, self._step()))

    def _step(self) -> float:
        try:
            wait = self._renew_or_acquire()
        except Exception as exc:  # the thread must outlive a database outage, and say why once
            problem = exc.message if isinstance(exc, KeelError) else f"{type(exc).__name__}: {exc}"
            if self._problem != problem:
                self._log(f"lease: {problem}")
            self._problem = problem
            return min(self._options.poll_seconds, self._options.lease_seconds / 4)
        self._problem = None
        return wait

    def _renew_or_acquire(self) -> float:
        lease_s, owner = self._options.lease_seconds, self._options.owner
        started = time.monotonic()
        held = self._generation
        if held is not None:
            if self._store.renew_lease(owner, held, seconds=lease_s, now=self._clock()):
                self._hold(held, started)
                return lease_s / 3
            self._hold(None, started)
            self._log("lost the leader lease")
        lease = self._store.acquire_lease(owner, seconds=lease_s, now=self._clock())
        if lease is not None:
            orphans = self._store.fail_orphaned_ticks(owner)
            self._hold(lease.generation, started)
            self._log(f"leading (lease generation {lease.generation}, {lease_s:g}s)")
            if orphans:
                self._log(f"marked {orphans} tick(s) of a stopped scheduler failed")
            return lease_s / 3
        current = self._store.get_lease()
        if current is None:
            return self._options.poll_seconds
        expires_in = (current.expires_at - self._clock()).total_seconds()
        return min(self._options.poll_seconds, max(expires_in, 0.0) + 0.001)

    def _hold(self, generation: int | None, since: float) -> None:
        with self._lock:
            self._generation = generation
            self._valid_until = since + self._options.lease_seconds


class Scheduler:
    """Runs due ticks while this process leads; follows otherwise.

    Args:
        store: The schedule store on the project's metadata database.
        action: Runs the pipeline for a tick (see :data:`Action`).
        root: The project directory (``new_data`` triggers read its declared sources).
        options: Lease, poll interval and owner name.
        log: Receives one line per notable thing (leadership, ticks, problems).
        clock: The current UTC time (tests pass their own).
    """

    def __init__(
        self,
        store: ScheduleStore,
        action: Action,
        *,
        root: Path,
        options: SchedulerOptions | None = None,
        log: Callable[[str], None] = lambda line: None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store, self.action, self.root = store, action, root
        self.options = options or SchedulerOptions()
        self.log, self.clock = log, clock
        self.keeper = LeaseKeeper(store, self.options, clock=clock, log=log)
        self.busy = False
        """True while the action runs: a stop signal then interrupts it."""
        self.passes = 0
        """How many times the schedules were evaluated (while leading)."""
        self._stopping = False
        self._slept_since: datetime | None = None
        self._config: tuple[int, KeelConfig] | None = None

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stopping

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (safe to call from a signal handler)."""
        self._stopping = True

    def serve(self, *, max_seconds: float | None = None) -> None:
        """Lead or follow until :meth:`request_stop` (or ``max_seconds``), then release the lease.

        Raises:
            BackendError: Only from releasing; problems while running are logged and retried.
        """
        deadline = math.inf if max_seconds is None else time.monotonic() + max_seconds
        self.keeper.start()
        try:
            # bounded by the stop request and the deadline; every pass sleeps
            while not self._stopping and time.monotonic() < deadline:
                generation = self.keeper.generation()
                if generation is None:
                    self._slept_since = None
                    wait = self.options.poll_seconds / 4
                else:
                    wait = self._run_due_logged(generation)
                self._pause(min(wait, deadline - time.monotonic()))
        finally:
            self.keeper.close()

    def _run_due_logged(self, generation: int) -> float:
        try:
            return self.run_due(generation)
        except KeelError as exc:  # the database is unreachable, say: try again after a poll
            self.log(f"evaluating schedules failed: {exc.message}")
            return self.options.poll_seconds

    def run_due(self, generation: int) -> float:
        """Evaluate each active schedule once and run what is due, as leader of ``generation``.

        Returns:
            Seconds until the next time tick is due (at most the poll interval).
        """
        wait = self.options.poll_seconds
        for schedule in self.store.list_schedules():
            if self._stopping or self.keeper.generation() != generation:
                break
            if schedule.paused:
                continue
            try:
                if schedule.kind == "event":
                    self._run_event(schedule, generation)
                else:
                    wait = min(wait, self._run_time(schedule, generation))
            except (KeelError, OSError) as exc:
                message = exc.message if isinstance(exc, KeelError) else str(exc)
                self.log(f"schedule {schedule.name}: {message}")
        self._deliver_webhooks()
        self._slept_since = self.clock()
        self.passes += 1
        return max(wait, 0.0)

    def _deliver_webhooks(self) -> None:
        """Send the registry's due webhook deliveries (bounded: 20 POSTs of at most 5 s)."""
        from keel.registry.webhooks import deliver_pending

        try:
            report = deliver_pending(self.store.database, limit=20, timeout=5.0)
        except KeelError as exc:
            self.log(f"webhook delivery failed: {exc.message}")
            return
        if report.attempted:
            self.log(
                f"webhooks: {report.delivered} delivered, {report.retrying} to retry, "
                f"{report.failed} failed"
            )

    def _run_time(self, schedule: Schedule, generation: int) -> float:
        assert schedule.kind in ("cron", "every") and schedule.last_tick_at is not None
        timing = Timing(schedule.kind, schedule.cron, schedule.timezone, schedule.every_seconds)
        now = self.clock()
        grace = self.options.lease_seconds
        plan = plan_ticks(timing, schedule.catchup, schedule.last_tick_at, now, grace=grace)
        current = schedule
        if plan.skip is not None:
            tick_at, missed = plan.skip
            reason = (
                f"{schedule.describe()}: {missed + 1} tick(s) up to {tick_at:%Y-%m-%d %H:%M:%S}Z "
                "missed, skipped under catch-up none"
            )
            if not self._claim(current, tick_at, generation, reason, missed, "skipped"):
                return _RETRY
            self.log(f"{schedule.name}: skipped {missed + 1} missed tick(s) (catch-up none)")
            current = replace(current, revision=current.revision + 1, last_tick_at=tick_at)
        for tick_at, missed in plan.run:
            if self._stopping:
                return 0.0
            looked = self.clock()
            stands = f", standing for {missed} missed tick(s)" if missed else ""
            reason = f"{schedule.describe()}: tick {tick_at:%Y-%m-%d %H:%M:%S}Z{stands}"
            tick = self._claim(current, tick_at, generation, reason, missed, "running")
            if tick is None:
                return _RETRY
            # Due when it fell due if the scheduler was asleep then, else when it looked.
            asleep = self._slept_since is not None and tick_at >= self._slept_since
            self._execute(tick, tick_at if asleep else looked)
            current = replace(current, revision=current.revision + 1, last_tick_at=tick_at)
        if plan.next_due is None:
            return self.options.poll_seconds
        return (plan.next_due - self.clock()).total_seconds()

    def _run_event(self, schedule: Schedule, generation: int) -> None:
        looked = self.clock()
        config = self._project_config() if schedule.event == "new_data" else None
        seen = observe(schedule, self.root, self.store, config=config)
        owner = self.options.owner
        if seen.reason is None:
            if seen.cursor != schedule.cursor:  # e.g. a file touched, its content unchanged
                self._advance(schedule, seen.cursor, generation)
            return
        tick = self.store.claim_tick(
            schedule, looked, owner=owner, generation=generation, reason=seen.reason,
            cursor=seen.cursor, now=looked,
        )  # fmt: skip
        if tick is None:
            return
        self._execute(tick, looked, seen.alert_ids)
        if schedule.event == "registry":
            # Versions and aliases the run itself registered or moved must not trigger it again.
            claimed = replace(schedule, revision=schedule.revision + 1, cursor=seen.cursor)
            after = observe_event(
                "registry", schedule.event_filter, self.root, self.store, seen.cursor
            )
            if after.reason is not None:
                self._advance(claimed, after.cursor, generation)

    def _advance(self, schedule: Schedule, cursor: dict[str, Any], generation: int) -> None:
        self.store.advance_cursor(
            schedule, cursor, owner=self.options.owner, generation=generation, now=self.clock()
        )

    def _claim(
        self,
        schedule: Schedule,
        tick_at: datetime,
        generation: int,
        reason: str,
        missed: int,
        status: TickStatus,
    ) -> Tick | None:
        return self.store.claim_tick(
            schedule, tick_at, owner=self.options.owner, generation=generation, reason=reason,
            missed=missed, status=status, now=self.clock(),
        )  # fmt: skip

    def _execute(self, tick: Tick, due: datetime, alert_ids: tuple[int, ...] = ()) -> None:
        request = TickRequest(
            tick.schedule, tick.trigger, tick.reason, tick.tick_at, tick.id, alert_ids
        )
        status: TickStatus = "succeeded"
        summary: dict[str, Any] | None = None
        error: str | None = None
        started = self.clock()
        overhead_ms = max(0.0, (started - due).total_seconds() * 1000)
        if self._stopping:
            status, error = "cancelled", "the scheduler was stopping; the run did not start"
        else:
            self.busy = True
            try:
                summary = _plain(self.action(request) or {})
            except KeyboardInterrupt:
                self._stopping = True
                status, error = "cancelled", "the scheduler was stopped (SIGTERM or Ctrl-C)"
            except KeelError as exc:
                status, error = "failed", f"{type(exc).__name__}: {exc.message}"
            except Exception as exc:  # a failing run must not stop the scheduler
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                self.log(traceback.format_exc().rstrip())
            finally:
                self.busy = False
        run_id = summary.get("pipeline_run_id") if summary else None
        done = self.store.finish_tick(
            tick.id, status=status, started_at=started, overhead_ms=overhead_ms,
            pipeline_run_id=str(run_id) if run_id else None, summary=summary, error=error,
            now=self.clock(),
        )  # fmt: skip
        assert done.ended_at is not None
        seconds = (done.ended_at - started).total_seconds()
        detail = f": {error}" if error else ""
        self.log(
            f"{tick.schedule} {tick.tick_at:%Y-%m-%d %H:%M:%S}Z {status} in {seconds:.2f}s "
            f"(scheduling overhead {overhead_ms:.1f} ms){detail}"
        )

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` in short slices, returning early on a stop request."""
        end = time.monotonic() + max(0.0, seconds)
        for _ in range(int(max(0.0, seconds) / _SLICE) + 2):
            left = end - time.monotonic()
            if left <= 0 or self._stopping:
                return
            time.sleep(min(left, _SLICE))

    def _project_config(self) -> KeelConfig:
        """keel.yaml, read again only when it changed."""
        stamp = (self.root / CONFIG_FILE).stat().st_mtime_ns
        if self._config is None or self._config[0] != stamp:
            self._config = (stamp, load_config(self.root))
        return self._config[1]


def install_signal_handlers(scheduler: Scheduler) -> Callable[[], None]:
    """Make SIGTERM and SIGINT stop ``scheduler`` gracefully (a running pipeline is interrupted
    and its tick recorded cancelled; the lease is released). Returns a function that puts the
    previous handlers back. Call from the main thread."""

    def handle(signum: int, frame: FrameType | None) -> None:
        scheduler.request_stop()
        if scheduler.busy:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _plain(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary as JSON data (numpy numbers, paths and dates become numbers or text)."""
    loaded = json.loads(json.dumps(dict(summary), default=_default))
    assert isinstance(loaded, dict)
    return loaded


def _default(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)
