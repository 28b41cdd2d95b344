"""The server's control plane: the FastAPI app that answers every route the fast router
(:mod:`keel.serve.app`) does not — health, Open Inference Protocol metadata and readiness,
``/metrics``, ``/docs``, the registry, deployment and feedback routes — and the OpenAPI document
that describes them all, the fast routes included."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.routing import Match

from keel.errors import DataValidationError, KeelError, NotFoundError
from keel.serve import oip
from keel.serve.openapi import DOCS_HTML, add_fast_routes
from keel.version import __version__

if TYPE_CHECKING:
    from keel.serve.app import ServerApp

__all__ = ["MethodNotAllowed", "build_api", "refused_body"]

_MAX_SHOWN = 60  # characters of a refused value quoted back
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_SHOWN_ERRORS = 3
_EXPECTED = {  # pydantic's error types, as what the field must be
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}  # problems spelt out in the message (every one is in details)
# pydantic names a union's members in an error's location: ``str``, ``constrained-str``,
# ``list[ArmBody]``; a path shows the fields only
_UNION_TAG = re.compile(r"^(str|int|float|bool|(constrained|function)-\w+|\w+\[.*\]|[A-Z]\w*)$")


class MethodNotAllowed(KeelError):
    """The path exists, but not for this HTTP method."""

    http_status: ClassVar[int] = 405


def build_api(self: ServerApp) -> FastAPI:
    """The FastAPI app behind the fast routes: health, OIP metadata and readiness, metrics, docs,
    and (with a project) the registry, deployment and feedback routes, with the OpenAPI document
    that also describes the fast routes."""
    api = FastAPI(
        title="Keel model server",
        version=__version__,
        lifespan=self.lifespan,
        docs_url=None,
        redoc_url=None,
    )
    docs = resources.files("keel.serve").joinpath("static", DOCS_HTML).read_text()

    @api.exception_handler(KeelError)
    async def keel_error(request: Any, exc: KeelError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    # FastAPI's own refusals answer {"detail": ...}; Keel's shape says what, where, what to do
    @api.exception_handler(RequestValidationError)
    async def bad_request(request: Any, exc: RequestValidationError) -> JSONResponse:
        error = refused_body(exc.errors(), _body_model(request))
        return JSONResponse(error.to_dict(), status_code=error.http_status)

    @api.exception_handler(HTTPException)
    async def http_error(request: Any, exc: HTTPException) -> JSONResponse:
        error = _http_error(request, exc, api.routes)
        if isinstance(error, MethodNotAllowed) and exc.status_code == 404:  # a fast route
            return JSONResponse(error.to_dict(), status_code=405, headers={"allow": "POST"})
        return JSONResponse(error.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @api.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok, reasons = self.readiness()
        status = "degraded" if ok and reasons else ("ready" if ok else "not ready")
        body = {"ready": ok, "status": status, "reasons": reasons}
        return JSONResponse(body, status_code=200 if ok else 503)

    @api.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "keel", "version": __version__, "extensions": []}

    @api.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        model = self.model(name)
        return oip.model_metadata(name, model.version, model.package, model.fills)

    @api.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        model = self.model(name, version)
        return oip.model_metadata(name, model.version, model.package, model.fills)

    @api.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> dict[str, Any]:
        model = self.model(name)
        return {"name": name, "version": model.version, "ready": True}

    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str) -> dict[str, Any]:
        self.model(name, version)
        return {"name": name, "version": version, "ready": True}

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(docs)

    if self.project is not None:
        from keel.serve.registry_routes import registry_router

        api.include_router(registry_router(self.project))
        from keel.serve.deployment_routes import deployment_router

        api.include_router(deployment_router(self.project))
        from keel.serve.feedback_routes import feedback_router

        api.include_router(
            feedback_router(self.project, self.feedback, lambda: self.models, self.settings.limits)
        )

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(title=api.title, version=api.version, routes=api.routes)
            document.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            api.openapi_schema = add_fast_routes(document)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def refused_body(errors: Sequence[Mapping[str, Any]], model: Any = None) -> DataValidationError:
    """A request FastAPI refused (pydantic's ``errors``) as a Keel error: what is wrong, in
    which field, what the field takes (its description in ``model``), and where the schema is.
    Every problem is listed under ``details["errors"]``; the message spells out the first few.
    """
    problems = _problems(errors)
    fields = dict(getattr(model, "model_fields", {}) or {})
    said = [_said(problem, fields) for problem in problems[:_SHOWN_ERRORS]]
    more = len(problems) - len(said)
    msg = "; ".join(said) + (f"; and {more} more" if more > 0 else "")
    msg += ". The request body's schema: GET /openapi.json (or /docs)."
    listed = [
        {"field": path, "type": problem["type"], "message": problem["msg"]}
        for path, problem in ((_path(p["loc"]), p) for p in problems)
    ]
    first = (_path(problems[0]["loc"]) or None) if problems else None
    return DataValidationError(msg, field=first, details={"errors": listed})


def _problems(errors: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The errors, without the 'not a string' of a union whose other member was tried
    (``arms`` is a string or a list: a bad list is a bad list, not a missing string)."""
    fields = [re.split(r"[.\[]", _path(e["loc"]))[0] for e in errors]
    return [
        e
        for e, f in zip(errors, fields, strict=True)
        if not (e["type"] == "string_type" and fields.count(f) > 1)
    ]


def _path(loc: Sequence[Any]) -> str:
    """``("body", "arms", "list[ArmBody]", 0, "version")`` -> ``arms[0].version``."""
    if len(loc) == 2 and loc[0] == "body" and isinstance(loc[1], int):
        return ""  # bad JSON: where in the text it broke, not a field
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _UNION_TAG.match(part):
            path += f".{part}" if path else part
    return path


def _said(problem: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
    path, kind = _path(problem["loc"]), problem["type"]
    got = repr(problem.get("input"))
    got = got if len(got) <= _MAX_SHOWN else got[: _MAX_SHOWN - 3] + "..."
    if kind == "json_invalid":
        return f"the body is not valid JSON ({problem.get('ctx', {}).get('error', 'bad JSON')})"
    if not path:
        return f"the body must be a JSON object; got {got}"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(path, list(fields), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = f"; the fields are {', '.join(fields)}" if fields else ""
        return f"unknown field {path!r}{hint}{known}"
    if kind == "missing":
        return f"{path} is required"
    if kind == "literal_error":
        return f"{path} must be {problem['ctx']['expected']}; got {got}"
    field = re.split(r"[.\[]", path)[0]
    described = getattr(fields.get(field), "description", None)
    # a value of the wrong shape: what the field takes, from its description
    what = f" ({field}: {described.rstrip('.')})" if described and kind.endswith("_type") else ""
    expected = _EXPECTED.get(kind)
    if kind == "list_type" and len(problem["loc"]) > 2 and _UNION_TAG.match(problem["loc"][-1]):
        expected = "a string or a list"  # (the union's "not a string" was dropped)
    if expected is not None:
        return f"{path} must be {expected}; got {got}{what}"
    return f"{path}: {problem['msg'][0].lower()}{problem['msg'][1:]}; got {got}{what}"


def _body_model(request: Any) -> Any:
    """The pydantic model of the route's body (for field names and descriptions), if any."""
    field = getattr(request.scope.get("route"), "body_field", None)
    return getattr(getattr(field, "field_info", None), "annotation", None)


def _http_error(request: Any, exc: HTTPException, routes: Sequence[Any]) -> KeelError:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404 and _posted(request.url.path):
        return MethodNotAllowed(f"{where} is not allowed: use POST.", field="method")
    if exc.status_code == 404:
        msg = f"no route {where}: the routes are listed at GET /openapi.json (or /docs)."
        return NotFoundError(msg, field="path")
    if exc.status_code == 405:
        allowed = [  # Starlette's Allow header names the first matching route's methods only
            method
            for method in _METHODS
            if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
        ]
        takes = f"; it takes {', '.join(allowed)}" if allowed else ""
        return MethodNotAllowed(f"{where} is not allowed{takes}.", field="method")
    return KeelError(f"{where}: {exc.detail}")  # answered with the exception's own status


def _posted(path: str) -> bool:
    """Whether ``path`` is a fast route's (predict, explain, infer, features): POST alone,
    answered before this app (keel.serve.middleware.classify sends other methods here)."""
    if path.startswith("/v1/models/"):
        return path.endswith(("/predict", "/explain"))
    return path == "/v1/features" or (path.startswith("/v2/models/") and path.endswith("/infer"))
