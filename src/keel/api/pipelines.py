"""The Python API for pipelines and runs: run, tune, reproduce, runs, lineage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console

if TYPE_CHECKING:
    from keel.registry.lineage import LineageGraph
from keel.api.projects import _project


def run(
    project: str | Path | None = None,
    *,
    console: Console | None = None,
    cache: bool = True,
    explain: bool = False,
    trigger: str = "manual",
    reason: str | None = None,
    resume: str | None = None,
    executor: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline (Keel's steps and the project's custom ones), reusing cached steps
    unless ``cache=False``; independent steps run at the same time on the project's executor
    (``executor:``, within ``resources:``).

    Args:
        project: The project directory (default: the nearest keel.yaml).
        console: Where progress goes (default: nowhere).
        cache: False executes every step even when an identical run exists.
        explain: Print per step whether its cache hit, and what changed when it did not.
        trigger: What started the run: ``manual``, ``schedule``, ``event`` or ``retry``.
        reason: Why, in words (the schedule or event), recorded with every step run.
        resume: A failed or cancelled pipeline run's id (or prefix): reuse the outputs of its
            succeeded steps and run the rest (trigger ``retry``; keel.yaml must be unchanged).
        executor: ``local``, ``ray`` or a plug-in's (default: ``executor:`` in keel.yaml).

    Returns:
        ``{"project", "pipeline_run", "trigger", "resumes", "steps": [{"step", "status",
        "seconds", "run_id", "outputs", "facts", "warnings", "explain", "attempt"}], "model":
        {"name", "version", "promoted", "alias", "metrics", "gates"}}``.

    Raises:
        Cancelled: ``keel runs cancel`` stopped it (recorded ``cancelled``).
        ConflictError: ``resume`` names a run that is running or succeeded.
    """
    import uuid

    from keel.pipeline.runner import run_steps
    from keel.pipeline.standard import pipeline_steps

    pipeline_run = uuid.uuid4().hex
    with _project(project) as proj:
        steps = pipeline_steps(proj)
        reuse: dict[str, str] = {}
        resumes = None
        if resume is not None:
            from keel.pipeline.resume import plan_resume

            plan = plan_resume(proj, resume, steps)
            reuse, resumes, trigger, reason = (
                plan.reuse,
                plan.resumes,
                "retry",
                plan.reason,
            )
        results = run_steps(
            proj,
            steps,
            console=console or Console(quiet=True),
            use_cache=cache,
            explain=explain,
            pipeline_run=pipeline_run,
            trigger=trigger,
            reason=reason,
            reuse=reuse,
            executor=executor,
        )
        register = next((r.facts for r in results if r.step == "register"), {})
        evaluate = next(r for r in results if r.step == "evaluate").facts
        return {
            "project": str(proj.root),
            "pipeline_run": pipeline_run,
            "trigger": trigger,
            "resumes": resumes,
            "steps": [
                {
                    "step": r.step,
                    "status": r.status,
                    "seconds": round(r.seconds, 4),
                    "run_id": r.run_id,
                    "outputs": r.outputs,
                    "facts": r.facts,
                    "warnings": list(r.warnings),
                    "explain": r.explain,
                    "attempt": r.attempt,
                }
                for r in results
            ],
            "model": {
                "name": proj.config.model.name,
                "version": register.get("version"),
                "promoted": register.get("promoted"),
                "alias": register.get("alias"),
                "pending_request": register.get("pending_request"),
                "gates": register.get("gates", []),
                "metrics": evaluate.get("metrics", {}),
            },
        }


def tune(
    project: str | Path | None = None,
    *,
    trials: int = 10,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run ``trials`` more trials of the project's search (resuming its study), then the rest of
    the pipeline; the model is retrained and registered when the best trial changed.

    Returns:
        ``{"study", "trials_before", "trials_run", "best_trial", "best_value", "metric",
        "best_params", "steps", "model": {"name", "version", "promoted", "metrics"}}``.
    """
    from keel.pipeline.tune import extend_search

    with _project(project) as proj:
        return extend_search(proj, trials, console or Console(quiet=True))


def reproduce(run: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Re-execute a recorded run on its recorded inputs; report whether every output hash matches.

    Returns:
        ``{"run", "step", "match", "code_changed", "outputs": {name: {"recorded", "reproduced",
        "match"}}}``.
    """
    from keel.pipeline.reproduce import reproduce_run

    with _project(project) as proj:
        return reproduce_run(proj, run)


def runs(
    filter: str | None = None,
    *,
    sort: str | None = None,
    limit: int = 50,
    project: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Tracked runs matching a filter, sorted: params, metrics, tags, resources, data.

    Example:
        >>> keel.runs('metrics.roc_auc > 0.9 and step = "evaluate"', sort="metrics.roc_auc desc")

    Raises:
        ConfigError: A malformed filter or sort (the message shows the position and the forms).
    """
    from keel.tracking import find_runs

    with _project(project) as proj:
        return find_runs(proj.metadata, filter, sort=sort, limit=limit)


def get_run(run: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """One run (id or prefix of 6+ hex digits): facts, learning curves, environment, lineage."""
    from keel.tracking import show_run

    with _project(project) as proj:
        return show_run(proj.metadata, run)


def pipeline_runs(*, limit: int = 50, project: str | Path | None = None) -> list[dict[str, Any]]:
    """Pipeline runs (one per ``keel run``), newest first: trigger, status, steps."""
    from keel.store import pipeline_runs as records

    with _project(project) as proj:
        return [run.to_dict() for run in records.recent(proj.metadata.database, limit)]


def cancel_pipeline_run(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Ask the process running a pipeline run to stop it: it notices within a second, stops
    its running steps and records them and the run ``cancelled`` (resume it with
    ``run(resume=ID)``).

    Returns:
        The pipeline run, status ``cancel_requested``.

    Raises:
        NotFoundError: No pipeline run matches; ConflictError: it has already ended.
    """
    from keel.store import pipeline_runs as records

    with _project(project) as proj:
        return records.request_cancel(proj.metadata.database, ref).to_dict()


def get_pipeline_run(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """One pipeline run (id or unique prefix): trigger, reason, status, each step's outcome
    (run id, status, cache hit or miss, seconds, CPU seconds, peak memory while it ran).

    Raises:
        NotFoundError: No pipeline run matches, or the prefix matches several.
    """
    from keel.store import pipeline_runs as records

    with _project(project) as proj:
        return records.get(proj.metadata.database, ref).to_dict()


def lineage(
    ref: str,
    *,
    direction: Literal["up", "down"] = "up",
    max_nodes: int = 500,
    project: str | Path | None = None,
) -> LineageGraph:
    """Where ``ref`` came from (``up``) or what it influenced (``down``), down to served
    predictions; ``ref`` is an artifact sha256, run id, NAME@VERSION, NAME@ALIAS or request id.
    """
    from keel.registry.lineage import trace
    from keel.serve.lookup import LoggedPredictions

    proj = _project(project)
    source = LoggedPredictions(proj.predictions_dir)
    return trace(proj.metadata, ref, direction=direction, predictions=source, max_nodes=max_nodes)


def compare_runs(run_ids: list[str], *, project: str | Path | None = None) -> dict[str, Any]:
    """Runs side by side (params, metrics, data, environment), each row marked if it differs."""
    from keel.tracking import compare_runs as compare

    with _project(project) as proj:
        return compare(proj.metadata, run_ids)
