"""The online server: one ASGI application, every route behind the same middleware.

Routes: the simple JSON API (``POST /v1/models/{name}/predict``), Open Inference Protocol v2
(``POST /v2/models/{name}[/versions/{v}]/infer``, server and model metadata and readiness,
``/v2/health/live|ready``), online features (``POST /v1/features``), ``/metrics``,
``/openapi.json`` and ``/docs`` (served from the package, no CDN).

Every request passes :class:`~keel.serve.middleware.Observe` (request id, errors, metrics,
access log) and :class:`~keel.serve.middleware.Guard` (token and scope, JSON content type).
Predict, infer and features are then answered by this module's router: the body is read under
the limits (:mod:`keel.serve.limits`), and parsing, coercion, the feature pipeline and the
model (:mod:`keel.serve.answers`) run in a small pool of worker threads (``serve.threads``,
each pinned to one OpenMP thread) or the adaptive batcher; only a small lone request whose
model is measured to score within ``serve.inline_max_us`` runs on the event loop, where it
costs less than the hand-off to a thread (:meth:`ServerApp._inline`). When the queue ahead
of a prediction would already break ``serve.slo_p99_ms`` the request is shed with 503 and
``Retry-After``. Everything else goes to a FastAPI app (metadata, health, metrics, docs).

The model table is replaced, never mutated: the :class:`~keel.serve.reload.Reloader` follows
each served reference in the registry and swaps a moved alias in with one assignment. Every
prediction answer names its ``model_version`` and ``request_id`` (also the ``Keel-Model-Version``
and ``Keel-Request-Id`` headers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import FastAPI

from keel.errors import NotFoundError
from keel.evaluate.explain import prepare as prepare_explanations
from keel.serve import routing
from keel.serve.answers import Answers
from keel.serve.auth import Authenticator
from keel.serve.batching import Batcher, BatchPolicy, Job
from keel.serve.control import build_api
from keel.serve.exchange import Exchange, answer_headers
from keel.serve.heap import serving_heap
from keel.serve.limits import Limits, Overloaded, read_body
from keel.serve.metrics import Metrics
from keel.serve.middleware import Guard, Observe, Receive, Route, Scope, Send
from keel.serve.models import LoadedModel, pin_threads, warm
from keel.serve.operations import Operations
from keel.serve.predlog import PredictionLog, pii_policy
from keel.serve.reload import Reloader
from keel.serve.request_ids import RequestIds
from keel.serve.workers import Workers

__all__ = ["INLINE_MAX_BYTES", "LoadedModel", "ServeSettings", "ServerApp", "create_app"]

SHADOW_SAMPLE_UNDER_LOAD = 16  # while primaries queue, 1 copy in 16 still goes to a shadow
INLINE_MAX_BYTES = 4096  # a body scored on the event loop: a few rows at most (see _inline)
Answered = tuple[int, bytes, str]  # a scored request: status, JSON payload, model version


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs (``serve:`` in keel.yaml)."""

    limits: Limits = field(default_factory=Limits)
    threads: int = 1
    slo_p99_ms: float = 100.0
    reload_interval_s: float | None = 1.0  # None: do not follow the registry
    batching: BatchPolicy = field(default_factory=BatchPolicy)
    inline_max_us: float = 250.0  # 0: every prediction in a worker thread
    inline_explain_max_us: float = 2000.0  # 0: every explanation in a worker thread


