"""Executors: where a pipeline's steps run, and the scheduling every executor shares.

:func:`run_graph` walks the planned graph: a step starts as soon as the steps it waits for
(:func:`keel.pipeline.graph.dependencies`) have written its inputs and the executor has room
for its resources; results come back in the steps' order, identical to a sequential run. When a
step fails (after its retries) no new step starts, the running ones finish, and the rest are
recorded ``not_run``. When the run is cancelled (``keel runs cancel``, polled in the database
every half second, or Ctrl-C) running steps are told to stop and recorded ``cancelled``.

Executors (``executor:`` in keel.yaml, ``KEEL_EXECUTOR``; a package adds one through the
``keel.executors`` entry-point group, see :data:`keel.plugins.EXECUTORS`):

- :class:`LocalExecutor` runs steps in threads of this process, at most ``resources.cpus``
  CPUs' (and ``resources.memory``'s) worth at once. Threads, not processes: the steps are
  NumPy, LightGBM and Arrow code that releases the GIL, they share the open project (its
  database pool and artifact store), and a step (its config lambdas, a project module's
  function) need not pickle. A thread cannot be killed: a running step is told through
  ``ctx.cancelled`` and stops at its next ``ctx.check_cancelled()``; one that does not within
  :data:`CANCEL_GRACE` seconds is left behind, recorded cancelled.
- :class:`RayExecutor` runs every step (custom ones too) as a Ray task asking for the step's
  resources; the task opens the same project (artifact store, metadata database), so outputs
  and runs are those a local run records. Before anything runs, every step is checked against
  the cluster's nodes: one that no node can hold fails at once, naming the resource. Cancelling
  calls ``ray.cancel`` on the running tasks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.console import Console

from keel.errors import ConfigError, KeelError
from keel.pipeline.declare import StepResources, target_of
from keel.pipeline.graph import Bound, dependencies
from keel.pipeline.runner import StepCall, StepResult, run_call
from keel.project import Project
from keel.store import pipeline_runs
from keel.store.pipeline_runs import StepOutcome
from keel.types import Artifact

__all__ = [
    "CANCEL_GRACE",
    "Executor",
    "GraphOutcome",
    "LocalExecutor",
    "RayExecutor",
    "load_executor",
    "run_graph",
    "step_calls",
]

#: Seconds a cancelled run waits for its running steps to stop before leaving them behind.
CANCEL_GRACE = 5.0
#: How often the scheduler looks for a cancel request in the database.
POLL_SECONDS = 0.5
#: The steps that hand their work to Ray themselves (see :func:`_drives_ray`).
_TUNE, _TRAIN = "keel.pipeline.tune:tune_step", "keel.pipeline.steps:train"


@runtime_checkable
class Executor(Protocol):
    """Runs steps: what ``executor:`` names (``keel.executors`` plug-ins implement it).

    ``prepare`` checks, before anything runs, that every step can be placed (and is given the
    console steps print to); ``fits`` says
    whether one more step can start beside the running ones; ``submit`` starts one and returns
    a future of its :class:`~keel.pipeline.runner.StepResult` (built by
    :func:`keel.pipeline.runner.run_call`); ``cancel`` stops a running one; ``close`` releases
    what ``prepare`` took.
    """

    name: str

    def prepare(self, project: Project, calls: Sequence[StepCall], console: Console) -> None: ...

    def fits(self, running: Sequence[StepCall], call: StepCall) -> bool: ...

    def submit(self, call: StepCall) -> Future[StepResult]: ...

    def cancel(self, future: Future[StepResult]) -> None: ...

    def close(self) -> None: ...


def load_executor(project: Project, name: str | None = None) -> Executor:
    """The executor ``name`` (default: ``KEEL_EXECUTOR``, else keel.yaml ``executor:``).

    Raises:
        ConfigError: No executor has that name (the message lists them), its extra is not
            installed, or a plug-in's class does not take ``(project)``.
    """
    from keel.plugins import EXECUTORS
    from keel.settings import load_settings

    chosen = name or load_settings().executor or project.config.executor
    factory = EXECUTORS.load(chosen)
    try:
        executor = factory(project)
    except TypeError as exc:
        raise ConfigError(
            f"executor '{chosen}': {factory!r} must take the project as its one argument ({exc}).",
            field="executor",
        ) from exc
    if not isinstance(executor, Executor):
        raise ConfigError(
            f"executor '{chosen}': {type(executor).__name__} lacks the Executor methods "
            "(prepare, fits, submit, cancel, close).",
            field="executor",
        )
    return executor


# -- scheduling -------------------------------------------------------------------------------


def step_calls(
    project: Project,
    bound: list[Bound],
    *,
    use_cache: bool,
    explain: bool,
    reuse: Mapping[str, str],
) -> dict[str, StepCall]:
    """What each step is executed with, but its inputs (known once its producers ran): its
    resources (declared, then ``pipeline.resources``, then its ``pipeline.steps`` entry) and
    retries (its entry, ``pipeline.retries.<step>``, declared, ``pipeline.retries.default``).

    Raises:
        ConfigError: A resources override is not valid, or ``pipeline.retries`` /
            ``pipeline.resources`` names no step (names the keel.yaml line).
    """
    config = project.config.pipeline
    custom = {project.config.where("pipeline", "steps", i): e for i, e in enumerate(config.steps)}
    names = [item.spec.name for item in bound]
    for key, named in (("retries", config.retries), ("resources", config.resources)):
        unknown = sorted(set(named) - set(names) - ({"default"} if key == "retries" else set()))
        if unknown:
            where = project.config.where("pipeline", key, unknown[0])
            raise ConfigError(
                f"{where}: pipeline.{key} names step '{unknown[0]}', which is not in the "
                f"pipeline (steps: {', '.join(names)}).",
                field=f"pipeline.{key}",
            )
    calls = {}
    for item in bound:
        spec = item.spec
        entry = custom.get(spec.origin or "")
        resources = spec.resources
        own = config.resources.get(spec.name)
        overrides = own.declared() if own is not None else {}
        if entry is not None and entry.resources is not None:
            overrides |= entry.resources.declared()
        if overrides:
            where = project.config.where("pipeline", "resources", spec.name)
            merged = {"cpus": resources.cpus, "gpus": resources.gpus} | overrides
            if "memory" not in overrides and resources.memory is not None:
                merged["memory"] = resources.memory
            resources = StepResources.of(merged, where)
        if entry is not None and entry.retries is not None:
            retries = entry.retries
        else:
            retries = config.retries_of(spec.name, spec.retries)
        calls[spec.name] = StepCall(
            root=str(project.root),
            spec=spec,
            inputs={},
            use_cache=use_cache,
            explain=explain,
            tags={},
            resources=resources,
            retries=retries,
            backoff=config.backoff,
            reuse=reuse.get(spec.name),
        )
    return calls


@dataclass
class GraphOutcome:
    """How a graph run went: results in the steps' order and what stopped it, if anything."""

    results: list[StepResult] = field(default_factory=list)
    outcomes: list[StepOutcome] = field(default_factory=list)
    failure: BaseException | None = None
    failure_message: str | None = None
    cancelled: str | None = None
    interrupted: bool = False


