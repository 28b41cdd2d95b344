"""The online server: one ASGI application, every route behind the same middleware.

Routes: the simple JSON API (``POST /v1/models/{name}/predict``), Open Inference Protocol v2
(``POST /v2/models/{name}[/versions/{v}]/infer``, server and model metadata and readiness,
``/v2/health/live|ready``), online features (``POST /v1/features``), ``/metrics``,
``/openapi.json`` and ``/docs`` (served from the package, no CDN).

Every request passes :class:`~keel.serve.middleware.Observe` (request id, errors, metrics,
access log) and :class:`~keel.serve.middleware.Guard` (token and scope, JSON content type).
Predict, infer and features are then answered by this module's router: the body is read under
the limits (:mod:`keel.serve.limits`), and parsing, coercion, the feature pipeline and the
model run in a small pool of worker threads (``serve.threads``, each pinned to one OpenMP
thread), never on the event loop. When the queue ahead of a prediction would already break
``serve.slo_p99_ms`` the request is shed with 503 and ``Retry-After``. Everything else goes to
a FastAPI app (metadata, health, metrics, docs).

The model table is replaced, never mutated: the :class:`~keel.serve.reload.Reloader` follows
each served reference in the registry and swaps a moved alias in with one assignment. Every
prediction answer names its ``model_version`` and ``request_id`` (also the ``Keel-Model-Version``
and ``Keel-Request-Id`` headers).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from fastapi import FastAPI

from keel.errors import DataValidationError, KeelError, NotFoundError
from keel.evaluate.explain import explain_rows
from keel.serve import oip, routing
from keel.serve.auth import Authenticator
from keel.serve.batching import Batcher, BatchPolicy, CostModel, Hooks, Job, score_batch
from keel.serve.control import build_api
from keel.serve.features import fill_views, lookup
from keel.serve.limits import Limits, Overloaded, parse_json, read_body
from keel.serve.metrics import Metrics
from keel.serve.middleware import Guard, Observe, Receive, Route, Scope, Send
from keel.serve.models import LoadedModel, pin_threads, warm
from keel.serve.operations import Operations
from keel.serve.predlog import PredictionLog, pii_policy
from keel.serve.reload import Reloader
from keel.serve.workers import Workers
from keel.validate.coerce import Finding

__all__ = ["LoadedModel", "ServeSettings", "ServerApp", "create_app"]

MAX_WARNINGS = 100  # per answer: a hostile request cannot grow the answer past this
_JSON = (b"content-type", b"application/json")
_PREDICT_EXAMPLE = '{"instances": [{"field": value, ...}]}'


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs (``serve:`` in keel.yaml)."""

    limits: Limits = field(default_factory=Limits)
    threads: int = 1
    slo_p99_ms: float = 100.0
    reload_interval_s: float | None = 1.0  # None: do not follow the registry
    batching: BatchPolicy = field(default_factory=BatchPolicy)


