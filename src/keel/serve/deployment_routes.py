"""Deployments over REST: ``/v1/deployments``, the same operations as ``keel deploy`` and
``keel deployments``, behind the server's middleware.

Reading needs the ``read`` scope; creating, promoting and aborting need ``admin`` (and a token
even where the server runs without auth), and the audit log records the actor as
``token:NAME``. The handlers are plain functions (FastAPI runs them in its thread pool, so the
database never blocks the event loop); a refused change answers with the controller's own error
(404 unknown, 409 a second active deployment, 400 a bad check clause), never a 500; a body
that does not fit (an unknown kind or field, a field the kind does not take: a shadow's
``steps``) is a 422 in Keel's error shape, naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from keel.errors import ConfigError, DataValidationError
from keel.registry.deployments import (
    parse_ab,
    parse_checks,
    parse_interval,
    parse_steps,
    refuse_unused,
)
from keel.registry.rollout import Rollouts

__all__ = ["deployment_router"]

_MAX_VERSION = 2**31 - 1


class ArmBody(BaseModel):
    """One arm of an A/B deployment: a version and its traffic weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=_MAX_VERSION, description="The arm's version.")
    weight: float = Field(gt=0, le=1e9, allow_inf_nan=False, description="Its traffic weight.")


class CreateBody(BaseModel):
    """A new deployment of a model name: canary, shadow or A/B."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, description="The model's name.")
    kind: Literal["canary", "shadow", "ab"]
    version: int | None = Field(
        None, ge=1, le=_MAX_VERSION, description="The canary or shadow version."
    )
    arms: Annotated[str, Field(max_length=1000)] | list[ArmBody] | None = Field(
        None,
        max_length=100,
        description=(
            "A/B arms: 'VERSION:WEIGHT,...' (e.g. '3:50,4:50') or a list of "
            '{"version": 3, "weight": 50} objects.'
        ),
    )
    steps: str = Field("5,25,50,100", max_length=200, description="Canary traffic steps (%).")
    interval: str = Field("5m", max_length=20, description="Canary interval, e.g. 30s, 5m.")
    check: str = Field(
        "error_rate<=0.01", max_length=1000, description="e.g. 'error_rate<=0.01,p99_ms<=50'."
    )
    failures: int = Field(2, ge=1, le=1000, description="Bad intervals in a row to roll back.")
    min_requests: int = Field(20, ge=0, le=10**9, description="Requests an interval needs.")
    sticky_key: str | None = Field(None, max_length=200, description="Request field to stick by.")
    reason: str = Field("", max_length=2000)


class PromoteBody(BaseModel):
    """End a deployment by promoting its candidate (an A/B test: the winning version)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int | None = Field(None, ge=1, le=_MAX_VERSION)
    reason: str = Field("", max_length=2000)


class AbortBody(BaseModel):
    """End a deployment without moving any alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field("", max_length=2000)


def deployment_router(project: Any) -> APIRouter:
    """The ``/v1/deployments`` routes over ``project``'s metadata database."""
    router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
    database = project.metadata.database
    config = project.config.registry

    def rollouts(request: Request) -> Rollouts:
        token = request.scope.get("keel.token")
        actor = f"token:{token.name}" if token is not None else None
        return Rollouts(database, config, actor=actor, alias=config.alias)

    @router.get("", summary="Deployments, newest first")
    def list_deployments(
        request: Request,
        name: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any]:
        found = rollouts(request).listed(name=name, limit=limit)
        return {"deployments": [d.to_json() for d in found]}

    @router.get("/{ref}", summary="A deployment's arms, traffic, latency, errors and history")
    def status(request: Request, ref: str) -> dict[str, Any]:
        from keel.monitor.arms import with_feedback
        from keel.registry.deployments import with_coverage

        shown = with_coverage(database, rollouts(request).status(ref))  # a shadow's copies
        return with_feedback(project, shown)

    @router.post("", summary="Start a canary, shadow or A/B deployment")
    def create(request: Request, body: CreateBody) -> dict[str, Any]:
        _refuse_unused(body)
        controller = rollouts(request)
        if body.kind == "ab":
            if not body.arms:
                raise ConfigError("an A/B deployment needs arms, e.g. '3:50,4:50'.", field="arms")
            made = controller.ab(
                body.name, _arms(body.arms), sticky_key=body.sticky_key, reason=body.reason
            )
            return made.to_json()
        if body.version is None:
            raise ConfigError(f"a {body.kind} deployment needs a version.", field="version")
        if body.kind == "shadow":
            return controller.shadow(body.name, body.version, reason=body.reason).to_json()
        made = controller.canary(
            body.name,
            body.version,
            steps=parse_steps(body.steps),
            interval_s=parse_interval(body.interval),
            checks=parse_checks(body.check),
            failures=body.failures,
            min_requests=body.min_requests,
            sticky_key=body.sticky_key,
            reason=body.reason,
        )
        return made.to_json()

    @router.post("/{ref}/promote", summary="Promote the deployment's candidate (moves the alias)")
    def promote(request: Request, ref: str, body: PromoteBody) -> dict[str, Any]:
        done = rollouts(request).promote(ref, version=body.version, reason=body.reason)
        return done.to_json()

    @router.post("/{ref}/abort", summary="Abort: traffic returns to the primary")
    def abort(request: Request, ref: str, body: AbortBody) -> dict[str, Any]:
        return rollouts(request).abort(ref, reason=body.reason).to_json()

    return router


def _refuse_unused(body: CreateBody) -> None:
    """Fields sent that ``body.kind`` would ignore, refused (422) rather than dropped: a
    canary's steps and checks (the CLI's rule, :func:`refuse_unused`), a version for an A/B
    test (its arms name the versions) and arms for a canary or shadow."""
    sent = body.model_fields_set
    try:
        given = [f for f in type(body).model_fields if f in sent and getattr(body, f) is not None]
        refuse_unused(body.kind, given, instead='send "kind": "canary"')
    except ConfigError as exc:
        raise DataValidationError(exc.message, field=exc.field, details=exc.details) from None
    wrong = "version" if body.kind == "ab" else "arms"
    if wrong in sent and getattr(body, wrong) is not None:
        kind = "an A/B" if body.kind == "ab" else f"a {body.kind}"
        use = "arms name its versions" if body.kind == "ab" else "send version instead"
        msg = f"{wrong} does not apply to {kind} deployment ({use}): drop it."
        raise DataValidationError(msg, field=wrong, details={"unused": [wrong]})


def _arms(arms: str | list[ArmBody]) -> tuple[tuple[int, float], ...]:
    """The arms as (version, weight) pairs, checked as ``keel deploy --ab`` checks them (a
    refusal names the field ``arms``)."""
    text = arms if isinstance(arms, str) else ",".join(f"{a.version}:{a.weight!r}" for a in arms)
    return parse_ab(text)