@dataclass
class _State:
    calls: dict[str, StepCall]
    done: dict[str, StepResult] = field(default_factory=dict)
    running: dict[Future[StepResult], StepCall] = field(default_factory=dict)
    available: dict[tuple[str, str], Artifact] = field(default_factory=dict)
    failure: BaseException | None = None
    failure_message: str | None = None
    cancelled: str | None = None
    interrupted: bool = False
    stop_by: float | None = None


def run_graph(
    project: Project,
    bound: list[Bound],
    calls: Mapping[str, StepCall],
    executor: Executor,
    *,
    tags: dict[str, str],
    pipeline_run: str,
) -> GraphOutcome:
    """Run the planned steps on ``executor`` (see the module docstring for the semantics)."""
    waits = dependencies(bound)
    state = _State(calls={name: replace(call, tags=tags) for name, call in calls.items()})
    database = project.metadata.database
    next_poll = time.monotonic() + POLL_SECONDS
    while True:
        try:
            if state.failure is None and state.cancelled is None:
                _start_ready(project, bound, waits, executor, state)
            if not state.running:
                break
            finished, _ = wait(list(state.running), timeout=0.1, return_when=FIRST_COMPLETED)
            for future in finished:
                result = _collect(project, future, state)
                if result.status == "cancelled" and state.cancelled is None:
                    _cancel(executor, state, f"step '{result.step}' was cancelled")
            if state.cancelled is None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + POLL_SECONDS
                if pipeline_runs.status_of(database, pipeline_run) == "cancel_requested":
                    _cancel(executor, state, "cancelled with keel runs cancel")
            if state.stop_by is not None and time.monotonic() > state.stop_by:
                break  # steps that did not stop in time are left behind, recorded cancelled
        except KeyboardInterrupt:
            state.interrupted = True
            if state.cancelled is not None:
                break  # a second Ctrl-C: stop waiting now
            _cancel(executor, state, "interrupted (Ctrl-C)")
    return _outcome(bound, state)