class ServerApp(Answers):
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
        # shadow copies are scored in a child process at idle priority (keel.serve.shadow)
        self.shadows = routing.Shadows(
            self.traffic,
            project=None if project is None else project.root,
            log_dir=None if self.log is None else self.log.directory,
            pii="hash" if project is None else project.config.serve.log_pii,
            log_dropped=self.operations.dropped,
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
                "Shadow copies dropped: the channel to the shadow process was full, or the "
                "process was down.",
                lambda: float(self.shadows.dropped),
            )
            self.metrics.export(
                "keel_shadow_shed",
                "Shadow copies not made because primary predictions were queued.",
                lambda: float(self.shadows.shed),
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
        self._open = 0  # predict/infer/explain/features requests being answered now
        self.metrics.inflight.set_function(lambda: float(self._inflight))
        self._seconds = 0.001  # moving average of one prediction's service time
        # id(package) -> moving average of one lone request's scoring seconds (the inline bound)
        self._solo: dict[int, float] = {}
        self._solo_explain: dict[int, float] = {}  # the same for one explain request
        self._loop_pinned = False
        self._counted: dict[tuple[str, str, int], Any] = {}  # keel_predictions' cells
        self.project = project
        # delayed labels: the request ids issued lately (POST /v1/models/{name}/feedback)
        key = () if project is None else tuple(project.config.monitor.feedback.key)
        # imported here: the label checks pull in SQLAlchemy and Arrow, which importing
        # keel.serve.app must not
        from keel.serve.feedback_routes import FeedbackState

        ids = RequestIds()  # made here: feedback reads their serials back
        self.feedback = FeedbackState(key, ids.serial)
        self.api = build_api(self)
        #: What checks state-changing requests: the server's tokens, or with auth off a
        #: token check for registry changes alone (None without a project).
        self.change_auth = auth or _change_auth(project)
        self.stack = Observe(Guard(self._route, auth, self.change_auth), self.metrics, ids)
        #: The lean HTTP path's entry (Keel's protocol calls it for whole small requests).
        self.exchange = Exchange(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stack(scope, receive, send)

    def _swap(self, models: dict[str, LoadedModel]) -> None:
        self.models = models

    def _route_by(self, routes: dict[str, routing.Route]) -> None:
        self.routes = routes
        # the shadow process loads new shadow versions beside the old before they are needed
        self.shadows.follow(
            (n, r.shadow.version) for n, r in routes.items() if r.shadow is not None
        )

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # a plain function handing back the handler's coroutine: one coroutine less a request
        route: Route | None = scope.get("keel.route")
        if route is None or not route.fast:
            return self.api(scope, receive, send)
        return self._fast(route, scope, receive, send)

    async def _fast(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """Predict, explain, infer and features over ASGI: read, score, answer."""
        body = scope.get("keel.body")  # the whole body, in already (Keel's HTTP protocol)
        if body is None or len(body) > self.settings.limits.max_body:
            length = scope["keel.headers"].get(b"content-length")
            complete = scope.get("keel.body_complete", False)
            body = await read_body(receive, length, self.settings.limits, complete=complete)
        request_id: str = scope["keel.request_id"]
        answered = self.score(route, body, request_id, scope)
        status, payload, version = answered if isinstance(answered, tuple) else await answered
        headers = answer_headers(payload, version)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self.mirror(route, status, body, payload, request_id)

    def score(
        self, route: Route, body: bytes, request_id: str, scope: Mapping[str, Any]
    ) -> Answered | Awaitable[Answered]:
        """A fast route's ``(status, payload, model version)``: at once when scored inline,
        else what to await (the batch's future, or a coroutine: a thread, a deployment's arm,
        a feature lookup). Raises a KeelError found before any wait (404, 503 shed).

        ``scope`` gives the server's live connection counts (``keel.connections``) for
        :meth:`_inline`. The ASGI path (:meth:`_fast`) and the server's lean HTTP path
        (:mod:`keel.serve.exchange`) both answer through here.
        """
        self._open += 1  # the concurrency _inline looks at when the server cannot tell it
        try:
            if route.label == "features":
                return self._closing(self._run(self._lookup, body))
            name, pinned = route.model, route.version  # .../versions/{v}/...: pinned
            model = self.models.get(name) if pinned is None else None
            if model is None:  # not served, or a pinned version: found or refused here
                model = self.model(name, pinned)
            deployed = self.routes.get(name) if pinned is None else None
            if deployed is not None:  # the deployment's arm (explain too: the same one)
                if deployed.sticky_key is not None:  # parsed in a thread: awaited
                    return self._deployed(route, model, deployed, body, request_id, scope)
                model = deployed.answering(model)  # no coroutine, no task per request
        except BaseException:
            self._open -= 1
            raise
        return self._score(route, model, deployed, body, request_id, scope)

    async def _closing(self, work: Awaitable[Answered]) -> Answered:
        try:
            return await work
        finally:
            self._open -= 1

    async def _deployed(
        self, route: Route, model: LoadedModel, deployed: routing.Route, body: bytes,
        request_id: str, scope: Mapping[str, Any],
    ) -> Answered:  # fmt: skip
        try:
            model = await self._arm(deployed, model, body)
        except BaseException:
            self._open -= 1
            raise
        answered = self._score(route, model, deployed, body, request_id, scope)
        return answered if isinstance(answered, tuple) else await answered

    def _score(
        self, route: Route, model: LoadedModel, deployed: routing.Route | None, body: bytes,
        request_id: str, scope: Mapping[str, Any],
    ) -> Answered | Awaitable[Answered]:  # fmt: skip
        """Score inline, in a batch or in a thread; the request is done (``_finish``) when
        its answer is in."""
        label, name, started = route.label, route.model, time.perf_counter()
        finish = partial(self._finish, label, name, model, deployed, started)
        batcher = self._batcher  # predict and infer, without explanations, are batched
        try:
            if not self._inflight and self._inline(scope, label, model, body):
                if not self._loop_pinned:  # one OpenMP thread here, as in the threads
                    pin_threads(1)
                    self._loop_pinned = True
                if label == "explain":
                    answered = self._explained(name, model, body, request_id)
                else:
                    answered = self._scored((name, model), [Job(label, body, request_id)])[0]
                finish(answered[0])
                return answered
            if batcher is not None and label != "explain" and b'"explain"' not in body:
                threads = self.settings.threads  # _run's admission, written out here
                if self._inflight >= threads and (
                    self._inflight / threads * self._seconds * 1000.0 > self.settings.slo_p99_ms
                ):
                    self._shed(threads)
                pending = batcher.submit(name, model, Job(label, body, request_id))
                self._inflight += 1  # keel_predictions_in_flight reads it when scraped
                if isinstance(pending, asyncio.Future):  # no coroutine: a callback ends it
                    pending.add_done_callback(partial(self._landed, finish))
                    return pending
                return self._waited(self._counted_out(pending), finish)
            answer = self._infer if label == "infer" else self._predict
            answer = self._explained if label == "explain" else answer
            return self._waited(self._run(answer, name, model, body, request_id), finish)
        except BaseException:  # refused or failed before any wait
            finish(500)
            raise

    async def _counted_out(self, pending: Awaitable[Answered]) -> Answered:
        try:
            return await pending
        finally:
            self._inflight -= 1

    async def _waited(self, work: Awaitable[Answered], finish: Any) -> Answered:
        status = 500
        try:
            answered = await work
            status = answered[0]
            return answered
        finally:
            finish(status)

    def _landed(self, finish: Any, future: asyncio.Future[Answered]) -> None:
        self._inflight -= 1
        failed = future.cancelled() or future.exception() is not None
        finish(500 if failed else future.result()[0])

    def _finish(
        self, label: str, name: str, model: LoadedModel, deployed: routing.Route | None,
        started: float, status: int,
    ) -> None:  # fmt: skip
        """A scored request is answered: no longer open; counted under its deployment, else
        its model (explanations are not)."""
        self._open -= 1
        if label != "explain":
            seconds = time.perf_counter() - started
            key = self.operations.key(name) if deployed is None else deployed.deployment
            self.traffic.record(key, model.version, model.role, seconds,
                                error=status >= 500, rejected=400 <= status < 500)  # fmt: skip

    def mirror(self, route: Route, status: int, body: bytes, payload: bytes, rid: str) -> None:
        """After a prediction's answer: a copy to its deployment's shadow version, if any."""
        if route.label not in ("predict", "infer") or status != 200 or route.version is not None:
            return
        deployed = self.routes.get(route.model)
        shadow = None if deployed is None else deployed.shadow  # mirrored after the answer
        if shadow is None or deployed is None:
            return
        copies = deployed.copies  # what became of them: status shows it (routing.Copies)
        copies.copies += 1
        if self._inflight > self.settings.threads:  # primaries queue: 1 in 16 copies still go
            self.shadows.under_load += 1
            if self.shadows.under_load % SHADOW_SAMPLE_UNDER_LOAD:
                self.shadows.shed += 1
                copies.shed += 1
                return
        self.shadows.submit(route.model, deployed.deployment, shadow, body, payload, rid,
                            route.label, copies)  # fmt: skip

    def _inline(
        self, scope: Mapping[str, Any], label: str, model: LoadedModel, body: bytes
    ) -> bool:
        """Whether this request is scored on the event loop instead of a prediction thread.

        Handing a request to a thread and its answer back costs about 65 µs of CPU on a busy
        core (two thread switches, ``benchmarks/serving/overhead.py``), more than scoring a
        1-row Adult request (40-70 µs: parse, coerce, transform, 203 trees, answer, log), and the
        work is the same on either side. So a request is scored inline only when all of these
        hold, and otherwise goes to a thread:

        - requests come one at a time: no other connection is inside a request (the server's
          HTTP protocol counts them, :mod:`keel.serve.protocol`; served otherwise, no other
          request is being answered) and nothing is queued or running in the threads. Under
          concurrency requests go to the batcher, whose one model call for many requests
          pays more than the hand-off costs; scoring them inline one after the other would
          not;
        - a predict or infer request without explanations, or an explain request, without
          feature-store lookups (I/O), whose body is at most :data:`INLINE_MAX_BYTES` (a few
          rows; checked before any parsing, so a large body never touches the loop);
        - its model's measured CPU time for one lone request (a moving average over every
          lone request, inline or threaded; a model's first requests are threaded) is at most
          ``serve.inline_max_us`` (default 250 µs; 0: never inline); for an explain request,
          its model's measured CPU time for one explanation (every explain request, inline or
          threaded; the first is threaded) is at most ``serve.inline_explain_max_us``
          (default 2,000 µs; 0: never).

        The loop is then blocked at most about ``inline_max_us``, the order of what reading
        and routing a request already costs it, or for an explanation ``inline_explain_max_us``
        (one Adult row: ~0.5 ms of CPU quiet, ~1 ms under load, :mod:`keel.evaluate.treeshap`),
        and only while no other request is in progress. A request arriving meanwhile waits
        that long, as it would behind the one prediction thread (``serve.threads: 1``) that
        the explanation would otherwise hold, and in a thread NumPy's small array operations
        hold the GIL most of the time, keeping the loop waiting as well.
        """
        if self._inflight or len(body) > INLINE_MAX_BYTES or model.fills is not None:
            return False
        if label == "explain":
            cap, solo = self.settings.inline_explain_max_us, self._solo_explain
        elif label in ("predict", "infer") and b'"explain"' not in body:
            cap, solo = self.settings.inline_max_us, self._solo
        else:
            return False
        http = scope.get("keel.connections")  # (open connections, idle ones)
        if cap <= 0.0 or (len(http[0]) - len(http[1]) if http is not None else self._open) > 1:
            return False
        cost = solo.get(id(model.package))
        return cost is not None and cost * 1e6 <= cap

    def _explained(
        self, name: str, model: LoadedModel, body: bytes, request_id: str
    ) -> tuple[int, bytes, str]:
        """An explain request's answer, its CPU time measured (the inline bound, per model)."""
        cpu = time.thread_time()
        answered = self._explain(name, model, body, request_id)
        cpu = time.thread_time() - cpu  # CPU, not wall: a preempted thread is not slower
        # a faster average than predict's: the first explanations run on cold caches (1-1.6 ms
        # on Adult, then ~0.6 ms), and at 0.9 the bound would take ~90 requests to forget them
        average = self._solo_explain.get(key := id(model.package))
        self._solo_explain[key] = cpu if average is None else 0.7 * average + 0.3 * cpu
        return answered

    async def _run(self, work: Any, *args: Any) -> tuple[int, bytes, str]:
        """Run ``work`` in a worker thread unless the queue would break the latency objective."""
        threads = self.settings.threads
        if self._inflight >= threads and (
            self._inflight / threads * self._seconds * 1000.0 > self.settings.slo_p99_ms
        ):
            self._shed(threads)
        self._inflight += 1  # keel_predictions_in_flight reads it when scraped
        try:
            result: tuple[int, bytes, str] = await self._workers.run(work, *args)
            return result
        finally:
            self._inflight -= 1

    def _shed(self, threads: int) -> None:
        """Refuse a prediction (503, ``Retry-After``): the queue ahead of it (``_inflight``
        predictions at ``_seconds`` each over ``threads``) would break the latency objective."""
        self.metrics.shed.inc()
        wait_ms = (self._inflight / threads) * self._seconds * 1000.0
        raise Overloaded(
            f"the server is at capacity: {self._inflight} predictions queued would wait "
            f"~{wait_ms:.0f} ms, past serve.slo_p99_ms={self.settings.slo_p99_ms:g}; "
            "retry shortly or add capacity.",
            retry_after=1,
        )

    async def _arm(self, deployed: routing.Route, primary: LoadedModel, body: bytes) -> LoadedModel:
        """The version that answers this request under a sticky deployment (its key parsed in
        a worker thread, never on the loop)."""
        key = await self._workers.run(self._sticky, deployed.sticky_key, body)
        return deployed.answering(primary, key)

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
            await self._workers.run(prepare_explanations, model.package)
        if self.deployer is not None:  # ready means routed: A/B, canary and shadow included
            await self.deployer.first_pass()
        reloading = None
        if self.reloader is not None:
            reloading = asyncio.create_task(self.reloader.run())
        try:
            with serving_heap():  # the loaded models frozen out of the collector's walks
                yield
        finally:
            if reloading is not None:
                reloading.cancel()
            self._workers.close()
            self.shadows.close()
            self.operations.close()
            if self.log is not None:
                self.log.close()
            if self.feature_store is not None:
                self.feature_store.close()


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

    Each reference is followed in the registry: ``name`` serves the alias keel.yaml's
    ``registry.alias`` names (``production`` by default; else the newest version),
    ``name@alias`` that alias, ``name@3`` version 3 (never moves). A project with feature
    views and no registered model serves ``/v1/features`` alone.

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
        inline_max_us=config.inline_max_us,
        inline_explain_max_us=config.inline_explain_max_us,
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
