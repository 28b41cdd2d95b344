"""The registry over REST: ``/v1/registry/...``, the same operations as ``keel models`` and
``keel audit``, behind the server's middleware.

Reading needs the ``read`` scope; every change (promote, rollback, approve, reject, archive,
restore, delete) needs ``admin``, and needs a token even where the server runs without auth
(loopback): a state change always has an accountable actor, recorded in the audit log as
``token:NAME``. The handlers are plain functions, so FastAPI runs them in its thread pool and
the database never blocks the event loop; a refused change answers with the registry's own
error (404 unknown, 409 conflict, 400 bad input), never a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from keel.registry.records import PromotionRequest
from keel.registry.registry import UNSET, Registry

__all__ = ["registry_router"]

_MAX_VERSION = 2**31 - 1  # what every database's INTEGER holds
Version = Annotated[int, Path(ge=1, le=_MAX_VERSION, description="The version number.")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromoteBody(_Body):
    """Move an alias to a version (or open a request when the alias needs approvals)."""

    version: int = Field(
        ge=1, le=_MAX_VERSION, description="The version the alias should point to."
    )
    reason: str = Field("", max_length=2000, description="Why, for the audit log.")
    expected_version: int | None = Field(
        None,
        ge=1,
        le=_MAX_VERSION,
        description="The version you believe holds the alias now (null: unset); refused with "
        "409 if it moved. Omit it to compare with the holder read just before the move.",
    )


class RollbackBody(_Body):
    """Move an alias back to its previous holder, or to an earlier one."""

    to: int | None = Field(
        None, ge=1, le=_MAX_VERSION, description="An earlier holder (default: the one before)."
    )
    reason: str = Field("", max_length=2000)


class DecisionBody(_Body):
    """Approve or reject a pending promotion."""

    comment: str = Field("", max_length=2000)


class ReasonBody(_Body):
    """Why, for the audit log."""

    reason: str = Field("", max_length=2000)


def registry_router(project: Any) -> APIRouter:
    """The ``/v1/registry`` routes over ``project``'s metadata database."""
    router = APIRouter(prefix="/v1/registry", tags=["registry"])
    database = project.metadata.database
    config = project.config.registry

    def registry(request: Request) -> Registry:
        token = request.scope.get("keel.token")
        actor = f"token:{token.name}" if token is not None else None
        return Registry(database, config, actor=actor)

    @router.get("/models", summary="Registered models, their latest version and aliases")
    def list_models(request: Request) -> dict[str, Any]:
        return {"models": [m.to_json() for m in registry(request).models()]}

    @router.get("/models/{name}", summary="A model's versions (archived ones included)")
    def show_model(request: Request, name: str) -> dict[str, Any]:
        versions = registry(request).versions(name)
        return {"name": name, "versions": [v.to_json() for v in versions]}

    @router.get("/models/{name}/versions/{version}", summary="One version")
    def show_version(request: Request, name: str, version: Version) -> dict[str, Any]:
        return registry(request).show(name, version).to_json()

    @router.get("/models/{name}/aliases/{alias}", summary="The version an alias points to")
    def resolve_alias(request: Request, name: str, alias: str) -> dict[str, Any]:
        return registry(request).resolve(f"{name}@{alias}").to_json()

    @router.get("/models/{name}/history", summary="Alias moves, newest first")
    def history(
        request: Request,
        name: str,
        alias: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any]:
        moves = registry(request).alias_history(name, alias, limit)
        return {"moves": [m.to_json() for m in moves]}

    @router.get("/requests", summary="Promotion requests, newest first")
    def requests(
        request: Request,
        pending: bool = False,
        model: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any]:
        found = registry(request).requests(pending=pending, name=model, limit=limit)
        return {"requests": [r.to_json() for r in found]}

    @router.get("/audit", summary="The audit log, newest first, filtered")
    def audit(
        request: Request,
        target: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any]:
        found = registry(request).audit(
            target=target, actor=actor, action=action, since=since, limit=limit
        )
        return {"entries": [e.to_json() for e in found]}

    @router.post(
        "/models/{name}/aliases/{alias}",
        summary="Promote: move an alias (202 and a pending request when it needs approvals)",
    )
    def promote(request: Request, name: str, alias: str, body: PromoteBody) -> JSONResponse:
        expected: int | object | None = UNSET
        if "expected_version" in body.model_fields_set:
            expected = body.expected_version
        outcome = registry(request).promote(
            name, body.version, alias=alias, reason=body.reason, expected=expected
        )
        if isinstance(outcome, PromotionRequest):
            return JSONResponse({"status": "pending", "request": outcome.to_json()}, 202)
        return JSONResponse({"status": "moved", "move": outcome.to_json()})

    @router.post("/models/{name}/aliases/{alias}/rollback", summary="Roll an alias back")
    def rollback(request: Request, name: str, alias: str, body: RollbackBody) -> dict[str, Any]:
        moved = registry(request).rollback(name, alias=alias, to=body.to, reason=body.reason)
        return {"status": "moved", "move": moved.to_json()}

    @router.post("/requests/{request_id}/approve", summary="Approve a pending promotion")
    def approve(request: Request, request_id: str, body: DecisionBody) -> dict[str, Any]:
        return registry(request).approve(request_id, comment=body.comment).to_json()

    @router.post("/requests/{request_id}/reject", summary="Reject a pending promotion")
    def reject(request: Request, request_id: str, body: DecisionBody) -> dict[str, Any]:
        return registry(request).reject(request_id, comment=body.comment).to_json()

    @router.post("/models/{name}/versions/{version}/archive", summary="Archive a version")
    def archive(request: Request, name: str, version: Version, body: ReasonBody) -> dict[str, Any]:
        return registry(request).archive(name, version, reason=body.reason).to_json()

    @router.post("/models/{name}/versions/{version}/restore", summary="Restore a version")
    def restore(request: Request, name: str, version: Version, body: ReasonBody) -> dict[str, Any]:
        return registry(request).restore(name, version, reason=body.reason).to_json()

    @router.delete("/models/{name}/versions/{version}", summary="Delete an unaliased version")
    def delete(request: Request, name: str, version: Version, reason: str = "") -> dict[str, Any]:
        return registry(request).delete(name, version, reason=reason).to_json()

    return router