def _start_ready(
    project: Project,
    bound: list[Bound],
    waits: Mapping[str, tuple[str, ...]],
    executor: Executor,
    state: _State,
) -> None:
    started = {call.spec.name for call in state.running.values()} | set(state.done)
    for item in bound:  # in the steps' order: with room for one, the earliest goes first
        name = item.spec.name
        if name in started or not all(_succeeded(state, w) for w in waits[name]):
            continue
        inputs = {
            port: state.available[source]
            for port, source in item.sources.items()
            if source is not None and source in state.available
        }
        missing = [p.name for p in item.spec.inputs if not p.optional and p.name not in inputs]
        if missing:  # an optional output the producer did not write this time
            source = item.sources[missing[0]]
            writer = f"step '{source[0]}'" if source else "any step"
            state.failure = KeelError(
                f"{item.spec.where}: its input '{missing[0]}' was not written by {writer} in "
                "this run."
            )
            state.failure_message = state.failure.args[0]
            return
        call = replace(state.calls[name], inputs=inputs)
        if not executor.fits(list(state.running.values()), call):
            continue
        state.running[executor.submit(call)] = call


def _succeeded(state: _State, name: str) -> bool:
    result = state.done.get(name)
    return result is not None and result.status in ("succeeded", "cached")


def _collect(project: Project, future: Future[StepResult], state: _State) -> StepResult:
    call = state.running.pop(future)
    spec = call.spec
    try:
        result = future.result()
    except BaseException as exc:  # the executor failed to run it (a lost worker, ray.cancel)
        status = "cancelled" if state.cancelled is not None else "failed"
        message = f"{type(exc).__name__}: {exc}"
        result = StepResult(spec.name, "", status, 0.0, {}, {}, error=message, exception=exc)
    declared = {port.name for port in spec.outputs}
    undeclared = sorted(set(result.outputs) - declared)
    if result.status in ("succeeded", "cached") and undeclared:
        error = KeelError(
            f"{spec.where} wrote '{undeclared[0]}', which it does not declare (outputs: "
            f"{', '.join(sorted(declared))}). Declare it in @keel.step(outputs=...)."
        )
        result = replace(result, status="failed", error=error.message, exception=error)
    state.done[spec.name] = result
    if result.status == "failed" and state.failure is None:
        state.failure = result.exception or KeelError(result.error or f"{spec.where} failed")
        state.failure_message = result.error
    if result.status in ("succeeded", "cached"):
        for name, sha in result.outputs.items():
            state.available[(spec.name, name)] = project.metadata.get_artifact(sha)
    return result


def _cancel(executor: Executor, state: _State, why: str) -> None:
    state.cancelled = why
    state.stop_by = time.monotonic() + CANCEL_GRACE
    for future in list(state.running):
        executor.cancel(future)


def _outcome(bound: list[Bound], state: _State) -> GraphOutcome:
    running = {call.spec.name for call in state.running.values()}
    outcomes = []
    for item in bound:
        name = item.spec.name
        result = state.done.get(name)
        if result is not None:
            outcomes.append(_step_outcome(result))
        elif name in running:  # left behind by a cancel: it may still write, never recorded
            outcomes.append(StepOutcome(name, "", "cancelled", "miss", 0.0))
        else:
            outcomes.append(StepOutcome(name, "", "not_run", "miss", 0.0))
    results = [state.done[b.spec.name] for b in bound if b.spec.name in state.done]
    return GraphOutcome(
        results=[r for r in results if r.status in ("succeeded", "cached")],
        outcomes=outcomes,
        failure=state.failure,
        failure_message=state.failure_message,
        cancelled=state.cancelled,
        interrupted=state.interrupted,
    )


