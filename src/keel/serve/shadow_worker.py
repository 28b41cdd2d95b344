"""Shadow deployments, the child's side: score mirrored requests at idle priority, in batches.

Started by :class:`keel.serve.shadow.Shadows` as ``python -m keel.serve.shadow_worker
SETTINGS`` (:class:`~keel.serve.shadow.WorkerSettings` as JSON). It starts at ``nice 10``
(the imports and the wanted versions' loads: seconds of CPU, once, at a tenth of the server's
weight, so that it starts even on a busy host), then asks to be scheduled ``SCHED_IDLE``
(Linux; elsewhere ``nice 19``) before it scores anything: it scores only on CPU time the
server leaves, and the kernel preempts it as soon as the server has work. It keeps the CPUs
it inherits from the server (moved off the CPUs of a server pinned with ``taskset``, it lost
most of its copies whenever the other CPUs were busy). Its model threads are pinned to
one OpenMP thread. The server writes its copies in batches (at most every
:data:`~keel.serve.shadow.BATCH_S` seconds), so it wakes up once per batch. While the server
keeps the core busy (over a read the child waited for a CPU longer than it ran:
:func:`contended`), the child reports and stays off it (:func:`back_off`): it sleeps
:data:`BACKOFF_S` and looks whether it ran at once on waking (the CPU is free), at most
:data:`MAX_LOOKS` times, then reads one read's worth (:data:`READ_BYTES`) again. On a core
the server keeps busy (one connection with busy polling never leaves it idle) ``SCHED_IDLE``
still gets ~0.3 % of the CPU while it has work, in runs that each delay a request: with a
pause of its runs / 10 s it ran 1.2-3.7 times per 1,000 requests at one connection, and
fewer, longer runs took about as much time from the server (``benchmarks/RESULTS.md``, round
nine). So after such a read it also scores in short model calls (:data:`SHARED_ROWS` rows)
and yields the CPU after each one: a run beside the server lasts one short call instead of the
scheduler's slice (~0.75 ms). The copies that arrive meanwhile wait in the pipe, then in the
server's buffer; beyond it the server drops them and counts them (``keel_shadow_dropped``).

It loads each shadow version as the server loads any version (:func:`~keel.serve.models.
load_served`: the verified package from the registry, never unpickled; warmed), beside the
ones it holds, and drops a version only once it is no longer wanted. It reads what the pipe
holds, groups the copies by version and scores each group in batches of at most
:data:`MAX_ROWS` rows with one ``predict_rows`` call (feature views filled from the online
store, as the server does), splits the answers back per copy, compares them with the
primary's (:func:`~keel.serve.routing.disagreements`) and writes role=shadow records with the
primary's request ids to its own prediction log file (per process: no interleaving; personal
data hashed or dropped as ``serve.log_pii`` says), written by its one thread with each report:
a writer thread beside it woke every half second and then, the child's thread holding the
GIL while the server preempted it, every few milliseconds until it got the GIL (~100 runs a
second at one connection, each one beside the server). A batch that fails is scored copy by copy,
so one bad copy does not fail the others; a copy that still fails is reported as an error.
Each copy's latency is its batch's scoring time, as a batched primary's would be.

Reports (per deployment and version: copies, errors, compared and disagreed answers and a
latency histogram in :data:`~keel.registry.deployments.LATENCY_EDGES_MS` buckets; and the
records the log dropped) go back at most every :data:`REPORT_EVERY_S` seconds, and once no
copy came for that long: each report wakes a thread in the server, so never per batch. It
exits at the pipe's end of file (the server closed it, or died), when its parent
changes, or on SIGTERM/SIGINT, after reporting and flushing its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from keel.serve.shadow import COPY, REPORT, WANT, Copy, WorkerSettings, frame, read_copy

__all__ = [
    "BACKOFF_S",
    "FREE_WAIT_NS",
    "MAX_LOOKS",
    "MAX_ROWS",
    "READ_BYTES",
    "REPORT_EVERY_S",
    "SHARED_ROWS",
    "ShadowWorker",
    "back_off",
    "contended",
    "free_after",
    "lower_priority",
    "main",
]

log = logging.getLogger("keel.serve.shadow")
MAX_ROWS = 64
"""Rows scored in one model call at most."""
SHARED_ROWS = 4
"""Rows a model call scores at most after a read in which the child waited for the CPU (the
server's core is busy): the child yields the CPU after each such call, so that a run of it
beside the server lasts one short call, not the scheduler's slice (~0.75 ms)."""
REPORT_EVERY_S = 0.2
"""How often the child reports its counts at most while copies keep coming (and how long
after the last copy it reports the rest)."""
BACKOFF_S = 1.0
"""While the server keeps the core busy, the child looks this often whether it is free."""
MAX_LOOKS = 5
"""Looks at a busy CPU after which the child reads and scores once anyway (so it never stops:
one read per ``MAX_LOOKS * BACKOFF_S`` seconds at least)."""
FREE_WAIT_NS = 1_000_000
"""Woken for a look, the child found the CPU free when it ran within this (ns)."""
READ_BYTES = 64 << 10
"""Copies read and scored at once (bytes; ~50 Adult copies, one model call): a CPU to spare
is used at full speed, read after read; on a busy core, one read is little work, so few runs
beside the server."""
STARTING_NICE = 10
RETRY_LOAD_S = 5.0  # a version that failed to load is tried again after this long
_ANSWERED = 1 << 31  # a mirrored request passed the instance limit when the primary took it


class _Tally:
    """One (deployment, version)'s counts since the last report."""

    __slots__ = ("compared", "disagreed", "errors", "latency")

    def __init__(self) -> None:
        self.errors = self.compared = self.disagreed = 0
        self.latency: dict[int, int] = {}  # bucket -> copies


class _Stop(Exception):
    """SIGTERM or SIGINT: report, flush the log and exit."""


def lower_priority() -> str:
    """Schedule this process ``SCHED_IDLE`` (Linux), else ``nice 19``; says which."""
    setter = getattr(os, "sched_setscheduler", None)
    idle = getattr(os, "SCHED_IDLE", None)
    if setter is not None and idle is not None:
        try:
            setter(0, idle, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:
            pass
    try:
        os.nice(19 - os.nice(0))
    except OSError:
        return "unchanged"
    return "nice 19"


class ShadowWorker:
    """The child's state: the project, the versions it holds, its log and unsent reports."""

    def __init__(self, settings: WorkerSettings) -> None:
        from keel.project import Project

        self.settings = settings
        self.project = Project(settings.project)
        self.models: dict[tuple[str, str], Any] = {}  # (name, version) -> LoadedModel
        self.failed: dict[tuple[str, str], float] = {}  # -> when its load failed
        self.store: Any = None  # the online feature store, opened for the first fill
        self.log: Any = None
        if settings.log_dir is not None:
            from pathlib import Path

            from keel.serve.predlog import PredictionLog, pii_policy

            serve = self.project.config.serve
            pii = pii_policy(self.project, "drop" if settings.pii == "drop" else "hash")
            self.log = PredictionLog(
                Path(settings.log_dir), max_queue=serve.log_queue_size, pii=pii
            )
        self.tallies: dict[tuple[str, str], _Tally] = {}  # (deployment, version) -> counts
        self.counted = 0  # copies in the tallies
        self.backoffs = self.looks = 0  # times it left a busy core, and looked at it since
        #: Rows a model call scores at most: MAX_ROWS, or SHARED_ROWS after a contended read
        #: (then the CPU is yielded after each call, so each run beside the server is short).
        self.rows = MAX_ROWS
        self.log_dropped: dict[tuple[str, str], int] = {}
        self.want(settings.want)

    # --- versions ---------------------------------------------------------------------------

    def want(self, wanted: Sequence[tuple[str, str]]) -> None:
        """Load the wanted versions beside the held ones, then drop the others."""
        keep = {(str(n), str(v)) for n, v in wanted}
        for key in sorted(keep):
            self.model(key)
        for key in set(self.models) - keep:
            del self.models[key]

    def model(self, key: tuple[str, str]) -> Any:
        """A held version, loaded and warmed on first use; None when it does not load."""
        model = self.models.get(key)
        if model is not None:
            return model
        failed = self.failed.get(key)
        if failed is not None and time.monotonic() - failed < RETRY_LOAD_S:
            return None
        from keel.serve.models import load_served, warm

        name, version = key
        try:
            _, model = load_served(self.project, f"{name}@{version}")
            warm(model)
        except Exception as exc:  # reported as errors of its copies; retried later
            self.failed[key] = time.monotonic()
            log.warning("shadow: could not load %s@%s: %s", name, version, exc)
            return None
        self.failed.pop(key, None)
        self.models[key] = model
        return model

    # --- scoring ----------------------------------------------------------------------------

    def handle(self, frames: Sequence[bytes]) -> None:
        """Score the copies among ``frames`` (grouped by version, in batches); apply wants."""
        groups: dict[tuple[str, str], list[Copy]] = {}
        for payload in frames:
            kind = payload[:1]
            if kind == COPY:
                copy = read_copy(payload[1:])
                groups.setdefault((copy.name, copy.version), []).append(copy)
            elif kind == WANT:
                import orjson

                self.want(orjson.loads(payload[1:]))
        for key, copies in groups.items():
            model = self.model(key)
            if model is None:
                for copy in copies:
                    self.count(copy, 0.0, error=True)
                continue
            self.score(model, copies)

    def score(self, model: Any, copies: Sequence[Copy]) -> None:
        """Score copies of one version, parsed as they come, in batches of at most
        :attr:`rows` rows; on a shared core (:attr:`rows` is :data:`SHARED_ROWS`) the CPU is
        yielded after each batch."""
        shared = self.rows < MAX_ROWS
        batch: list[tuple[Copy, list[Any], list[Any]]] = []
        rows = 0
        for copy in copies:
            try:
                instances, primary = mirrored(copy)
            except Exception as exc:
                log.debug("shadow: copy %s unreadable: %s", copy.request_id, exc)
                self.count(copy, 0.0, error=True)
                continue
            if batch and rows + len(instances) > self.rows:
                self._batch(model, batch)
                if shared:
                    _yield()
                batch, rows = [], 0
            batch.append((copy, instances, primary))
            rows += len(instances)
        if batch:
            self._batch(model, batch)

    def _batch(self, model: Any, batch: Sequence[tuple[Copy, list[Any], list[Any]]]) -> None:
        from keel.serve.routing import disagreements

        instances = [row for _, rows, _ in batch for row in rows]
        started = time.perf_counter()
        try:
            labels, probabilities = self._predict(model, instances)
        except Exception as exc:  # a failing shadow is measured, never felt by the client
            elapsed = time.perf_counter() - started
            if len(batch) > 1:  # one bad copy must not fail the others
                for item in batch:
                    self._batch(model, [item])
                return
            copy = batch[0][0]
            log.debug("shadow %s@%s failed: %s", copy.name, copy.version, exc)
            self.count(copy, elapsed, error=True)
            return
        elapsed = time.perf_counter() - started
        at = 0
        for copy, rows, primary in batch:
            mine = labels[at : at + len(rows)]
            probs = None if probabilities is None else probabilities[at : at + len(rows)]
            at += len(rows)
            disagreed = disagreements(mine, primary)
            self.count(copy, elapsed, compared=len(mine), disagreed=disagreed)
            if self.log is not None:
                logged = self.log.append(
                    copy.request_id, copy.name, model.version, rows, mine, probs,
                    role="shadow", pipeline_hash=model.pipeline_hash,
                )  # fmt: skip
                if not logged:
                    key = (copy.name, copy.version)
                    self.log_dropped[key] = self.log_dropped.get(key, 0) + 1

    def _predict(self, model: Any, instances: list[Any]) -> tuple[list[Any], list[Any] | None]:
        if model.fills is not None:
            from keel.serve.features import fill_views

            if self.store is None:
                from keel.features.store import FeatureStore

                self.store = FeatureStore(self.project)
            fill_views(self.store, model.fills, instances, model.key_only)
        labels, probabilities = model.package.predict_rows(instances, findings=[])
        return list(labels), None if probabilities is None else list(probabilities)

    # --- reports and the loop ---------------------------------------------------------------

    def count(
        self, copy: Copy, seconds: float, *, error: bool = False, compared: int = 0,
        disagreed: int = 0,
    ) -> None:  # fmt: skip
        """Count one scored (or failed) copy in its deployment's and version's tally."""
        from keel.registry.deployments import bucket_of

        key = (copy.deployment, copy.version)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = _Tally()
        tally.errors += error
        tally.compared += compared
        tally.disagreed += disagreed
        bucket = bucket_of(seconds * 1000.0)
        tally.latency[bucket] = tally.latency.get(bucket, 0) + 1
        self.counted += 1

    def report(self) -> None:
        """Send the tallies gathered since the last report (blocking: the server reads them).

        Summed here, per deployment and version, so that the server merges a few numbers per
        report (:meth:`keel.serve.routing.Traffic.merge`) instead of recording each copy: its
        thread that reads the reports holds the server's GIL only for microseconds.
        """
        if not self.counted and not self.log_dropped:
            return
        import orjson

        payload = orjson.dumps(
            {
                "copies": self.counted,
                "traffic": [
                    [d, v, t.errors, t.compared, t.disagreed, sorted(t.latency.items())]
                    for (d, v), t in self.tallies.items()
                ],
                "log_dropped": [[n, v, c] for (n, v), c in self.log_dropped.items()],
            }
        )
        self.tallies, self.counted, self.log_dropped = {}, 0, {}
        data = memoryview(frame(REPORT, payload))
        while data:
            data = data[os.write(self.settings.reports, data) :]

    def run(self) -> None:
        """Read, score and report until the pipe ends or the parent changes."""
        from keel.serve.shadow import split_frames

        source = self.settings.copies
        buffer = bytearray()
        reported = time.monotonic()
        while os.getppid() == self.settings.parent:
            before = _schedstat()  # its wait for a CPU once a batch woke it counts too
            readable, _, _ = select.select([source], [], [], REPORT_EVERY_S)
            if readable:  # a batch (the server writes them at most every BATCH_S)
                chunk = os.read(source, READ_BYTES)
                if not chunk:
                    break  # the server closed the pipe, or died
                buffer += chunk
                self.handle(split_frames(buffer))
            busy = bool(readable) and contended(before, _schedstat())
            if readable:  # short model calls, yielding between them, while the core is shared
                self.rows = SHARED_ROWS if busy else MAX_ROWS
            if busy or not readable or time.monotonic() - reported >= REPORT_EVERY_S:
                self.report()  # idle for REPORT_EVERY_S, due, or about to leave the CPU
                if self.log is not None:  # written here: no writer thread (see the module)
                    self.log.flush()
                reported = time.monotonic()
            if busy:  # the core is the server's: off it, not woken by the copies meanwhile
                self.backoffs += 1
                self.looks += back_off(self.settings.parent)

    def close(self) -> None:
        """Report what is left and flush the log."""
        with contextlib.suppress(OSError):  # the server is gone
            self.report()
        if self.log is not None:
            self.log.close()
        if self.store is not None:
            self.store.close()


def mirrored(copy: Copy) -> tuple[list[Any], list[Any]]:
    """A copy's instances and the primary's labels, from a predict or an OIP infer request
    (already answered by the primary: valid, and within the instance limit)."""
    import orjson

    request, answer = orjson.loads(copy.body), orjson.loads(copy.answer)
    if copy.label == "infer":
        from keel.serve import oip

        return oip.rows_of(request, _ANSWERED), answer["outputs"][0]["data"]
    return request["instances"], answer["predictions"]


def contended(before: Sequence[int] | None, after: Sequence[int] | None) -> bool:
    """Whether this thread waited for a CPU longer than it ran between two readings of its
    scheduler statistics (run ns, run-queue wait ns, times run): the CPU is someone else's."""
    if before is None or after is None:
        return False
    return after[1] - before[1] > after[0] - before[0]


def free_after(before: Sequence[int] | None, after: Sequence[int] | None) -> bool:
    """Whether this thread, woken from a sleep, ran within :data:`FREE_WAIT_NS` (nobody had
    work for its CPU), from its scheduler statistics before the sleep and after it."""
    if before is None or after is None:
        return True
    return after[1] - before[1] <= FREE_WAIT_NS


def back_off(parent: int) -> int:
    """Stay off a busy CPU: sleep :data:`BACKOFF_S`, look whether the CPU was free on waking
    (:func:`free_after`), and again, at most :data:`MAX_LOOKS` times; the looks made.

    A look is one short run; scoring beside a server that keeps its core busy (one connection
    with busy polling never leaves it idle) takes the ``SCHED_IDLE`` share of the CPU the
    kernel still grants (weight 3 against 1024, ~0.3 %), in runs that each delay a request.
    """
    looks = 0
    while looks < MAX_LOOKS and os.getppid() == parent:
        before = _schedstat()
        time.sleep(BACKOFF_S)
        looks += 1
        if free_after(before, _schedstat()):
            break
    return looks


def _yield() -> None:
    """Give the CPU to whoever else can run on it (``sched_yield``; a no-op elsewhere)."""
    if _SCHED_YIELD is not None:
        _SCHED_YIELD()


_SCHED_YIELD = getattr(os, "sched_yield", None)


def _schedstat() -> tuple[int, int, int] | None:
    """This thread's ``/proc/thread-self/schedstat`` (Linux), else None."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as handle:
            ran, waited, runs = handle.read().split()[:3]
    except (OSError, ValueError):
        return None
    return int(ran), int(waited), int(runs)


def _stop(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def main(argv: Sequence[str]) -> int:
    """The child's entry point: ``python -m keel.serve.shadow_worker SETTINGS_JSON``."""
    settings = WorkerSettings.from_json(argv[0])
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    worker: ShadowWorker | None = None
    try:
        # Starting (imports, the wanted versions loaded and warmed: seconds of CPU, once) runs
        # at nice 10, a tenth of the server's weight, so that it finishes on a busy host;
        # scoring runs at idle priority, set before any other thread starts (per thread).
        with contextlib.suppress(OSError):
            os.nice(STARTING_NICE)
        from keel.serve.models import pin_threads

        pin_threads(1)
        worker = ShadowWorker(settings)
        priority = lower_priority()
        log.info("shadow: process %d scoring at %s", os.getpid(), priority)
        worker.run()
    except _Stop:
        pass
    finally:
        if worker is not None:
            worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
