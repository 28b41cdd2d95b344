"""The online server: simple JSON predict, Open Inference Protocol health and metadata, metrics.

``POST /v1/models/{name}/predict`` is answered by a bare ASGI handler in front of the FastAPI
app: JSON parsed with orjson, each instance checked against the model's signature and turned
into features by the same :class:`~keel.features.FeaturePipeline` code that training ran, one
``Booster.predict`` on a NumPy matrix. No DataFrame and no framework routing on that path;
everything else (health, metadata, ``/metrics``, OpenAPI docs) goes through FastAPI.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from keel import __version__
from keel.errors import DataValidationError, KeelError, NotFoundError
from keel.registry.package import ModelPackage
from keel.serve.predlog import PredictionLog

__all__ = ["LoadedModel", "ServerApp", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_INSTANCES = 10_000
_JSON = [(b"content-type", b"application/json")]
_PREFIX, _SUFFIX = "/v1/models/", "/predict"
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class LoadedModel:
    """A package ready to serve, with the registry version it came from."""

    package: ModelPackage
    version: str


class ServerApp:
    """The ASGI application ``keel serve`` runs.

    Args:
        models: Model name -> loaded package.
        prediction_log: Where served predictions go, or None to not log them.
    """

    def __init__(
        self, models: dict[str, LoadedModel], *, prediction_log: PredictionLog | None
    ) -> None:
        self.models = models
        self.log = prediction_log
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "keel_request_duration_seconds",
            "Request latency by route.",
            ["route"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.requests = Counter(
            "keel_requests",
            "Requests by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "keel_predictions",
            "Rows predicted by model and version.",
            ["model", "version"],
            registry=self.registry,
        )
        self._predict_latency = self.latency.labels("predict")
        self.api = self._build_api()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                await self._predict(path[len(_PREFIX) : -len(_SUFFIX)], receive, send)
                return
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        await self._measured(scope, receive, send)

    async def _measured(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a non-predict route through FastAPI, counting it in the metrics."""
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        route = _route_label(scope["path"])
        try:
            await self.api(scope, receive, send_status)
        finally:
            self.latency.labels(route).observe(time.perf_counter() - started)
            self.requests.labels(route, str(status)).inc()

    # --- the hot path ------------------------------------------------------------------------

    async def _predict(self, name: str, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload = self._answer(name, body)
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": payload})
        self._predict_latency.observe(time.perf_counter() - started)
        self.requests.labels("predict", str(status)).inc()

    def _answer(self, name: str, body: bytes) -> tuple[int, bytes]:
        try:
            model = self.models.get(name)
            if model is None:
                known = ", ".join(sorted(self.models)) or "none"
                raise NotFoundError(
                    f"model '{name}' is not served here. Served models: {known}.", field="name"
                )
            instances = self._instances(body)
            labels, probabilities = model.package.predict_rows(instances)
        except KeelError as exc:
            return exc.http_status, orjson.dumps(exc.to_dict())
        request_id = uuid.uuid4().hex
        if self.log is not None:
            self.log.append(request_id, name, model.version, instances, labels, probabilities)
        self.predictions.labels(name, model.version).inc(len(labels))
        return 200, orjson.dumps(
            {
                "predictions": labels,
                "probabilities": probabilities,
                "model_version": model.version,
                "request_id": request_id,
            }
        )

    @staticmethod
    def _instances(body: bytes) -> list[Any]:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DataValidationError(
                f"request body is not valid JSON ({exc}). Send "
                '{"instances": [{"field": value, ...}]}.',
                field="body",
            ) from exc
        instances = request.get("instances") if isinstance(request, dict) else None
        if not isinstance(instances, list) or not instances:
            raise DataValidationError(
                'request must be {"instances": [{...}, ...]} with at least one instance.',
                field="instances",
            )
        if len(instances) > MAX_INSTANCES:
            raise DataValidationError(
                f"at most {MAX_INSTANCES} instances per request; got "
                f"{len(instances)}. Use 'keel predict' for batch scoring.",
                field="instances",
            )
        return instances

    # --- everything else ---------------------------------------------------------------------

    def _build_api(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            if self.log is not None:
                self.log.start()
            # The loaded models are long-lived: keep them out of the collector's generations so
            # a full collection during traffic does not walk them (shorter latency tails).
            gc.collect()
            gc.freeze()
            yield
            if self.log is not None:
                self.log.close()

        api = FastAPI(title="Keel model server", version=__version__, lifespan=lifespan)

        @api.exception_handler(KeelError)
        async def keel_error(request: Any, exc: KeelError) -> JSONResponse:
            return JSONResponse(exc.to_dict(), status_code=exc.http_status)

        @api.get("/v2/health/live")
        async def live() -> dict[str, bool]:
            return {"live": True}

        @api.get("/v2/health/ready")
        async def ready() -> JSONResponse:
            ok = bool(self.models)
            return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

        @api.get("/v2")
        async def server_metadata() -> dict[str, Any]:
            return {"name": "keel", "version": __version__, "extensions": []}

        @api.get("/v2/models/{name}")
        async def model_metadata(name: str) -> dict[str, Any]:
            model = self._model(name)
            signature = model.package.signature
            return {
                "name": name,
                "versions": [model.version],
                "platform": "keel-lightgbm",
                "inputs": [
                    {
                        "name": i["name"],
                        "datatype": _DATATYPES[i["type"]],
                        "shape": [-1],
                        "parameters": {"type": i["type"], "nullable": i["nullable"]},
                    }
                    for i in signature["inputs"]
                ],
                "outputs": [
                    {"name": "prediction", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probability", "datatype": "FP64", "shape": [-1]},
                ],
                "classes": model.package.classes,
                "package_sha256": model.package.sha256,
            }

        @api.get("/v2/models/{name}/ready")
        async def model_ready(name: str) -> dict[str, Any]:
            self._model(name)
            return {"name": name, "ready": True}

        @api.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return api

    def _model(self, name: str) -> LoadedModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(
                f"model '{name}' is not served here. Served models: {known}.", field="name"
            )
        return model


def _route_label(path: str) -> str:
    """A bounded label for a path, so metrics cardinality does not grow with model names."""
    if path.startswith("/v2/health/"):
        return path
    if path.startswith("/v2/models/"):
        return "model_ready" if path.endswith("/ready") else "model_metadata"
    if path in ("/metrics", "/v2", "/docs", "/openapi.json"):
        return path
    return "other"


_DATATYPES = {"int": "INT64", "float": "FP64", "string": "BYTES", "bool": "BOOL"}


def create_app(
    project: Any, *, models: list[str] | None = None, log_predictions: bool | None = None
) -> ServerApp:
    """The server app for a project: loads each model's ``production`` version (else the latest).

    Args:
        project: A :class:`keel.project.Project`.
        models: References to serve (``name``, ``name@alias``, ``name@3``); default all models.
        log_predictions: Override ``serve.log_predictions`` from keel.yaml.

    Raises:
        NotFoundError: A reference does not resolve, or the registry is empty.
    """
    refs = models or [m["name"] for m in project.metadata.list_models()]
    if not refs:
        raise NotFoundError("no registered models to serve. Run 'keel run' first.")
    loaded = {}
    for ref in refs:
        version = project.metadata.resolve(ref)
        package = ModelPackage.load(project.artifacts, version.package_sha256)
        loaded[version.name] = LoadedModel(package, str(version.version))
    enabled = project.config.serve.log_predictions if log_predictions is None else log_predictions
    log = PredictionLog(project.predictions_dir) if enabled else None
    return ServerApp(loaded, prediction_log=log)
