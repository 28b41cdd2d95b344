"""Deployments from Python: canary, shadow and A/B, the same verbs as ``keel deploy``.

>>> keel.deploy("adult", canary=4, steps="5,25,50,100", interval="5m",
...             check="error_rate<=0.01,p99_ms<=50")
>>> keel.deployment_status("adult")["traffic"]
>>> keel.abort_deployment("adult", reason="wrong build")

A running ``keel serve`` picks a new deployment up within its reload interval and, while it
holds the controller lease, steps the canary; ``wait=True`` runs the controller here until the
canary ends (for projects with no server holding the lease).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.api.projects import _project
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.registry.rollout import Rollouts

__all__ = [
    "abort_deployment",
    "deploy",
    "deployment_status",
    "list_deployments",
    "promote_deployment",
    "wait_for_deployment",
]


def deploy(
    name: str,
    *,
    canary: int | None = None,
    shadow: int | None = None,
    ab: str | Sequence[tuple[int, float]] | None = None,
    steps: str | Sequence[float] = "5,25,50,100",
    interval: str | float = "5m",
    check: str = "error_rate<=0.01",
    failures: int = 2,
    min_requests: int = 20,
    sticky_key: str | None = None,
    reason: str = "",
    wait: bool = False,
    on_decision: Callable[[str], None] | None = None,
    project: str | Path | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Start a deployment of ``name`` (exactly one of ``canary``, ``shadow``, ``ab``).

    Args:
        canary: The version to canary: ``steps`` percent of traffic, stepped every ``interval``
            while ``check`` holds on its own traffic, rolled back after ``failures`` bad
            intervals in a row; an interval with fewer than ``min_requests`` waits.
        shadow: The version to mirror traffic to (answers logged and compared, not returned).
        ab: Arms as ``"3:50,4:50"`` or ``[(3, 50), (4, 50)]``, sticky by ``sticky_key``.
        wait: Run the controller here until a canary ends; ``on_decision`` gets each decision.

    Returns:
        The deployment (its status after waiting, when ``wait``).

    Raises:
        ConfigError: Not exactly one kind, or a bad step, interval or check clause.
        NotFoundError: Unknown model or version.
        ConflictError: The model already has an active deployment.
    """
    from keel.registry.deployments import parse_ab, parse_checks, parse_interval, parse_steps

    chosen = [k for k, v in (("canary", canary), ("shadow", shadow), ("ab", ab)) if v is not None]
    if len(chosen) != 1:
        msg = f"give exactly one of --canary, --shadow or --ab (got {', '.join(chosen) or 'none'})."
        raise ConfigError(msg, field="kind")
    with _project(project) as proj:
        rollouts = _rollouts(proj, actor)
        if canary is not None:
            made = rollouts.canary(
                name,
                canary,
                steps=parse_steps(steps) if isinstance(steps, str) else tuple(steps),
                interval_s=parse_interval(interval) if isinstance(interval, str) else interval,
                checks=parse_checks(check),
                failures=failures,
                min_requests=min_requests,
                sticky_key=sticky_key,
                reason=reason,
            )
        elif shadow is not None:
            made = rollouts.shadow(name, shadow, reason=reason)
        else:
            arms = parse_ab(ab) if isinstance(ab, str) else tuple(ab or ())
            made = rollouts.ab(name, arms, sticky_key=sticky_key, reason=reason)
        if wait and made.kind == "canary":
            return _wait(rollouts, made.id, on_decision)
        return made.to_json()


def wait_for_deployment(
    ref: str,
    *,
    on_decision: Callable[[str], None] | None = None,
    timeout: float | None = None,
    project: str | Path | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Run the canary controller in this process until deployment ``ref`` ends."""
    with _project(project) as proj:
        return _wait(_rollouts(proj, actor), ref, on_decision, timeout)


def _wait(
    rollouts: Rollouts,
    ref: str,
    on_decision: Callable[[str], None] | None,
    timeout: float | None = None,
) -> dict[str, Any]:
    found = rollouts.get(ref)
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = min(1.0, max(0.1, found.spec.interval_s / 10))
    while found.status == "active":
        for decision in rollouts.tick():
            if decision.deployment_id == found.id and on_decision is not None:
                on_decision(str(decision))
        found = rollouts.get(found.id)
        if found.status != "active" or (deadline is not None and time.monotonic() > deadline):
            break
        time.sleep(pause)
    return rollouts.status(found.id)


def list_deployments(
    *, name: str | None = None, limit: int = 100, project: str | Path | None = None
) -> list[dict[str, Any]]:
    """Deployments newest first (of one model name, or all); an ended one with its ``final``
    outcome and its arms at their final weights (100 % for the version serving now)."""
    with _project(project) as proj:
        rollouts = _rollouts(proj, None)
        return [rollouts.with_outcome(d) for d in rollouts.listed(name=name, limit=limit)]


def deployment_status(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """A deployment (by id, or a model name's active else latest one): arms, weights, each
    arm's requests, error rate and latency percentiles, shadow disagreement and what became
    of the shadow's copies, history."""
    with _project(project) as proj:
        shown = _rollouts(proj, None).status(ref)
        from keel.monitor.arms import with_feedback
        from keel.registry.deployments import with_coverage

        shown = with_coverage(proj.metadata.database, shown)  # what became of a shadow's copies
        return with_feedback(proj, shown)


def promote_deployment(
    ref: str,
    *,
    version: int | None = None,
    reason: str = "",
    project: str | Path | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """End a deployment by moving the project's alias to its candidate (A/B: ``version``)."""
    with _project(project) as proj:
        return _rollouts(proj, actor).promote(ref, version=version, reason=reason).to_json()


def abort_deployment(
    ref: str, *, reason: str = "", project: str | Path | None = None, actor: str | None = None
) -> dict[str, Any]:
    """End a deployment; its traffic returns to the primary and no alias moves."""
    with _project(project) as proj:
        return _rollouts(proj, actor).abort(ref, reason=reason).to_json()


def _rollouts(proj: Any, actor: str | None) -> Rollouts:
    from keel.registry.rollout import Rollouts

    config = proj.config.registry
    return Rollouts(proj.metadata.database, config, actor=actor, alias=config.alias)
