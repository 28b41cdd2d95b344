"""Re-execute a recorded run from its recorded inputs and compare the output hashes."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.pipeline.cache_key import code_version_of, step_config_hash
from keel.pipeline.runner import StepContext
from keel.project import Project

__all__ = ["reproduce_run"]


def reproduce_run(
    project: Project, run_ref: str, *, console: Console | None = None
) -> dict[str, Any]:
    """Run a recorded step again on its recorded inputs, bypassing the cache.

    The step must read the same configuration it read then (its config hash is compared); a
    change in the step's code is allowed and reported, since checking whether the code still
    reproduces the output is the point.

    Args:
        project: The project that recorded the run.
        run_ref: A run id or a unique prefix; a ``cached`` run stands for the run it reused.

    Returns:
        ``{"run", "step", "match", "code_changed", "outputs": {name: {"recorded",
        "reproduced", "match"}}}``.

    Raises:
        NotFoundError: No such run, or its step is not part of this pipeline.
        ConflictError: The step's configuration changed since the run.
        ConfigError: The step cannot be reproduced (it has side effects, or it failed).
    """
    meta = project.metadata
    run = meta.get_run(run_ref)
    if run.status == "cached":
        run = meta.get_run(str(run.params["reused_run"]))
    if run.status != "succeeded":
        raise ConfigError(
            f"run {run.id[:12]} ({run.step}) is {run.status}; only a run that "
            "succeeded has outputs to compare."
        )
    from keel.pipeline.standard import pipeline_steps

    steps = {step.name: step for step in pipeline_steps(project)}
    step = steps.get(run.step)
    if step is not None and step.effects:
        raise ConfigError(
            f"run {run.id[:12]} is a '{run.step}' step, which {', '.join(step.effects)} (it "
            "changes shared state beyond adding artifacts); reproduce the step before it."
        )
    if step is None:
        raise NotFoundError(
            f"run {run.id[:12]} is a '{run.step}' step, which this pipeline no "
            f"longer has (steps: {', '.join(steps)})."
        )
    if step_config_hash(step, project) != run.config_hash:
        raise ConflictError(
            f"the configuration '{run.step}' reads changed since run {run.id[:12]}; restore it "
            "(see the run's config hash) or reproduce a newer run."
        )
    inputs = {name: meta.get_artifact(sha) for name, sha in run.inputs.items()}
    context = StepContext(project=project, console=console or Console(quiet=True),
                          inputs=inputs, run_id=run.id)  # fmt: skip
    produced = step.call(context)
    outputs = {
        name: {
            "recorded": sha,
            "reproduced": produced[name].sha256 if name in produced else None,
            "match": name in produced and produced[name].sha256 == sha,
        }
        for name, sha in run.outputs.items()
    }
    return {
        "run": run.id,
        "step": run.step,
        "match": all(o["match"] for o in outputs.values()),
        "code_changed": code_version_of(step) != run.code_version,
        "outputs": outputs,
    }
