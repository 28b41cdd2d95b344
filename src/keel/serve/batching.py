"""Adaptive batching: concurrent small requests for one model version scored by one model call.

A model call has a fixed cost (for the Adult LightGBM booster about 20 µs whatever the rows)
and a small cost per row, so under concurrency scoring requests together buys throughput. The
:class:`Batcher` queues each predict or infer request in a lane per served model version. A
lane is handed to a prediction thread (:meth:`keel.serve.workers.Workers.submit_batch`) as one
batch of up to ``serve.max_batch`` requests:

- at once when a thread is free and waiting would not pay (the default; always at
  concurrency 1: a request never waits for company that cannot come);
- when a thread frees up, with every request that queued meanwhile (they already waited);
- after a short wait when a thread is free, requests overlap and the model's calls are
  measured to be cheaper per row in a batch: at most ``serve.max_batch_wait_ms``, at most the
  time the expected batch-mates take to arrive at the current rate, and never so long that
  the wait plus the batch's estimated model call would pass ``serve.slo_p99_ms``.

The cost of a model call per batch size is measured online (:class:`CostModel`): calibrated
once per model on its first request (one row, then the same row repeated ``max_batch`` times)
and updated by every batch served. ``serve.batching: auto`` serves a model unbatched when its
per-row cost in a batch is not clearly below its single-row cost, or when its batched outputs
are not bit-identical to its single-row outputs (a BLAS kernel that sums in another order):
batching never changes an answer. ``on`` always batches (and waits for company up to the
bounds above); ``off`` never does.

:func:`score_batch` is the one scoring path, batched or not: each request is parsed, coerced
and transformed on its own (a bad row is that request's 422, never its batch-mates'), the
transformed rows of up to ``max_batch`` of them go through one model call, and each request
gets its own rows' outputs and findings, in order. ``/metrics`` exports the batch sizes
(``keel_batch_size``) and the time requests wait in the queue (``keel_batch_wait_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry

from keel.errors import KeelError
from keel.serve.metrics import LoopHistogram
from keel.serve.workers import Workers
from keel.validate.coerce import Finding

__all__ = ["BatchPolicy", "Batcher", "CostModel", "Hooks", "Job", "score_batch"]

log = logging.getLogger("keel.serve")

BatchMode = Literal["auto", "on", "off"]
EFFICIENT = 0.5  # batching helps when a row in a full batch costs under half a lone row
CALIBRATION_CALLS = 5
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_WAIT_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1)


@dataclass(frozen=True)
class BatchPolicy:
    """How requests are batched (``serve.batching``, ``max_batch``, ``max_batch_wait_ms``).

    Attributes:
        mode: ``auto`` (batch when measured to help), ``on`` (always) or ``off`` (never).
        max_batch: Most rows in one model call (and requests in one batch).
        max_wait_s: Longest a batch waits for company with a thread free.
        slo_s: The latency objective (``serve.slo_p99_ms``) a wait must leave room for.
        slots: Batches in flight at once (the prediction threads).
    """

    mode: BatchMode = "auto"
    max_batch: int = 64
    max_wait_s: float = 0.001
    slo_s: float = 0.1
    slots: int = 1


class Job(NamedTuple):
    """One request waiting to be scored: its route (``predict``/``infer``), body and id."""

    label: str
    body: bytes
    request_id: str


@dataclass(frozen=True)
class Hooks:
    """What a route does around the model call (the server's request and answer formats).

    Attributes:
        parse: A job -> (its parsed request, the instances to score); raises KeelError.
        answer: (job, parsed request, instances, labels, probabilities, findings) -> result;
            may raise KeelError (e.g. an explanation that fails).
        fail: (job, error) -> the error's result (status, body, version).
    """

    parse: Callable[[Job], tuple[Any, list[Any]]]
    answer: Callable[[Job, Any, list[Any], list[Any], list[Any] | None, list[Finding]], Any]
    fail: Callable[[Job, KeelError], Any]


class CostModel:
    """Online estimate of one model call's seconds by batch size (EWMA per power of two).

    Also records whether the model's outputs for a row are bit-identical alone and in a batch.
    Written by prediction threads, read on the event loop: plain float assignments.
    """

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.calibrated = False
        self.identical = True
        self._per_row: dict[int, float] = {}  # log2 bucket -> EWMA seconds per row
        self._known: list[int] = []  # its buckets, sorted
        self._helps = False  # recomputed per measurement: read per request, so kept

    def observe(self, rows: int, seconds: float) -> None:
        """Record one model call of ``rows`` rows that took ``seconds``."""
        if rows <= 0:
            return
        bucket = rows.bit_length() - 1
        per_row = seconds / rows
        old = self._per_row.get(bucket)
        self._per_row[bucket] = per_row if old is None else 0.8 * old + 0.2 * per_row
        if old is None:
            self._known = sorted(self._per_row)
        self._helps = self._measured_to_help()

    def cost(self, rows: int) -> float:
        """Estimated seconds of a call with ``rows`` rows (interpolated between buckets)."""
        known = self._known
        if not known or rows <= 0:
            return 0.0
        where = math.log2(rows)
        below = bisect_right(known, where)  # the buckets at or below, then at or above
        low = known[below - 1] if below else known[0]
        above = bisect_left(known, where)
        high = known[above] if above < len(known) else known[-1]
        if high == low:
            return rows * self._per_row[low]
        share = (where - low) / (high - low)
        return rows * ((1 - share) * self._per_row[low] + share * self._per_row[high])

    def helps(self) -> bool:
        """Whether a full batch costs clearly less per row than a lone row (and answers the
        same)."""
        return self._helps

    def _measured_to_help(self) -> bool:
        if not self.calibrated or not self.identical:
            return False
        single = self.cost(1)
        return single > 0 and self.cost(self.max_batch) / self.max_batch < EFFICIENT * single

    def calibrate(self, predict: Callable[[np.ndarray], np.ndarray], row: np.ndarray) -> None:
        """Time ``predict`` on one transformed row and on it repeated ``max_batch`` times.

        The best of a few calls each (the least disturbed by other work); also checks that the
        batched outputs are bit-identical to the lone row's.
        """
        full = np.repeat(row[:1], self.max_batch, axis=0)
        alone = predict(row[:1])
        together = predict(full)
        self.identical = bool(np.array_equal(np.repeat(alone, self.max_batch, axis=0), together))
        for rows in (row[:1], full):
            best = math.inf
            for _ in range(CALIBRATION_CALLS):
                started = time.perf_counter()
                predict(rows)
                best = min(best, time.perf_counter() - started)
            self._per_row[len(rows).bit_length() - 1] = best / len(rows)
        self._known = sorted(self._per_row)
        self.calibrated = True
        self._helps = self._measured_to_help()


class _Ready(NamedTuple):
    """A request whose rows were transformed: ready for the model call (``at``: its job)."""

    at: int
    state: Any
    instances: list[Any]
    x: np.ndarray
    findings: list[Finding]


_ready = tuple.__new__  # a _Ready without the Python-level __new__ NamedTuple adds (a call)


def score_batch(
    package: Any,
    jobs: Sequence[Job],
    hooks: Hooks,
    cost: CostModel | None = None,
    max_rows: int = 64,
) -> list[Any]:
    """Score requests for one model version: one model call per ``max_rows`` rows.

    Args:
        package: The :class:`~keel.registry.package.ModelPackage` (its pipeline, model, task).
        jobs: The requests, in arrival order.
        hooks: Parse a request, build its answer, turn an error into its answer.
        cost: Measured here (calibrated on the first call); None: not measured.
        max_rows: Most rows per model call; a larger request is scored alone.

    Returns:
        One result per job, in order: each from its own rows' outputs and findings.
    """
    if len(jobs) == 1:  # a lone request (inline, unbatched, a batch of one): no batch plumbing
        return [_score_one(package, jobs[0], hooks, cost)]
    results: list[Any] = [None] * len(jobs)
    parsed: list[tuple[int, Any, list[Any]]] = []
    parse, fail = hooks.parse, hooks.fail
    for index, job in enumerate(jobs):
        try:
            state, instances = parse(job)
        except KeelError as exc:  # this request's bad body: its own 4xx, batch-mates go on
            results[index] = fail(job, exc)
            continue
        except Exception as exc:  # a fault: this request's 500 alone
            results[index] = fail(job, _fault(exc))
            continue
        parsed.append((index, state, instances))
    found: list[list[Finding]] = [[] for _ in parsed]
    rows = [instances for _, _, instances in parsed]
    each = getattr(package.pipeline, "transform_each", None)  # all requests' rows together
    if each is not None:
        xs = each(rows, findings=found)
    else:
        xs = [
            _attempt(package.pipeline.transform_rows, r, f)
            for r, f in zip(rows, found, strict=True)
        ]
    ready: list[_Ready] = []
    for (index, state, instances), x, findings in zip(parsed, xs, found, strict=True):
        if isinstance(x, KeelError):  # this request's bad row: its own 4xx
            results[index] = fail(jobs[index], x)
        elif isinstance(x, Exception):  # a fault (a custom feature's bug): its 500 alone
            results[index] = fail(jobs[index], _fault(x))
        else:
            ready.append(_ready(_Ready, (index, state, instances, x, findings)))
    if cost is not None and not cost.calibrated and ready:
        cost.calibrate(package.model.predict, ready[0].x)
    task, classes = package.task_spec, package.classes
    rowwise = _rowwise(task)  # one answer() for a group's rows, sliced per request
    for group in _groups(ready, max_rows):
        out = _predict(package.model.predict, group, cost)
        if isinstance(out, list):  # the group's call failed: each request was scored alone
            for item, alone in zip(group, out, strict=True):
                if isinstance(alone, KeelError):
                    results[item.at] = fail(jobs[item.at], alone)
                else:
                    _answered(results, jobs, hooks, item, *task.answer(alone, classes))
        elif len(group) == 1:
            _answered(results, jobs, hooks, group[0], *task.answer(out, classes))
        elif rowwise and len(out) == sum(len(item.x) for item in group):
            labels, probabilities = task.answer(out, classes)
            start = 0
            for item in group:
                end = start + len(item.x)
                share = None if probabilities is None else probabilities[start:end]
                _answered(results, jobs, hooks, item, labels[start:end], share)
                start = end
        else:  # a task's answer over the whole group may not be its rows' answers
            bounds = np.cumsum([len(item.x) for item in group])[:-1]
            for item, part in zip(group, np.split(out, bounds), strict=True):
                _answered(results, jobs, hooks, item, *task.answer(part, classes))
    return results


def _rowwise(task: Any) -> bool:
    """Whether ``task.answer`` answers each row on its own (the built-in tasks: a label and
    probabilities per row), so the answer of many requests' rows, sliced, is each one's."""
    from keel.train.tasks import BinaryTask, MulticlassTask, RegressionTask  # (loaded: the task)

    return type(task) in (BinaryTask, MulticlassTask, RegressionTask)


def _answered(
    results: list[Any],
    jobs: Sequence[Job],
    hooks: Hooks,
    item: _Ready,
    labels: list[Any],
    probabilities: list[Any] | None,
) -> None:
    """A scored request's answer (or its error) into ``results``."""
    job = jobs[item.at]
    try:
        results[item.at] = hooks.answer(
            job, item.state, item.instances, labels, probabilities, item.findings
        )
    except KeelError as exc:
        results[item.at] = hooks.fail(job, exc)
    except Exception as exc:
        results[item.at] = hooks.fail(job, _fault(exc))


def _score_one(package: Any, job: Job, hooks: Hooks, cost: CostModel | None) -> Any:
    """:func:`score_batch` for one request: the same steps, answers and errors, fewer calls."""
    try:
        state, instances = hooks.parse(job)
    except KeelError as exc:
        return hooks.fail(job, exc)
    except Exception as exc:
        return hooks.fail(job, _fault(exc))
    findings: list[Finding] = []
    each = getattr(package.pipeline, "transform_each", None)
    if each is not None:
        x = each([instances], findings=[findings])[0]
    else:
        x = _attempt(package.pipeline.transform_rows, instances, findings)
    if isinstance(x, KeelError):
        return hooks.fail(job, x)
    if isinstance(x, Exception):
        return hooks.fail(job, _fault(x))
    predict = package.model.predict
    if cost is not None and not cost.calibrated:
        cost.calibrate(predict, x)
    started = time.perf_counter()
    out = predict(x)  # a failure propagates, as a batch of one's does in _predict
    if cost is not None:
        cost.observe(len(x), time.perf_counter() - started)
    labels, probabilities = package.task_spec.answer(out, package.classes)
    try:
        return hooks.answer(job, state, instances, labels, probabilities, findings)
    except KeelError as exc:
        return hooks.fail(job, exc)
    except Exception as exc:
        return hooks.fail(job, _fault(exc))


def _fault(exc: Exception) -> KeelError:
    """An unexpected error as one request's 500 (logged with its traceback)."""
    log.error("scoring a request failed", exc_info=exc)
    return KeelError(
        f"the server failed to score this request ({type(exc).__name__}); the server log has "
        "the details."
    )


def _attempt(
    transform: Callable[..., np.ndarray], rows: list[Any], findings: list[Finding]
) -> np.ndarray | Exception:
    try:
        return transform(rows, findings=findings)
    except Exception as exc:  # answered per request by the caller
        return exc


def _groups(ready: list[_Ready], max_rows: int) -> list[list[_Ready]]:
    """Consecutive requests in groups of at most ``max_rows`` rows (a larger one alone)."""
    groups: list[list[_Ready]] = []
    rows = 0
    for item in ready:
        size = len(item.x)
        if not groups or rows + size > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append(item)
        rows += size
    return groups


def _predict(
    predict: Callable[[np.ndarray], np.ndarray], group: list[_Ready], cost: CostModel | None
) -> np.ndarray | list[np.ndarray | KeelError]:
    """The group's outputs from one model call; if the call fails, each request's own call
    (a list: its outputs or its error)."""
    x = group[0].x if len(group) == 1 else np.concatenate([item.x for item in group])
    started = time.perf_counter()
    try:
        out = predict(x)
    except Exception:
        if len(group) == 1:
            raise
        return [_alone(predict, item.x) for item in group]  # the failure stays its own
    if cost is not None:
        cost.observe(len(x), time.perf_counter() - started)
    return out


def _alone(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray | KeelError:
    try:
        return predict(x)
    except KeelError as exc:
        return exc
    except Exception as exc:
        return _fault(exc)


class _Lane:
    """Requests for one served model version, waiting for a batch."""

    __slots__ = ("cost", "key", "pending", "target", "timer")

    def __init__(self, key: Hashable, target: Any, cost: CostModel) -> None:
        self.key = key
        self.target = target
        self.cost = cost
        self.pending: list[tuple[asyncio.Future[Any], Job, float]] = []
        self.timer: asyncio.TimerHandle | None = None


class Batcher:
    """Queues requests per model version and hands them to the prediction threads in batches.

    Runs on the event loop (no locks); only ``run`` and the cost models' updates happen in the
    prediction threads.

    Args:
        workers: The prediction threads.
        run: ``run((name, model), jobs, cost, max_rows)`` scores a batch (in a thread) and
            returns one result per job (:func:`score_batch` with the server's hooks).
        policy: Mode, sizes, waits.
        registry: Where the batch size and queue wait histograms are exported.
    """

    def __init__(
        self,
        workers: Workers,
        run: Callable[[Any, list[Job], CostModel, int], list[Any]],
        policy: BatchPolicy,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.workers = workers
        self.run = run
        self.policy = policy
        self.sizes = LoopHistogram(  # observed on the event loop only (no locks)
            "keel_batch_size",
            "Requests per batch handed to a prediction thread.",
            registry=registry,
            buckets=_SIZE_BUCKETS,
        )
        self.waits = LoopHistogram(
            "keel_batch_wait_seconds",
            "Time a request waited in the batch queue before its batch started.",
            registry=registry,
            buckets=_WAIT_BUCKETS,
        )
        self._lanes: dict[Hashable, _Lane] = {}
        self._costs: dict[int, CostModel] = {}
        self._busy = 0  # batches handed to threads and not yet answered
        self._outstanding = 0  # requests submitted and not yet answered
        self._company = 1.0  # EWMA of requests outstanding when one arrives (itself included)
        self._gap = 1.0  # EWMA of seconds between arrivals
        self._last = 0.0
        # the server's loop, bound at first use as Workers binds it (asyncio.get_running_loop
        # makes a getpid system call each time on Python 3.11)
        self._loop: asyncio.AbstractEventLoop | None = None

    def cost(self, model: Any) -> CostModel:
        """The cost model of a served model (kept while the model lives)."""
        key = id(model)
        found = self._costs.get(key)
        if found is None:
            found = self._costs[key] = CostModel(self.policy.max_batch)
            # forgotten with the model (a hot reload swapped it out); a model that is not
            # weak-referenceable keeps its few floats
            with contextlib.suppress(TypeError):
                weakref.finalize(model, self._costs.pop, key, None)
        return found

    def submit(self, name: str, model: Any, job: Job) -> Awaitable[Any]:
        """Score ``job`` with ``model`` (served as ``name``) in a batch: await its own result.

        A plain function handing back the request's future (no coroutine of its own per
        request); the request counts as outstanding until its batch is answered.
        """
        cost = self._costs.get(id(model)) or self.cost(model)
        if self.policy.mode == "auto" and cost.calibrated and not cost._helps:
            return self._unbatched(name, model, job, cost)  # measured not to help
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        now = time.perf_counter()
        self._outstanding += 1
        self._company += 0.1 * (self._outstanding - self._company)
        self._gap += 0.1 * (min(now - self._last, 1.0) - self._gap)
        self._last = now
        key = (name, id(model))
        lane = self._lanes.get(key)
        future: asyncio.Future[Any] = loop.create_future()
        if lane is None and self._busy < self.policy.slots and self._alone(cost):
            # nobody waiting and nobody to wait for: a batch of one, at once (the c=1 path)
            self.waits.observe(time.perf_counter() - now)
            self.sizes.observe(1)
            self._busy += 1
            args = ((name, model), [job], cost, self.policy.max_batch)
            self.workers.submit_batch(self.run, args, [future], self._release_one)
        else:
            if lane is None:
                lane = self._lanes[key] = _Lane(key, (name, model), cost)
            lane.pending.append((future, job, now))
            if self._busy < self.policy.slots:  # else the next thread to finish takes it
                self._schedule(lane, loop)
        return future

    async def _unbatched(self, name: str, model: Any, job: Job, cost: CostModel) -> Any:
        self._outstanding += 1
        try:
            target = (name, model)
            results = await self.workers.run(self.run, target, [job], cost, self.policy.max_batch)
            return results[0]
        finally:
            self._outstanding -= 1

    def _alone(self, cost: CostModel) -> bool:
        """Whether a request with a thread free goes at once without looking for company."""
        if self.policy.mode == "on":
            return self.policy.max_wait_s <= 0.0
        return self._company < 1.5 or self.policy.max_wait_s <= 0.0 or not cost.helps()

    def _schedule(self, lane: _Lane, loop: asyncio.AbstractEventLoop) -> None:
        if self._busy >= self.policy.slots:
            return  # every thread is busy: the next one to finish takes this lane's requests
        wait = self._wait(lane)
        if wait <= 0.0:
            self._dispatch(lane)
        elif lane.timer is None:
            lane.timer = loop.call_later(wait, self._expire, lane)

    def _wait(self, lane: _Lane) -> float:
        """Seconds the lane's batch may still wait for company (0: go now)."""
        policy = self.policy
        waiting = len(lane.pending)
        if policy.mode == "on":
            target = policy.max_batch
        else:
            if self._company < 1.5 or not lane.cost.helps():
                return 0.0  # nobody to wait for, or waiting would not pay
            target = min(policy.max_batch, round(self._company))
        if waiting >= target:
            return 0.0
        waited = time.perf_counter() - lane.pending[0][2]
        budget = policy.slo_s - lane.cost.cost(target) - waited
        fill = (target - waiting) * self._gap  # the batch-mates' arrival at the current rate
        return max(0.0, min(policy.max_wait_s - waited, fill, budget))

    def _expire(self, lane: _Lane) -> None:
        lane.timer = None
        if lane.pending and self._busy < self.policy.slots:
            self._dispatch(lane)

    def _dispatch(self, lane: _Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        size = self.policy.max_batch
        taken, lane.pending = lane.pending[:size], lane.pending[size:]
        if not lane.pending:
            del self._lanes[lane.key]
        now = time.perf_counter()
        self.waits.observe_each([now - arrived for _, _, arrived in taken])
        self.sizes.observe(len(taken))
        self._busy += 1
        self.workers.submit_batch(
            self.run,
            (lane.target, [job for _, job, _ in taken], lane.cost, size),
            [future for future, _, _ in taken],
            partial(self._release, len(taken)),
        )

    def _release_one(self) -> None:
        self._release(1)

    def _release(self, requests: int) -> None:
        """A batch of ``requests`` is answered: free threads take the waiting lanes' requests,
        oldest first."""
        self._outstanding -= requests
        self._busy -= 1
        while self._busy < self.policy.slots:
            waiting = [lane for lane in self._lanes.values() if lane.pending]
            if not waiting:
                return
            self._dispatch(min(waiting, key=lambda lane: lane.pending[0][2]))
