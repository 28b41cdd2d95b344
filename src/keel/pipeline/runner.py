"""Run steps in order; each is a recorded Run with lineage, reused from cache when nothing changed.

Cache key = Keel version + the step's source (comments stripped) + the hash of the config
section it reads + the sha256 of each input artifact + any extra key the step names (e.g. the
raw file's hash for ingestion). A cached step is still recorded, as a ``cached`` run pointing at
the outputs of the run it reused, so lineage stays a query.

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
import hashlib
import inspect
import io
import resource
import time
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from keel import __version__
from keel.config import config_hash
from keel.errors import KeelError
from keel.project import Project
from keel.store.environment import capture_environment
from keel.types import Artifact

__all__ = [
    "Step",
    "StepContext",
    "StepResult",
    "code_version_of",
    "run_steps",
    "source_hash",
    "step_config_hash",
]


@dataclass
class StepContext:
    """What a step sees: the project, its inputs, the console, and a place for facts."""

    project: Project
    console: Console
    inputs: dict[str, Artifact]
    run_id: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Tell the user something they should act on: printed now (``warning: ...``) and
        stored with this step's run, where ``keel runs show RUN_ID`` shows it later.

        Args:
            message: What happened, where, and what to do about it (one or more sentences).
        """
        self.warnings.append(message)
        self.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


StepFn = Callable[[StepContext], dict[str, Artifact]]


@dataclass(frozen=True)
class Step:
    """A named step: its function, the outputs of earlier steps it reads, its config section."""

    name: str
    fn: StepFn
    inputs: tuple[str, ...] = ()
    section: Callable[[Project], Any] = lambda project: {}
    extra_key: Callable[[Project, dict[str, Artifact]], str] | None = None


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


def run_steps(
    project: Project, steps: list[Step], *, console: Console, use_cache: bool = True
) -> list[StepResult]:
    """Run (or reuse) each step in order, recording runs and lineage in the metadata store.

    Args:
        project: The project.
        steps: The steps, in an order where every input is an earlier step's output.
        console: Where steps draw progress.
        use_cache: False executes every step even when an identical run exists.

    Raises:
        KeelError: A step failed; its run is recorded as failed with the message.
    """
    available: dict[str, Artifact] = {}
    results = []
    for step in steps:
        inputs = {name: available[name] for name in step.inputs}
        result = _run_one(project, step, inputs, console, use_cache=use_cache)
        for name, sha in result.outputs.items():
            available[name] = project.metadata.get_artifact(sha)
        results.append(result)
    return results


def _run_one(
    project: Project, step: Step, inputs: dict[str, Artifact], console: Console, *, use_cache: bool
) -> StepResult:
    started = time.perf_counter()
    section_hash = step_config_hash(step, project)
    extra = step.extra_key(project, inputs) if step.extra_key else ""
    code = source_hash(step.fn)
    key = _digest(
        __version__,
        code,
        section_hash,
        extra,
        *(f"{n}={a.sha256}" for n, a in sorted(inputs.items())),
    )
    code_version = code_version_of(step)
    meta = project.metadata
    environment = capture_environment(project.root)
    cached = meta.find_cached_run(key) if use_cache else None
    if cached is not None and all(project.artifacts.exists(s) for s in cached.outputs.values()):
        # the reused run's warnings still hold for its outputs: keep them here too (the
        # summary counts them; printing them in full again on every rerun would be noise)
        reused = tuple(str(w) for w in cached.params.get("warnings", []))
        run = meta.start_run(
            step.name,
            cache_key=key,
            config_hash=section_hash,
            code_version=code_version,
            params={"reused_run": cached.id, **_warnings_param(list(reused))},
            environment=environment,
        )
        meta.finish_run(run.id, status="cached", inputs=_shas(inputs), outputs=dict(cached.outputs))
        facts = dict(cached.params.get("facts", {}))
        seconds = time.perf_counter() - started
        return StepResult(step.name, run.id, "cached", seconds, dict(cached.outputs), facts, reused)
    run = meta.start_run(
        step.name,
        cache_key=key,
        config_hash=section_hash,
        code_version=code_version,
        environment=environment,
    )
    cpu0 = _cpu_seconds()
    context = StepContext(project=project, console=console, inputs=inputs, run_id=run.id)
    try:
        outputs = step.fn(context)
        for artifact in outputs.values():
            meta.record_artifact(artifact)
        shas = {name: a.sha256 for name, a in outputs.items()}
        meta.finish_run(
            run.id,
            status="succeeded",
            inputs=_shas(inputs),
            outputs=shas,
            cpu_seconds=_cpu_seconds() - cpu0,
            peak_memory_mb=_peak_mb(),
            params=_warnings_param(context.warnings),
            facts=_jsonable(context.facts),
        )
    except BaseException as exc:
        # The run must not stay 'running': record it as failed, with what the step reported.
        error = exc.message if isinstance(exc, KeelError) else repr(exc)
        with contextlib.suppress(KeelError):  # an unreachable store: the step's error matters
            _finish_failed(project, run.id, inputs, error, cpu0, context)
        raise
    seconds = time.perf_counter() - started
    said = tuple(context.warnings)
    return StepResult(step.name, run.id, "succeeded", seconds, shas, context.facts, said)


def _warnings_param(warnings: list[str]) -> dict[str, Any]:
    return {"warnings": list(warnings)} if warnings else {}


def _finish_failed(
    project: Project,
    run_id: str,
    inputs: dict[str, Artifact],
    error: str,
    cpu0: float,
    context: StepContext,
) -> None:
    meta = project.metadata
    if meta.get_run(run_id).status != "running":
        return  # the failure came after the run was recorded (nothing left to close)
    common: dict[str, Any] = {
        "status": "failed",
        "inputs": _shas(inputs),
        "error": error,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "peak_memory_mb": _peak_mb(),
        "params": _warnings_param(context.warnings),
    }
    try:
        meta.finish_run(run_id, **common, facts=_jsonable(context.facts))
    except KeelError:
        # Facts the store cannot take (the reason the success path failed, perhaps).
        meta.finish_run(run_id, **common)


def _shas(artifacts: dict[str, Artifact]) -> dict[str, str]:
    return {name: a.sha256 for name, a in artifacts.items()}


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def step_config_hash(step: Step, project: Project) -> str:
    """Hash of the config section a step reads, as recorded in its runs."""
    return config_hash({"section": _jsonable(step.section(project))})


def code_version_of(step: Step) -> str:
    """Keel's version plus the hash of the step's source, as recorded in its runs."""
    return f"keel-{__version__}+{source_hash(step.fn)[:12]}"


def source_hash(fn: Callable[..., Any]) -> str:
    """sha256 of the function's source without comments, so editing a comment keeps the cache."""
    source = inspect.getsource(fn)
    tokens = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type
        not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    ]
    return hashlib.sha256(" ".join(tokens).encode()).hexdigest()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
