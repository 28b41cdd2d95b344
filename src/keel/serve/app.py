"""The online server: simple JSON predict, Open Inference Protocol health and metadata, metrics.

``POST /v1/models/{name}/predict`` is answered by a bare ASGI handler in front of the FastAPI
app: JSON parsed with orjson, each instance checked against the model's signature and turned
into features by the same :class:`~keel.features.FeaturePipeline` code that training ran, one
``Booster.predict`` on a NumPy matrix. No DataFrame and no framework routing on that path;
everything else (health, metadata, ``/metrics``, OpenAPI docs) goes through FastAPI.

``POST /v1/features`` answers online feature lookups (``{"features": ["view:feature"],
"entities": [{key: value}]}``) from the online store on the same bare path. A model trained with
feature views (``features.views``; its lineage names them) takes requests that carry only entity
keys: the missing view features are filled from the online store before the pipeline runs.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
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

from keel.errors import ConfigError, DataValidationError, KeelError, NotFoundError
from keel.features.custom import importable_from
from keel.registry.package import ModelPackage
from keel.serve.predlog import PredictionLog
from keel.validate.coerce import Finding
from keel.version import __version__

__all__ = ["LoadedModel", "ServerApp", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_INSTANCES = 10_000
MAX_WARNINGS = 100  # per answer: a hostile request cannot grow the answer past this
_JSON = [(b"content-type", b"application/json")]
_PREFIX, _SUFFIX = "/v1/models/", "/predict"
_FEATURES = "/v1/features"
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
        feature_store: The project's feature store, for ``/v1/features`` and entity-only
            requests; None when the project declares no feature views.
        fills: Model name -> the feature views it was trained with
            (:func:`keel.features.store.training_views`), for entity-only requests.
    """

    def __init__(
        self,
        models: dict[str, LoadedModel],
        *,
        prediction_log: PredictionLog | None,
        feature_store: Any = None,
        fills: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.models = models
        self.log = prediction_log
        self.feature_store = feature_store
        self.fills = fills or {}
        # per model: entity keys of its views that are not model inputs (dropped after lookup)
        self._key_only: dict[str, list[str]] = {}
        for name, used in self.fills.items():
            inputs = {i["name"] for i in models[name].package.signature["inputs"]}
            keys = {k for spec in used["views"].values() for k in spec["entities"]}
            self._key_only[name] = sorted(keys - inputs)
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
            if path == _FEATURES:
                await self._features(receive, send)
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
        if name in self.fills:
            status, payload = self._filled(name, body)
        else:
            status, payload = self._answer(name, body)
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": payload})
        self._predict_latency.observe(time.perf_counter() - started)
        self.requests.labels("predict", str(status)).inc()

    def _filled(self, name: str, body: bytes) -> tuple[int, bytes]:
        """Fill the view features an instance lacks from the online store, then answer."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._answer(name, body)  # which explains the bad JSON
        instances = request.get("instances") if isinstance(request, dict) else None
        if isinstance(instances, list) and 0 < len(instances) <= MAX_INSTANCES:
            try:
                self._fill(self.fills[name], instances, self._key_only.get(name, ()))
            except KeelError as exc:
                return exc.http_status, orjson.dumps(exc.to_dict())
            body = orjson.dumps(request)
        return self._answer(name, body)

    def _fill(self, used: dict[str, Any], instances: list[Any], key_only: Sequence[str]) -> None:
        if self.feature_store is None:
            raise NotFoundError(
                "this model was trained with feature views but the project declares none; "
                "restore its feature_views: in keel.yaml.",
                field="features",
            )
        for view, spec in used["views"].items():
            names = spec["features"]
            lacking = [
                row
                for row in instances
                if isinstance(row, dict) and any(f not in row for f in names)
            ]
            if not lacking:
                continue
            try:
                found = self.feature_store.online(lacking, [f"{view}:{f}" for f in names])
            except ConfigError as exc:
                raise DataValidationError(exc.message, field=exc.field) from exc
            for row, values in zip(lacking, found, strict=True):
                for feature in names:
                    row.setdefault(feature, values[feature])
        for row in instances:  # entity keys that only served the lookup
            if isinstance(row, dict):
                for key in key_only:
                    row.pop(key, None)

    async def _features(self, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            status, payload = 200, orjson.dumps({"results": self._lookup(body)})
        except KeelError as exc:
            status, payload = exc.http_status, orjson.dumps(exc.to_dict())
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": payload})
        self.latency.labels("features").observe(time.perf_counter() - started)
        self.requests.labels("features", str(status)).inc()

    def _lookup(self, body: bytes) -> list[dict[str, Any]]:
        """``{"features": [...], "entities": [...]}`` -> one dict of values per entity."""
        if self.feature_store is None:
            raise NotFoundError("this project declares no feature views.", field="features")
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DataValidationError(
                f'request body is not valid JSON ({exc}). Send {{"features": ["view:feature"], '
                '"entities": [{"key": value}]}.',
                field="body",
            ) from exc
        features = request.get("features") if isinstance(request, dict) else None
        entities = request.get("entities") if isinstance(request, dict) else None
        if not isinstance(features, list) or not features:
            raise DataValidationError(
                'request needs "features": a non-empty list of "view:feature".', field="features"
            )
        if not isinstance(entities, list) or not entities or len(entities) > MAX_INSTANCES:
            raise DataValidationError(
                f'request needs "entities": a list of 1 to {MAX_INSTANCES} objects of entity keys.',
                field="entities",
            )
        try:
            return list(self.feature_store.online(entities, features))
        except ConfigError as exc:
            raise DataValidationError(exc.message, field=exc.field) from exc

    def _answer(self, name: str, body: bytes) -> tuple[int, bytes]:
        try:
            model = self.models.get(name)
            if model is None:
                known = ", ".join(sorted(self.models)) or "none"
                raise NotFoundError(
                    f"model '{name}' is not served here. Served models: {known}.", field="name"
                )
            instances = self._instances(body)
            findings: list[Finding] = []
            labels, probabilities = model.package.predict_rows(instances, findings=findings)
        except KeelError as exc:
            return exc.http_status, orjson.dumps(exc.to_dict())
        request_id = uuid.uuid4().hex
        if self.log is not None:
            self.log.append(request_id, name, model.version, instances, labels, probabilities)
        self.predictions.labels(name, model.version).inc(len(labels))
        answer: dict[str, Any] = {"predictions": labels}
        if probabilities is not None:  # classification; a regression answer is values only
            answer["probabilities"] = probabilities
        answer["model_version"] = model.version
        answer["request_id"] = request_id
        if findings:  # values scored with a warning: out of range, or unseen in training
            answer["warnings"] = [finding.to_dict() for finding in findings[:MAX_WARNINGS]]
        return 200, orjson.dumps(answer)

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
            gc.unfreeze()  # let shutdown collect them (extension types report frozen ones as leaks)
            if self.log is not None:
                self.log.close()
            if self.feature_store is not None:
                self.feature_store.close()

        api = FastAPI(title="Keel model server", version=__version__, lifespan=lifespan)

        @api.exception_handler(KeelError)
        async def keel_error(request: Any, exc: KeelError) -> JSONResponse:
            return JSONResponse(exc.to_dict(), status_code=exc.http_status)

        @api.get("/v2/health/live")
        async def live() -> dict[str, bool]:
            return {"live": True}

        @api.get("/v2/health/ready")
        async def ready() -> JSONResponse:
            ok = bool(self.models) or self.feature_store is not None
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
                "platform": f"keel-{model.package.flavor}",
                "task": model.package.task,
                "inputs": [
                    {
                        "name": i["name"],
                        "datatype": _DATATYPES[i["type"]],
                        "shape": [-1],
                        "parameters": {"type": i["type"], "nullable": i["nullable"]},
                    }
                    for i in signature["inputs"]
                ],
                "outputs": _outputs(signature["outputs"]),
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
    if path in ("/metrics", "/v2", "/docs", "/openapi.json", _FEATURES):
        return path
    return "other"


_DATATYPES = {"int": "INT64", "float": "FP64", "string": "BYTES", "bool": "BOOL"}


def _outputs(outputs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open Inference Protocol output tensors of a signature's outputs (any task)."""
    tensors = []
    for output in outputs:
        if output["type"] == "float[]":  # one probability per class
            shape = [-1, len(output.get("classes", []))]
            tensors.append({"name": output["name"], "datatype": "FP64", "shape": shape})
        else:
            datatype = _DATATYPES.get(output["type"], "BYTES")
            tensors.append({"name": output["name"], "datatype": datatype, "shape": [-1]})
    return tensors


def create_app(
    project: Any, *, models: list[str] | None = None, log_predictions: bool | None = None
) -> ServerApp:
    """The server app for a project: loads each model's ``production`` version (else the latest).

    A project with feature views and no registered model serves ``/v1/features`` alone.

    Args:
        project: A :class:`keel.project.Project`.
        models: References to serve (``name``, ``name@alias``, ``name@3``); default all models.
        log_predictions: Override ``serve.log_predictions`` from keel.yaml.

    Raises:
        NotFoundError: A reference does not resolve, or the registry is empty.
    """
    refs = models or [m["name"] for m in project.metadata.list_models()]
    if not refs and not project.config.feature_views:
        raise NotFoundError("no registered models to serve. Run 'keel run' first.")
    from keel.features.store import FeatureStore, training_views

    loaded = {}
    fills = {}
    for ref in refs:
        version = project.metadata.resolve(ref)
        # custom feature modules kept in the project import from its root, wherever we run
        with importable_from(project.root):
            package = ModelPackage.load(project.artifacts, version.package_sha256)
        loaded[version.name] = LoadedModel(package, str(version.version))
        used = training_views(project, version.package_sha256)
        if used is not None:
            fills[version.name] = used
    enabled = project.config.serve.log_predictions if log_predictions is None else log_predictions
    log = PredictionLog(project.predictions_dir) if enabled else None
    store = FeatureStore(project) if project.config.feature_views else None
    return ServerApp(loaded, prediction_log=log, feature_store=store, fills=fills)
