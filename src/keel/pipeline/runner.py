"""Run declared steps; each is a recorded Run with lineage, reused from cache when nothing
changed. The steps are planned first (:func:`keel.pipeline.graph.plan`): every input is bound to
the step that writes it and the whole graph is checked before anything runs. The project's
executor (:mod:`keel.pipeline.executors`) then runs them, independent ones at the same time;
a transient failure is retried with backoff (``pipeline.retries``), and a run is stopped by
``keel runs cancel`` or Ctrl-C (a running step sees ``ctx.cancelled`` at its safe points).

A step is reused when an earlier run has its cache key (:mod:`keel.pipeline.cache_key`: Keel's
version, the step's source, its config section, its inputs' hashes and any extra key). A cached
step is still recorded, as a ``cached`` run pointing at the outputs of the run it reused, so
lineage stays a query.

Every run records the environment it ran on (Python, packages, platform, the project's git
commit), its duration, CPU seconds and peak memory; a step's ``ctx.facts["params"]``,
``["metrics"]``, ``["history"]`` and ``["tags"]`` become queryable tracking records
(``keel runs list --filter "metrics.validation_roc_auc > 0.9"``). What a step says with
``ctx.warn(...)`` is printed and kept with its run (``params["warnings"]``), so
``keel runs show RUN_ID`` shows it again; a cached run keeps (without printing them again) the
warnings of the run it reused.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from rich.console import Console
from rich.markup import escape

from keel.config import config_hash
from keel.config.pipeline import BackoffConfig
from keel.errors import (
    ConfigError,
    DataValidationError,
    GateError,
    KeelError,
    NotFittedError,
    NotFoundError,
)
from keel.pipeline.cache_key import code_version_of, explain_cache, outputs_intact, step_key
from keel.pipeline.declare import Port, StepResources, StepSpec
from keel.pipeline.graph import plan
from keel.pipeline.usage import StepUsage
from keel.project import Project
from keel.store import pipeline_runs
from keel.store.environment import capture_environment
from keel.store.leases import keep_alive
from keel.types import Artifact, jsonable

__all__ = [
    "Cancelled",
    "Step",
    "StepCall",
    "StepContext",
    "StepResult",
    "StepSpec",
    "run_call",
    "run_steps",
    "transient",
]

#: Errors that are the user's to fix (config, data, a failed check): never retried.
_USER_ERRORS = (ConfigError, DataValidationError, GateError, NotFoundError, NotFittedError)


class Cancelled(KeelError):
    """The pipeline run was cancelled (``keel runs cancel``); a step that checks
    ``ctx.check_cancelled()`` raises it to stop at a safe point."""

    http_status: ClassVar[int] = 409
    exit_code: ClassVar[int] = 130


@dataclass
class StepContext:
    """What a step sees: the project, its inputs, the console, and a place for facts."""

    project: Project
    console: Console
    inputs: dict[str, Artifact]
    run_id: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)
    read: dict[str, Artifact] = field(default_factory=dict)
    """Artifacts the step read besides its declared inputs (one named by a param, such as a
    retrain's labelled rows): recorded as the run's inputs too, so lineage reaches them."""

    @property
    def cancel_requested(self) -> bool:
        """Whether the pipeline run is being cancelled (``keel runs cancel``, Ctrl-C): a long
        step checks it at safe points (between epochs, chunks, files) and stops."""
        return self.cancelled.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` when the run is being cancelled (call it at safe points:
        nothing half-written; the step's run is recorded cancelled).

        Raises:
            Cancelled: The pipeline run is being cancelled.
        """
        if self.cancelled.is_set():
            raise Cancelled(f"step run {self.run_id[:12]} stopped: its pipeline run was cancelled")

    def warn(self, message: str, *, echo: bool = True) -> None:
        """Tell the user something they should act on: printed now (``warning: ...``) and
        stored with this step's run, where ``keel runs show RUN_ID`` shows it later.

        Args:
            message: What happened, where, and what to do about it (one or more sentences).
            echo: False stores it without printing it (:meth:`warn_all` says how many).
        """
        self.warnings.append(message)
        if echo:
            self.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    def warn_all(self, messages: list[str], *, shown: int = 5) -> None:
        """Store every message as a warning of this run, printing the first ``shown`` and,
        for the rest, one line naming how many more and ``keel runs show RUN_ID``."""
        for i, message in enumerate(messages):
            self.warn(message, echo=i < shown)
        if len(messages) > shown:
            more = len(messages) - shown
            self.console.print(
                f"  ... and {more} more: keel runs show {self.run_id[:12]}", highlight=False
            )

    def read_table(self, artifact: Artifact) -> Any:
        """The Arrow table in a Parquet artifact (a snapshot), its sha256 verified."""
        from keel.data import read_snapshot

        return read_snapshot(self.project.artifacts, artifact)

    def put_table(self, table: Any, *, parent: Artifact | None = None, **metadata: Any) -> Artifact:
        """Store an Arrow table as a Parquet ``snapshot`` artifact (content-addressed: the same
        rows give the same hash) and return it; ``parent`` is the snapshot it was made from."""
        import tempfile
        from pathlib import Path

        import pyarrow.parquet as pq

        from keel.data.snapshots import ROW_GROUP_ROWS, schema_fingerprint

        with tempfile.TemporaryDirectory(prefix="keel-step-") as tmp:
            path = Path(tmp) / "table.parquet"
            pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd")
            described = {
                "rows": table.num_rows,
                "columns": table.column_names,
                "schema_fingerprint": schema_fingerprint(table.schema),
                "step": self.run_id,
            }
            if parent is not None:
                described |= {"parent": parent.sha256, "source": parent.metadata.get("source")}
            return self.project.artifacts.put(path, kind="snapshot", metadata=described | metadata)

    def read_json(self, artifact: Artifact) -> Any:
        """A JSON artifact's value (an evaluation, statistics...), its sha256 verified."""
        import orjson

        return orjson.loads(self.project.artifacts.get(artifact.sha256))

    def put_json(self, value: Any, *, kind: str, **metadata: Any) -> Artifact:
        """Store a JSON-able value as an artifact (keys sorted: equal values, equal hashes)."""
        import orjson

        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        return self.project.artifacts.put(data, kind=kind, metadata=metadata)


StepFn = Callable[..., dict[str, Artifact]]


def Step(
    name: str,
    fn: StepFn,
    inputs: tuple[str, ...] = (),
    section: Callable[[Project], Any] | None = None,
    extra_key: Callable[[Project, dict[str, Artifact]], str] | None = None,
    *,
    outputs: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> StepSpec:
    """A step declared inline (inputs and outputs by name, kind ``any``): for small pipelines
    and tests; Keel's own steps use :func:`keel.pipeline.declare.step`."""
    return StepSpec(
        name=name,
        fn=fn,
        inputs=tuple(Port(n, optional=n in optional) for n in inputs),
        outputs=tuple(Port(n, optional=n in optional) for n in outputs),
        section=section or (lambda project: {}),
        extra_key=extra_key,
    )


@dataclass(frozen=True)
class StepResult:
    """How one step went."""

    step: str
    run_id: str
    status: str
    seconds: float
    outputs: dict[str, str]
    facts: dict[str, Any]
    warnings: tuple[str, ...] = ()
    explain: str = ""
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None
    attempt: int = 1
    error: str | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StepCall:
    """One step to execute, as an executor receives it (plain data: it travels to a Ray
    worker, which opens the project at ``root``).

    Attributes:
        root: The project directory.
        spec: The step.
        inputs: Its input artifacts by parameter name.
        use_cache: Reuse an identical earlier run.
        explain: Say why the cache hit or missed.
        tags: Tags of every run it records (the pipeline run, the trigger).
        resources: What it holds while it runs.
        retries: Attempts after a transient failure.
        backoff: The waits between attempts.
        reuse: A run whose outputs it takes instead of executing (resume), if any.
    """

    root: str
    spec: StepSpec
    inputs: dict[str, Artifact]
    use_cache: bool
    explain: bool
    tags: dict[str, str]
    resources: StepResources = field(default_factory=StepResources)
    retries: int = 0
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    reuse: str | None = None


def run_steps(
    project: Project,
    steps: list[StepSpec],
    *,
    console: Console,
    use_cache: bool = True,
    explain: bool = False,
    pipeline_run: str | None = None,
    trigger: str = "manual",
    reason: str | None = None,
    reuse: Mapping[str, str] | None = None,
    executor: str | None = None,
) -> list[StepResult]:
    """Plan the steps, then run (or reuse) each on the project's executor, recording runs and
    lineage: independent steps may run at the same time (within ``resources:``), dependents
    start once their inputs are written, and the results come back in the steps' order.

    Args:
        project: The project.
        steps: The declared steps, in order (see :func:`keel.pipeline.graph.order_steps`).
        console: Where steps draw progress.
        use_cache: False executes every step even when an identical run exists.
        explain: Print, per step, whether its cache hit and, when not, what changed since its
            last run (its code, config, raw files or which input); also in ``StepResult``.
        pipeline_run: The pipeline run's id (default: a new one). The run is recorded with
            its trigger, reason, status and each step's outcome (``keel runs show ID``), and
            every step run is tagged with it.
        trigger: ``manual``, ``schedule``, ``event`` or ``retry``.
        reason: Why it ran (a schedule's name, an event), in words.
        reuse: Step name -> a run whose outputs it takes instead of executing (resume).
        executor: ``local``, ``ray`` or a plug-in's (default: keel.yaml ``executor:``).

    Raises:
        PipelineGraphError: The graph is not valid (nothing ran); lists every problem.
        ConfigError: A step asks for more resources than the executor can ever give.
        Cancelled: ``keel runs cancel`` stopped the run (recorded ``cancelled``).
        KeyboardInterrupt: Ctrl-C stopped it (recorded ``cancelled`` first).
        KeelError: A step failed (after its retries); its run is recorded failed.
    """
    from keel.pipeline import manifest
    from keel.pipeline.executors import load_executor, run_graph, step_calls

    # what a no-op rerun checks (keel.pipeline.noop): taken before any cache key is decided
    plain = trigger == "manual" and reason is None and use_cache and not reuse
    fingerprint = manifest.begin(project) if plain else None
    bound = plan(steps)
    run_id = pipeline_run or uuid.uuid4().hex
    database = project.metadata.database
    project.artifacts  # noqa: B018 - opened once here, before steps share it across threads
    chosen = load_executor(project, executor)
    calls = step_calls(project, bound, use_cache=use_cache, explain=explain, reuse=reuse or {})
    chosen.prepare(project, list(calls.values()), console)  # fails before anything is recorded
    pipeline_runs.start(
        database, run_id, config_hash=config_hash(project.config), trigger=trigger, reason=reason
    )
    tags = {"pipeline_run": run_id, "trigger": trigger} | ({"reason": reason} if reason else {})
    try:
        graph = run_graph(project, bound, calls, chosen, tags=tags, pipeline_run=run_id)
    except BaseException as exc:
        error = exc.message if isinstance(exc, KeelError) else repr(exc)
        with contextlib.suppress(KeelError):
            pipeline_runs.finish(database, run_id, status="failed", steps=[], error=error)
        raise
    finally:
        chosen.close()
    status, message = "succeeded", None
    if graph.cancelled is not None:
        status, message = "cancelled", graph.cancelled
    elif graph.failure is not None:
        status, message = "failed", graph.failure_message
    with contextlib.suppress(KeelError):  # an unreachable store: the steps' outcome matters
        pipeline_runs.finish(database, run_id, status=status, steps=graph.outcomes, error=message)
    done = graph.results if status == "succeeded" else []
    local = getattr(chosen, "name", None) == "local"
    eligible = fingerprint is not None and local
    manifest.record(project, fingerprint, run_id, done, steps=steps, eligible=eligible)
    if graph.interrupted:
        raise KeyboardInterrupt
    if graph.cancelled is not None:
        raise Cancelled(f"pipeline run {run_id} was cancelled ({graph.cancelled}).")
    if graph.failure is not None:
        raise graph.failure
    return graph.results


def run_call(
    project: Project, call: StepCall, console: Console, cancelled: threading.Event
) -> StepResult:
    """Execute one step (on an executor's worker), retrying a transient failure with
    exponential backoff: every attempt is its own recorded run, tagged with its number (and
    ``trigger: retry`` after the first). Never raises for the step's own failure: the result
    says ``failed`` or ``cancelled`` and carries the exception."""
    attempt = 1
    while True:
        tags = call.tags | {"attempt": str(attempt)} | ({"trigger": "retry"} if attempt > 1 else {})
        result = _run_one(
            project, call.spec, call.inputs, console, use_cache=call.use_cache,
            explain=call.explain, tags=tags, cancelled=cancelled,
            reuse=call.reuse if attempt == 1 else None,
        )  # fmt: skip
        result = replace(result, attempt=attempt)
        if result.status != "failed" or attempt > call.retries:
            return result
        if result.exception is None or not transient(result.exception):
            return result
        wait = call.backoff.delay(attempt)
        console.print(
            f"  {call.spec.name}: attempt {attempt} failed ({escape(result.error or '')}); "
            f"retrying in {wait:.1f} s ({call.retries - attempt + 1} left)",
            highlight=False,
        )
        if cancelled.wait(wait):
            return replace(result, status="cancelled")
        attempt += 1


def transient(exc: BaseException) -> bool:
    """Whether a failure may pass on retry: not a user's error (config, data, a failed check,
    something missing), not a cancellation; a database, filesystem or any other error may."""
    if not isinstance(exc, Exception) or isinstance(exc, Cancelled):
        return False
    return not isinstance(exc, _USER_ERRORS)


def _run_one(
    project: Project,
    step: StepSpec,
    inputs: dict[str, Artifact],
    console: Console,
    *,
    use_cache: bool,
    explain: bool = False,
    tags: dict[str, str] | None = None,
    cancelled: threading.Event | None = None,
    reuse: str | None = None,
) -> StepResult:
    started = time.perf_counter()
    cache = step_key(step, project, inputs)
    key, parts, section_hash = cache.key, cache.parts, cache.config_hash
    code_version = code_version_of(step, cache.code)
    meta = project.metadata
    environment = capture_environment(project.root)
    if reuse is not None:  # resume: the outputs of the run the resumed pipeline run made
        cached: Any = meta.get_run(reuse)
        if cached.status == "cached" and cached.params.get("reused_run"):
            cached = meta.get_run(cached.params["reused_run"])  # the run that made them
    else:
        cached = meta.find_cached_run(key) if use_cache else None
    intact = cached is not None and outputs_intact(project, cached.outputs)
    why = explain_cache(project, step.name, parts, cached, intact, use_cache) if explain else ""
    if reuse is not None and explain:
        why = f"reused: run {reuse[:12]} of the resumed pipeline run" if intact else why
    if why:
        console.print(f"  {step.name}: {escape(why)}", highlight=False)
    if cached is not None and intact:
        # the reused run's warnings still hold for its outputs: keep them here too (the
        # summary counts them; printing them in full again on every rerun would be noise)
        reused = tuple(str(w) for w in cached.params.get("warnings", []))
        run = meta.start_run(
            step.name,
            cache_key=key,
            config_hash=section_hash,
            code_version=code_version,
            params={"reused_run": cached.id, "key": parts, **_warnings_param(list(reused))},
            environment=environment,
            tags=tags,
        )
        meta.finish_run(run.id, status="cached", inputs=_shas(inputs), outputs=dict(cached.outputs))
        facts = dict(cached.params.get("facts", {}))
        seconds = time.perf_counter() - started
        outs = dict(cached.outputs)
        return StepResult(step.name, run.id, "cached", seconds, outs, facts, reused, why)
    run = meta.start_run(
        step.name,
        cache_key=key,
        config_hash=section_hash,
        code_version=code_version,
        params={"key": parts},
        environment=environment,
        tags=tags,
    )
    context = StepContext(
        project=project, console=console, inputs=inputs, run_id=run.id, params=dict(step.params)
    )
    if cancelled is not None:
        context.cancelled = cancelled
    usage = StepUsage()
    try:
        context.check_cancelled()
        # the run's lease is renewed while it works: another host sees it alive, and a run
        # whose process died is marked failed the next time anything opens the store
        with keep_alive(meta, run.id), usage:
            outputs = step.call(context)
        for artifact in outputs.values():
            meta.record_artifact(artifact)
        shas = {name: a.sha256 for name, a in outputs.items()}
        meta.finish_run(
            run.id,
            status="succeeded",
            inputs=_shas(inputs) | _shas(context.read),
            outputs=shas,
            cpu_seconds=usage.cpu_seconds,
            peak_memory_mb=usage.peak_rss_mb,
            params=_warnings_param(context.warnings),
            facts=jsonable(context.facts),
        )
    except BaseException as exc:
        # The run must not stay 'running': record it failed (or cancelled), with what the
        # step reported.
        stopped = isinstance(exc, Cancelled | KeyboardInterrupt)
        error = exc.message if isinstance(exc, KeelError) else repr(exc)
        if isinstance(exc, KeyboardInterrupt):
            error = "cancelled (interrupted)"
        with contextlib.suppress(KeelError):  # an unreachable store: the step's error matters
            ended: Literal["failed", "cancelled"] = "cancelled" if stopped else "failed"
            _finish_failed(project, run.id, inputs, error, usage, context, status=ended)
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        return StepResult(
            step.name, run.id, "cancelled" if stopped else "failed",
            time.perf_counter() - started, {}, context.facts, tuple(context.warnings), why,
            cpu_seconds=usage.cpu_seconds, peak_rss_mb=usage.peak_rss_mb, error=error,
            exception=exc,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    said = tuple(context.warnings)
    return StepResult(
        step.name, run.id, "succeeded", seconds, shas, context.facts, said, why,
        cpu_seconds=usage.cpu_seconds, peak_rss_mb=usage.peak_rss_mb,
    )  # fmt: skip


def _warnings_param(warnings: list[str]) -> dict[str, Any]:
    return {"warnings": list(warnings)} if warnings else {}


def _finish_failed(
    project: Project,
    run_id: str,
    inputs: dict[str, Artifact],
    error: str,
    usage: StepUsage,
    context: StepContext,
    *,
    status: Literal["failed", "cancelled"] = "failed",
) -> None:
    meta = project.metadata
    if meta.get_run(run_id).status != "running":
        return  # the failure came after the run was recorded (nothing left to close)
    common: dict[str, Any] = {
        "status": status,
        "inputs": _shas(inputs),
        "error": error,
        "cpu_seconds": usage.cpu_seconds,
        "peak_memory_mb": usage.peak_rss_mb,
        "params": _warnings_param(context.warnings),
    }
    try:
        meta.finish_run(run_id, **common, facts=jsonable(context.facts))
    except KeelError:
        # Facts the store cannot take (the reason the success path failed, perhaps).
        meta.finish_run(run_id, **common)


def _shas(artifacts: dict[str, Artifact]) -> dict[str, str]:
    return {name: a.sha256 for name, a in artifacts.items()}
