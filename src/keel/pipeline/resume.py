"""Resuming a failed or cancelled pipeline run (``keel run --resume ID``).

The steps that succeeded in that run are not executed again: each is recorded as a ``cached``
run of the new pipeline run that points at the outputs of the run it reuses (verified in the
artifact store first; a missing or corrupt output makes that step run again). The step that
failed, and everything after it, runs. keel.yaml must be as it was (same config hash): outputs
made under another configuration are not what this one would make, and the error names the
steps whose configuration changed. The new pipeline run has trigger ``retry`` and names the
run it resumes (``resumes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.config import config_hash
from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.pipeline.declare import StepSpec
from keel.project import Project
from keel.store import pipeline_runs

__all__ = ["Resume", "plan_resume"]

_RESUMABLE = ("failed", "cancelled")


@dataclass(frozen=True)
class Resume:
    """What a resumed run reuses.

    Attributes:
        resumes: The id of the pipeline run it resumes.
        reuse: Step name -> the run whose outputs that step takes.
        reason: The reason recorded on the new pipeline run.
    """

    resumes: str
    reuse: dict[str, str]
    reason: str


def plan_resume(project: Project, ref: str, steps: list[StepSpec]) -> Resume:
    """Which steps of pipeline run ``ref`` a resumed run reuses.

    Args:
        project: The project.
        ref: The pipeline run's id or a unique prefix.
        steps: The pipeline's steps now (to name what changed).

    Raises:
        NotFoundError: No pipeline run matches.
        ConflictError: It is running, or it succeeded (nothing to resume).
        ConfigError: keel.yaml changed since it ran (names the steps whose config changed).
    """
    database = project.metadata.database
    run = pipeline_runs.get(database, ref)
    if run.status not in _RESUMABLE:
        hint = (
            "wait for it to end, or cancel it with 'keel runs cancel ID'"
            if run.status in pipeline_runs.ACTIVE
            else "run 'keel run' for a new run"
        )
        raise ConflictError(
            f"pipeline run {run.id} is {run.status}; only a failed or cancelled run can be "
            f"resumed: {hint}.",
            field="resume",
        )
    now = config_hash(project.config)
    if run.config_hash != now:
        raise ConfigError(
            f"cannot resume pipeline run {run.id[:12]}: keel.yaml changed since it ran (config "
            f"hash {run.config_hash[:12]} -> {now[:12]}); {_changes(project, run, steps)}. "
            "Restore keel.yaml to resume it, or start a new run with 'keel run' (it reuses "
            "every unchanged step from the cache).",
            field="resume",
        )
    reuse = {
        step["step"]: step["run_id"]
        for step in run.steps
        if step.get("status") in ("succeeded", "cached") and step.get("run_id")
    }
    return Resume(run.id, reuse, pipeline_runs.resume_reason(run.id))


def _changes(project: Project, run: pipeline_runs.PipelineRun, steps: list[StepSpec]) -> str:
    """Which steps read configuration that changed (from each step run's recorded hash)."""
    from keel.pipeline.cache_key import step_config_hash

    specs = {spec.name: spec for spec in steps}
    changed = []
    for record in run.steps:
        spec = specs.get(record["step"])
        if spec is None or not record.get("run_id"):
            continue
        try:
            recorded = project.metadata.get_run(record["run_id"]).config_hash
        except NotFoundError:
            continue
        if recorded != step_config_hash(spec, project):
            changed.append(spec.name)
    removed = sorted({r["step"] for r in run.steps} - set(specs))
    said = []
    if changed:
        said.append("the configuration read by step(s) " + ", ".join(f"'{n}'" for n in changed))
    if removed:
        said.append("step(s) no longer in the pipeline: " + ", ".join(removed))
    return (
        "changed: " + "; ".join(said)
        if said
        else "the changes are outside what its completed steps read (a later step's settings)"
    )