def _step_outcome(result: StepResult) -> StepOutcome:
    return StepOutcome(
        step=result.step,
        run_id=result.run_id,
        status=result.status,
        cache="hit" if result.status == "cached" else "miss",
        seconds=result.seconds,
        cpu_seconds=result.cpu_seconds,
        peak_rss_mb=result.peak_rss_mb,
        attempt=result.attempt,
        error=result.error,
    )


# -- local ------------------------------------------------------------------------------------


class LocalExecutor:
    """Steps in threads of this process, within ``resources.cpus`` CPUs and (when set)
    ``resources.memory`` at once; a step asking for a GPU runs beside no other GPU step.

    Args:
        project: The project (its ``resources:`` are the totals).
    """

    name = "local"

    def __init__(self, project: Project) -> None:
        resources = project.config.resources
        self.cpus = resources.cpus
        self.memory = resources.memory_bytes()
        self.console = Console(quiet=True)
        self.cancelled = threading.Event()
        self._project = project

    def prepare(self, project: Project, calls: Sequence[StepCall], console: Console) -> None:
        """Check that every step fits the totals on its own.

        Raises:
            ConfigError: A step asks for more CPUs or memory than ``resources:`` gives.
        """
        self._project = project
        self.console = console
        for call in calls:
            asks = call.resources
            short = []
            if asks.cpus > self.cpus:
                short.append(f"{asks.cpus:g} CPUs, and resources.cpus is {self.cpus:g}")
            if asks.memory is not None and self.memory is not None and asks.memory > self.memory:
                short.append(
                    f"{asks.memory} bytes of memory, and resources.memory is {self.memory}"
                )
            if short:
                raise ConfigError(
                    f"{call.spec.where} asks for {short[0]}: it could never start. Raise "
                    "resources.cpus / resources.memory in keel.yaml, or lower the step's "
                    "(pipeline.resources).",
                    field="resources",
                )

    def fits(self, running: Sequence[StepCall], call: StepCall) -> bool:
        """Whether ``call`` fits beside ``running`` within the totals."""
        cpus = sum(r.resources.cpus for r in running) + call.resources.cpus
        if cpus > self.cpus + 1e-9:
            return False
        if call.resources.gpus and any(r.resources.gpus for r in running):
            return False
        if self.memory is None or call.resources.memory is None:
            return True
        memory = sum(r.resources.memory or 0 for r in running) + call.resources.memory
        return memory <= self.memory

    def submit(self, call: StepCall) -> Future[StepResult]:
        """Start the step in a daemon thread (one left behind by a cancel never holds up the
        process's exit)."""
        future: Future[StepResult] = Future()
        project, console, cancelled = self._project, self.console, self.cancelled

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(run_call(project, call, console, cancelled))
            except BaseException as exc:
                future.set_exception(exc)

        name = f"keel-step-{call.spec.name}"
        threading.Thread(target=work, name=name, daemon=True).start()
        return future

    def cancel(self, future: Future[StepResult]) -> None:
        """Tell every running step to stop (``ctx.cancelled``)."""
        self.cancelled.set()

    def close(self) -> None:
        """Nothing to release."""


# -- Ray --------------------------------------------------------------------------------------


def _ray_step(root: str, blob: bytes) -> StepResult:
    """The body of a step's Ray task: with the project's directory importable (its custom
    step modules), unpickle the call, open the project where the driver has it, run the step
    and return its result (the exception as text when it would not travel back)."""
    import pickle

    from ray import cloudpickle

    from keel.features.custom import importable_from

    with importable_from(Path(root)):
        call: StepCall = cloudpickle.loads(blob)
        with Project(root) as project:
            result = run_call(project, call, Console(quiet=True), threading.Event())
    if result.exception is not None:
        try:
            pickle.loads(pickle.dumps(result.exception))
        except Exception:
            result = replace(result, exception=KeelError(result.error or "the step failed"))
    return result