class ServerApp:
    """The ASGI application ``keel serve`` runs.

    Args:
        models: Model name -> loaded package.
        prediction_log: Where served predictions go, or None to not log them.
        feature_store: The project's feature store, for ``/v1/features`` and entity-only
            requests; None when the project declares no feature views.
        settings: Limits, threads, latency objective, reload interval.
        auth: Checks tokens, or None when auth is off.
        project: The project whose registry the server follows (hot reload); None: no reload.
    """

    def __init__(
        self,
        models: dict[str, LoadedModel],
        *,
        prediction_log: PredictionLog | None,
        feature_store: Any = None,
        settings: ServeSettings | None = None,
        auth: Authenticator | None = None,
        project: Any = None,
    ) -> None:
        self.models: Mapping[str, LoadedModel] = models
        self.log = prediction_log
        self.feature_store = feature_store
        self.settings = settings or ServeSettings()
        self.auth = auth
        self.metrics = Metrics()
        self.reloader: Reloader | None = None
        # deployments (canary, shadow, A/B): name -> route, replaced whole by the deployer
        self.routes: Mapping[str, routing.Route] = {}
        self.traffic = routing.Traffic()
        # every served model's requests, errors, latency and log drops (keel monitor)
        self.operations = Operations(
            None if project is None else project.metadata.database,
            self.traffic,
            lambda: list(self.models),
            retention_days=30 if project is None else project.config.monitor.stats_retention_days,
        )
        self.shadows = routing.Shadows(
            self._shadow_score, self.traffic, self._shadow_log if self.log is not None else None
        )
        self.deployer: routing.Deployer | None = None
        if project is not None and self.settings.reload_interval_s is not None:
            self.deployer = routing.Deployer(
                project,
                lambda: self.models,
                self._route_by,
                self.traffic,
                interval=self.settings.reload_interval_s,
            )
            self.reloader = Reloader(
                project,
                lambda: self.models,
                self._swap,
                interval=self.settings.reload_interval_s,
                after=self.deployer.step,
            )
            self.metrics.export(
                "keel_shadow_dropped",
                "Shadow copies dropped because the shadow queue was full.",
                lambda: float(self.shadows.dropped),
            )
            self.metrics.export(
                "keel_model_swaps",
                "Models swapped in by hot reload.",
                lambda: float(self.reloader.swaps if self.reloader else 0),
            )
        if self.log is not None:
            log = self.log
            self.metrics.export(
                "keel_prediction_log_dropped",
                "Requests the prediction log dropped (queue full or write failed).",
                lambda: float(log.dropped),
            )
        self._workers = Workers(self.settings.threads, initializer=lambda: pin_threads(1))
        self._batcher: Batcher | None = None  # serve.batching: off -> None
        if self.settings.batching.mode != "off":
            policy = self.settings.batching
            self._batcher = Batcher(self._workers, self._scored, policy, self.metrics.registry)
        self._inflight = 0
        self._seconds = 0.001  # moving average of one prediction's service time
        self.project = project
        # delayed labels: the request ids issued lately (POST /v1/models/{name}/feedback)
        key = () if project is None else tuple(project.config.monitor.feedback.key)
        # imported here: the label checks pull in SQLAlchemy and Arrow, which importing
        # keel.serve.app must not
        from keel.serve.feedback_routes import FeedbackState

        self.feedback = FeedbackState(key)
        self.api = build_api(self)
        self._stack = Observe(Guard(self._route, auth, _change_auth(project)), self.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._stack(scope, receive, send)

    def _swap(self, models: dict[str, LoadedModel]) -> None:
        self.models = models

    def _route_by(self, routes: dict[str, routing.Route]) -> None:
        self.routes = routes

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: Route | None = scope.get("keel.route")
        if route is None or not route.fast:
            await self.api(scope, receive, send)
            return
        body = await read_body(
            receive, scope["keel.headers"].get(b"content-length"), self.settings.limits
        )
        request_id: str = scope["keel.request_id"]
        if route.label == "features":
            status, payload, version = await self._run(self._lookup, body)
        else:
            name, pinned = _pinned(route.model, route.version)
            model = self.model(name, pinned)
            deployed = self.routes.get(name) if pinned is None else None
            if deployed is not None and route.label != "explain":  # a deployment picks the arm
                model = await self._arm(deployed, model, body)
            started, status = time.perf_counter(), 500
            try:
                if self._batcher is not None and _batchable(route.label, body):
                    job = Job(route.label, body, request_id)
                    submit = self._batcher.submit
                    answered = await self._run(submit, name, model, job, batched=True)
                    status, payload, version = answered
                else:
                    answer = self._infer if route.label == "infer" else self._predict
                    answer = self._explain if route.label == "explain" else answer
                    answered = await self._run(answer, name, model, body, request_id)
                    status, payload, version = answered
            finally:
                if route.label != "explain":  # counted under its deployment, else its model
                    seconds = time.perf_counter() - started
                    key = self.operations.key(name) if deployed is None else deployed.deployment
                    self.traffic.record(key, model.version, model.role, seconds,
                                        error=status >= 500)  # fmt: skip
            shadow = deployed.shadow if deployed is not None else None
            if shadow is not None and status == 200 and route.label in ("predict", "infer"):
                assert deployed is not None  # mirrored off the response path:
                self.shadows.submit(name, deployed.deployment, shadow, body, payload, request_id,
                                    route.label)  # fmt: skip
        headers = [_JSON, (b"content-length", str(len(payload)).encode())]
        if version:
            headers.append((b"keel-model-version", version.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _run(self, work: Any, *args: Any, batched: bool = False) -> tuple[int, bytes, str]:
        """Run ``work`` in a worker thread unless the queue would break the latency objective.

        ``batched``: ``work`` is the batcher's submit (awaited here; it hands a batch to a thread).
        """
        threads = self.settings.threads
        if self._inflight >= threads:
            wait_ms = (self._inflight / threads) * self._seconds * 1000.0
            if wait_ms > self.settings.slo_p99_ms:
                self.metrics.shed.inc()
                raise Overloaded(
                    f"the server is at capacity: {self._inflight} predictions queued would wait "
                    f"~{wait_ms:.0f} ms, past serve.slo_p99_ms={self.settings.slo_p99_ms:g}; "
                    "retry shortly or add capacity.",
                    retry_after=1,
                )
        self._inflight += 1
        self.metrics.inflight.inc()
        try:
            pending = work(*args) if batched else self._workers.run(work, *args)
            result: tuple[int, bytes, str] = await pending
            return result
        finally:
            self._inflight -= 1
            self.metrics.inflight.dec()

    async def _arm(self, deployed: routing.Route, primary: LoadedModel, body: bytes) -> LoadedModel:
        """The version that answers this request under its model's deployment."""
        key = None
        if deployed.sticky_key is not None:  # parsed in a worker thread, never on the loop
            key = await self._workers.run(self._sticky, deployed.sticky_key, body)
        arm = deployed.choose(key)
        return primary if arm is None or arm.model is None else arm.model

    # --- in a worker thread -------------------------------------------------------------------

    def _sticky(self, key: str, body: bytes) -> Any:
        try:
            request = parse_json(body, self.settings.limits, example=_PREDICT_EXAMPLE)
        except KeelError:
            return None  # the answer reports the bad request
        return routing.sticky_value(request, key)

    def _shadow_score(
        self, model: LoadedModel, instances: list[Any]
    ) -> tuple[list[Any], list[Any] | None]:
        if model.fills is not None:
            fill_views(self.feature_store, model.fills, instances, model.key_only)
        labels, probabilities = model.package.predict_rows(instances, findings=[])
        return labels, probabilities

    def _shadow_log(
        self,
        request_id: str,
        name: str,
        model: LoadedModel,
        instances: list[Any],
        labels: list[Any],
        probabilities: list[Any] | None,
    ) -> None:
        if self.log is None:
            return
        if not self.log.append(request_id, name, model.version, instances, labels, probabilities,
                               role="shadow", pipeline_hash=model.pipeline_hash):  # fmt: skip
            self.operations.dropped(name, model.version, "shadow")

    def _predict(
        self, name: str, model: LoadedModel, body: bytes, request_id: str
    ) -> tuple[int, bytes, str]:
        return self._scored((name, model), [Job("predict", body, request_id)])[0]

    def _explain(
        self, name: str, model: LoadedModel, body: bytes, request_id: str
    ) -> tuple[int, bytes, str]:
        try:
            request = parse_json(body, self.settings.limits, example=_PREDICT_EXAMPLE)
            instances = self._instances(request)
            if model.fills is not None:
                fill_views(self.feature_store, model.fills, instances, model.key_only)
            answer = explain_rows(model.package, instances).to_json()
        except KeelError as exc:
            return exc.http_status, orjson.dumps(exc.to_dict()), model.version
        answer.update(model_version=model.version, request_id=request_id)
        return 200, orjson.dumps(answer), model.version

    def _infer(
        self, name: str, model: LoadedModel, body: bytes, request_id: str
    ) -> tuple[int, bytes, str]:
        return self._scored((name, model), [Job("infer", body, request_id)])[0]

    def _scored(
        self,
        target: tuple[str, LoadedModel],
        jobs: list[Job],
        cost: CostModel | None = None,
        max_rows: int = 64,
    ) -> list[tuple[int, bytes, str]]:
        """Score predict/infer requests for one model version (unbatched: a batch of one)."""
        name, model = target
        started = time.perf_counter()
        hooks = Hooks(
            partial(self._parse, model), partial(self._answer, name, model), partial(_failed, model)
        )
        results: list[tuple[int, bytes, str]] = score_batch(
            model.package, jobs, hooks, cost, max_rows
        )
        elapsed = (time.perf_counter() - started) / len(jobs)  # per request, amortised
        self._seconds = 0.9 * self._seconds + 0.1 * elapsed
        return results

    def _parse(self, model: LoadedModel, job: Job) -> tuple[Any, list[Any]]:
        """A request's parsed body and the instances to score (feature views filled)."""
        if job.label == "infer":
            request = parse_json(job.body, self.settings.limits, example=oip.EXAMPLE)
            instances = oip.rows_of(request, self.settings.limits.max_instances)
        else:
            request = parse_json(job.body, self.settings.limits, example=_PREDICT_EXAMPLE)
            instances = self._instances(request)
            _explains(request)  # a bad "explain" value is refused before scoring
        if model.fills is not None:
            fill_views(self.feature_store, model.fills, instances, model.key_only)
        return request, instances

    def _answer(
        self,
        name: str,
        model: LoadedModel,
        job: Job,
        request: Any,
        instances: list[Any],
        labels: list[Any],
        probabilities: list[Any] | None,
        findings: list[Finding],
    ) -> tuple[int, bytes, str]:
        """A scored request's answer (logged); predict and OIP infer formats."""
        if job.label == "infer":
            self._logged(name, model, job.request_id, instances, labels, probabilities)
            given = request.get("id")
            outputs = model.package.signature["outputs"]
            answer: dict[str, Any] = {
                "model_name": name,
                "model_version": model.version,
                "id": given if isinstance(given, str) else job.request_id,
                "request_id": job.request_id,
                "outputs": oip.answer_of(outputs, labels, probabilities),
            }
            if findings:
                answer["parameters"] = {
                    "warnings": [finding.to_dict() for finding in findings[:MAX_WARNINGS]]
                }
            return 200, orjson.dumps(answer), model.version
        explained = explain_rows(model.package, instances) if _explains(request) else None
        self._logged(name, model, job.request_id, instances, labels, probabilities)
        answer = {"predictions": labels}
        if explained is not None:  # "explain": true
            answer["explanations"] = explained.to_json()
        if probabilities is not None:  # classification; a regression answer is values only
            answer["probabilities"] = probabilities
        answer["model_version"] = model.version
        answer["request_id"] = job.request_id
        if findings:  # values scored with a warning: out of range, or unseen in training
            answer["warnings"] = [finding.to_dict() for finding in findings[:MAX_WARNINGS]]
        return 200, orjson.dumps(answer), model.version

    def _logged(
        self,
        name: str,
        model: LoadedModel,
        request_id: str,
        instances: list[Any],
        labels: list[Any],
        probabilities: list[Any] | None,
    ) -> None:
        if self.log is not None:
            queued = self.log.append(
                request_id,
                name,
                model.version,
                instances,
                labels,
                probabilities,
                role=model.role,
                pipeline_hash=model.pipeline_hash,
            )
            if not queued:
                self.operations.dropped(name, model.version, model.role)
            self.feedback.issued(name, model, request_id, instances)
        self.metrics.predictions.labels(name, model.version).inc(len(labels))

    def _instances(self, request: Any) -> list[Any]:
        instances = request.get("instances") if isinstance(request, dict) else None
        if not isinstance(instances, list) or not instances:
            raise DataValidationError(
                'request must be {"instances": [{...}, ...]} with at least one instance.',
                field="instances",
            )
        limit = self.settings.limits.max_instances
        if len(instances) > limit:
            raise DataValidationError(
                f"at most {limit} instances per request (serve.max_instances); got "
                f"{len(instances)}. Use 'keel predict' for batch scoring.",
                field="instances",
            )
        return instances

    def _lookup(self, body: bytes) -> tuple[int, bytes, str]:
        try:
            request = parse_json(
                body,
                self.settings.limits,
                example='{"features": ["view:feature"], "entities": [{...}]}',
            )
            results = lookup(self.feature_store, request, self.settings.limits.max_instances)
        except KeelError as exc:
            return exc.http_status, orjson.dumps(exc.to_dict()), ""
        return 200, orjson.dumps({"results": results}), ""

    # --- everything else ---------------------------------------------------------------------

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(
                f"model '{name}' is not served here. Served models: {known}.", field="name"
            )
        if version is not None and version != model.version:
            deployed = self.routes.get(name)  # a version a deployment loaded beside it
            if deployed is not None and version in deployed.versions:
                return deployed.versions[version]
            raise NotFoundError(
                f"model '{name}' version {version} is not served here; this server serves "
                f"version {model.version} ({model.ref}).",
                field="version",
            )
        return model

    def readiness(self) -> tuple[bool, list[str]]:
        """Whether the server can answer, and why it is degraded (empty when healthy)."""
        ready = bool(self.models) or self.feature_store is not None
        reasons = []
        if self.log is not None and self.log.problem is not None:
            reasons.append(self.log.problem)
        if self.reloader is not None:
            reasons.extend(self.reloader.problems.values())
        if self.deployer is not None:
            reasons.extend(self.deployer.problems.values())
        return ready, reasons

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        if self.log is not None:
            self.log.start()
        self.operations.start()
        for model in self.models.values():  # the first request does not pay for lazy setup
            await self._workers.run(warm, model)
        reloading = None
        if self.reloader is not None:
            reloading = asyncio.create_task(self.reloader.run())
        # The loaded models are long-lived: keep them out of the collector's generations so
        # a full collection during traffic does not walk them (shorter latency tails).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if reloading is not None:
                reloading.cancel()
            gc.unfreeze()  # let shutdown collect them (extension types report frozen as leaks)
            self._workers.close()
            self.shadows.close()
            self.operations.close()
            if self.log is not None:
                self.log.close()
            if self.feature_store is not None:
                self.feature_store.close()


def _batchable(label: str, body: bytes) -> bool:
    """Predict and infer requests are batched; explanations (route or flag) are not."""
    return label in ("predict", "infer") and b'"explain"' not in body


def _failed(model: LoadedModel, job: Job, exc: KeelError) -> tuple[int, bytes, str]:
    """A request's error answer: OIP errors name input tensors, not instances."""
    error = oip.error_body(exc.to_dict()) if job.label == "infer" else exc.to_dict()
    return exc.http_status, orjson.dumps(error), model.version


def _pinned(model: str, version: str | None) -> tuple[str, str | None]:
    """``adult/versions/2`` (a pinned ``/v1/models/{name}/versions/{v}/...`` path) -> name, v."""
    name, marker, pinned = model.partition("/versions/")
    return (name, pinned or None) if marker else (model, version)


def _explains(request: Any) -> bool:
    """Whether a predict request asks for explanations (``"explain": true``)."""
    flag = request.get("explain", False) if isinstance(request, dict) else False
    if not isinstance(flag, bool):
        msg = f'"explain" must be true or false; got {flag!r}.'
        raise DataValidationError(msg, field="explain")
    return flag


def _change_auth(project: Any) -> Authenticator | None:
    """The token check for registry changes when the server runs without auth."""
    if project is None:
        return None
    from keel.store.tokens import verify_token

    database = project.metadata.database
    return Authenticator(lambda secret: verify_token(database, secret))


def create_app(
    project: Any,
    *,
    models: list[str] | None = None,
    log_predictions: bool | None = None,
    auth: Authenticator | None = None,
    reload: bool = True,
) -> ServerApp:
    """The server app for a project, configured by its ``serve:`` section.

    Each reference is followed in the registry: ``name`` serves the ``production`` alias (else
    the newest version), ``name@alias`` that alias, ``name@3`` version 3 (never moves). A
    project with feature views and no registered model serves ``/v1/features`` alone.

    Args:
        project: A :class:`keel.project.Project`.
        models: References to serve; default every registered model by name.
        log_predictions: Override ``serve.log_predictions`` from keel.yaml.
        auth: Token checks (:func:`keel.serve.tokens.authenticator`), or None for none.
        reload: Follow the registry (hot reload every ``serve.reload_interval_s``).

    Raises:
        NotFoundError: A reference does not resolve, or the registry is empty.
    """
    from keel.serve.models import load_served

    refs = models or [m["name"] for m in project.metadata.list_models()]
    if not refs and not project.config.feature_views:
        raise NotFoundError("no registered models to serve. Run 'keel run' first.")
    loaded = dict(load_served(project, ref) for ref in refs)
    config = project.config.serve
    enabled = config.log_predictions if log_predictions is None else log_predictions
    log = None
    if enabled:  # personal data columns hashed or dropped (serve.log_pii)
        pii = pii_policy(project, config.log_pii)
        log = PredictionLog(project.predictions_dir, max_queue=config.log_queue_size, pii=pii)
    store = None
    if project.config.feature_views:
        from keel.features.store import FeatureStore

        store = FeatureStore(project)
    settings = ServeSettings(
        limits=Limits(
            max_body=int(config.max_body_mb * 1024 * 1024),
            max_instances=config.max_instances,
            max_depth=config.max_json_depth,
            body_timeout_s=config.body_timeout_s,
        ),
        threads=config.threads,
        slo_p99_ms=config.slo_p99_ms,
        reload_interval_s=config.reload_interval_s if reload else None,
        batching=BatchPolicy(
            mode=config.batching,
            max_batch=config.max_batch,
            max_wait_s=config.max_batch_wait_ms / 1000.0,
            slo_s=config.slo_p99_ms / 1000.0,
            slots=config.threads,
        ),
    )
    return ServerApp(
        loaded,
        prediction_log=log,
        feature_store=store,
        settings=settings,
        auth=auth,
        project=project,
    )
