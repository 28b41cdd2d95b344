"""The server's control plane: the FastAPI app that answers every route the fast router
(:mod:`keel.serve.app`) does not — health, Open Inference Protocol metadata and readiness,
``/metrics``, ``/docs``, the registry, deployment and feedback routes — and the OpenAPI document
that describes them all, the fast routes included."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keel.errors import KeelError
from keel.serve import oip
from keel.serve.openapi import DOCS_HTML, add_fast_routes
from keel.version import __version__

if TYPE_CHECKING:
    from keel.serve.app import ServerApp

__all__ = ["build_api"]


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
        return oip.model_metadata(name, model.version, model.package)

    @api.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        model = self.model(name, version)
        return oip.model_metadata(name, model.version, model.package)

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