class RayExecutor:
    """Every step as a Ray task with the step's resources (``executor: ray``; extra ``ray``).

    Connects to ``ray_address`` / ``KEEL_RAY_ADDRESS`` (unset: a local Ray), or uses the Ray
    this process is already connected to. The workers must see the project directory (the same
    machine, or a shared filesystem) and reach its stores.

    Args:
        project: The project.
    """

    name = "ray"

    def __init__(self, project: Project) -> None:
        from keel.settings import load_settings

        self.address = load_settings().ray_address or project.config.ray_address
        self._workers = project.config.resources.workers
        self._stack = contextlib.ExitStack()
        self._ray: Any = None
        self._refs: dict[Future[StepResult], Any] = {}

    def prepare(self, project: Project, calls: Sequence[StepCall], console: Console) -> None:
        """Connect, and check that every step fits some alive node.

        Raises:
            ConfigError: Ray is not installed or unreachable, or a step asks for more than
                any node has (names the step, the resource and the nodes' capacity).
        """
        from keel.train.search.distributed import ray_session

        self._ray = self._stack.enter_context(ray_session(self.address))
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive", True)]
        for call in calls:
            _check_placeable(call, nodes)

    def fits(self, running: Sequence[StepCall], call: StepCall) -> bool:
        """Always: Ray queues a task until a node has room for it."""
        return True

    def submit(self, call: StepCall) -> Future[StepResult]:
        """Start the step as a Ray task asking for its resources."""
        asks = call.resources
        if _drives_ray(call, self._workers):
            asks = StepResources(cpus=0.0)  # its trials or workers ask for their own
        options: dict[str, Any] = {"num_cpus": asks.cpus, "num_gpus": asks.gpus}
        if asks.memory is not None:
            options["memory"] = asks.memory
        from ray import cloudpickle

        task = self._ray.remote(_ray_step).options(max_retries=0, **options)
        ref = task.remote(call.root, cloudpickle.dumps(call))  # type: ignore[no-untyped-call]
        future: Future[StepResult] = ref.future()
        self._refs[future] = ref
        return future

    def cancel(self, future: Future[StepResult]) -> None:
        """``ray.cancel`` the task: a running one gets KeyboardInterrupt and records its run
        cancelled."""
        ref = self._refs.get(future)
        if ref is not None:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)

    def close(self) -> None:
        """Disconnect when this executor connected."""
        self._refs.clear()
        self._stack.close()


def _drives_ray(call: StepCall, workers: int) -> bool:
    """Whether a step hands its work to Ray itself: ``tune`` (trials as Ray tasks) and
    ``train`` with ``resources.workers`` > 1 (Ray Train). Such a step's task holds no CPU: it
    only waits, and holding one could starve its own trials or workers on a small cluster."""
    target = target_of(call.spec.fn)
    return target == _TUNE or (target == _TRAIN and workers > 1)


def _check_placeable(call: StepCall, nodes: list[Mapping[str, float]]) -> None:
    asks: StepResources = call.resources
    if any(_holds(node, asks) for node in nodes):
        return
    wanted = {"CPU": asks.cpus, "GPU": asks.gpus, "memory": float(asks.memory or 0)}
    short = [r for r, n in wanted.items() if n and not any(node.get(r, 0.0) >= n for node in nodes)]
    missing = short[0] if short else "CPU"
    biggest = max((node.get(missing, 0.0) for node in nodes), default=0.0)
    shown = f"{biggest / 1024**3:.1f} GiB" if missing == "memory" else f"{biggest:g}"
    raise ConfigError(
        f"{call.spec.where} asks for {asks.describe()}, which no Ray node can hold: missing "
        f"{missing} (the most any of the {len(nodes)} alive node(s) has is {shown}). Lower "
        "the step's resources (pipeline.resources in keel.yaml) or add a bigger node.",
        field="resources",
    )


def _holds(node: Mapping[str, float], asks: StepResources) -> bool:
    if node.get("CPU", 0.0) < asks.cpus or node.get("GPU", 0.0) < asks.gpus:
        return False
    return asks.memory is None or node.get("memory", 0.0) >= asks.memory
