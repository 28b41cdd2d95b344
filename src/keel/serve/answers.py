"""What the prediction threads run for the server: parse, score, answer and log a request.

The request-side half of :class:`~keel.serve.app.ServerApp`: the predict, infer, explain and
feature-lookup handlers, the scoring hooks the batcher calls (:func:`~keel.serve.batching.
score_batch`) and the prediction log (a shadow's copies are scored in another process,
:mod:`keel.serve.shadow`). These run in a prediction thread, or inline on the event loop for a
small lone request (``ServerApp._inline``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from threading import get_ident
from typing import Any

import orjson

from keel.errors import DataValidationError, KeelError
from keel.evaluate.explain import explain_rows
from keel.serve import oip, routing
from keel.serve.batching import CostModel, Hooks, Job, score_batch
from keel.serve.features import UnknownEntity, fill_views, lookup
from keel.serve.limits import parse_json
from keel.serve.metrics import Metrics
from keel.serve.models import LoadedModel
from keel.serve.operations import Operations
from keel.serve.predlog import PredictionLog
from keel.validate.coerce import Finding

__all__ = ["MAX_WARNINGS", "Answers", "Tally"]

MAX_WARNINGS = 100  # per answer: a hostile request cannot grow the answer past this
_PREDICT_EXAMPLE = '{"instances": [{"field": value, ...}]}'


class Answers:
    """The server's handlers that run off the request's coroutine (mixed into ServerApp)."""

    models: Mapping[str, LoadedModel]
    log: PredictionLog | None
    feature_store: Any
    settings: Any  # keel.serve.app.ServeSettings
    metrics: Metrics
    operations: Operations
    feedback: Any  # keel.serve.feedback_routes.FeedbackState
    _seconds: float
    _solo: dict[int, float]
    _solo_ticks: int = 0  # lone requests of models with an estimate (one in 8 re-measured)
    _counted: dict[tuple[str, str, int], Any]  # (model, version, thread) -> its cell

    def _sticky(self, key: str, body: bytes) -> Any:
        try:
            request = parse_json(body, self.settings.limits, example=_PREDICT_EXAMPLE)
        except KeelError:
            return None  # the answer reports the bad request
        return routing.sticky_value(request, key)

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
            unknown = None
            if model.fills is not None:
                unknown = fill_views(self.feature_store, model.fills, instances, model.key_only)
            answer = explain_rows(model.package, instances).to_json()
        except KeelError as exc:
            return exc.http_status, orjson.dumps(exc.to_dict()), model.version
        answer.update(model_version=model.version, request_id=request_id)
        if unknown:  # entities the online store lacks: explained with their features missing
            found = self._unknown(name, unknown)[:MAX_WARNINGS]
            answer["warnings"] = [finding.to_dict() for finding in found]
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
        # a lone request's CPU time, unless it calibrates the batch cost model (many calls);
        # once a model has an estimate, one lone request in 8 updates it (thread_time() is a
        # system call, two per request otherwise)
        solo = len(jobs) == 1 and (cost is None or cost.calibrated)
        if solo and id(model.package) in self._solo:
            self._solo_ticks = ticks = self._solo_ticks + 1
            solo = not ticks & 7
        cpu = time.thread_time() if solo else 0.0
        tally = Tally(logging=self.log is not None)
        hooks = Hooks(  # (only a model trained with views passes its unknown entities on)
            partial(self._parse, model)
            if model.fills is None
            else partial(self._parse, model, tally=tally),
            partial(self._answer, name, model, tally),
            partial(_failed, model),
        )
        try:
            results: list[tuple[int, bytes, str]] = score_batch(
                model.package, jobs, hooks, cost, max_rows
            )
        finally:  # what was answered, even if a later request's model call raised
            if tally.logged:
                self._log_answered(name, model, tally.logged)
            if tally.rows:
                self._count(name, model.version, tally.rows)
        elapsed = (time.perf_counter() - started) / len(jobs)  # per request, amortised
        self._seconds = 0.9 * self._seconds + 0.1 * elapsed
        if solo:  # the inline bound (_inline), per model
            cpu = time.thread_time() - cpu  # CPU, not wall: a preempted thread is not slower
            key = id(model.package)
            average = self._solo.get(key)
            self._solo[key] = cpu if average is None else 0.9 * average + 0.1 * cpu
        return results

    def _parse(
        self, model: LoadedModel, job: Job, tally: Tally | None = None
    ) -> tuple[Any, list[Any]]:
        """A request's parsed body and the instances to score (feature views filled; the
        entities the online store lacks kept in ``tally`` for the answer)."""
        if job.label == "infer":
            request = parse_json(job.body, self.settings.limits, example=oip.EXAMPLE)
            signature = model.package.signature
            instances = oip.rows_of(
                request, self.settings.limits.max_instances, signature["outputs"]
            )
        else:
            request = parse_json(job.body, self.settings.limits, example=_PREDICT_EXAMPLE)
            given = request.get("instances") if type(request) is dict else None
            if type(given) is list and given and len(given) <= self.settings.limits.max_instances:
                instances = given  # (what _instances checks, written out: once a request)
            else:
                instances = self._instances(request)  # refused, saying why
            if type(request.get("explain", False)) is not bool:  # (a dict: _instances)
                _explains(request)  # a bad "explain" value is refused before scoring
        if model.fills is not None:
            unknown = fill_views(self.feature_store, model.fills, instances, model.key_only)
            if unknown and tally is not None:
                if tally.unknown is None:
                    tally.unknown = {}
                tally.unknown[id(job)] = unknown
        return request, instances

    def _answer(
        self,
        name: str,
        model: LoadedModel,
        tally: Tally,
        job: Job,
        request: Any,
        instances: list[Any],
        labels: list[Any],
        probabilities: list[Any] | None,
        findings: list[Finding],
    ) -> tuple[int, bytes, str]:
        """A scored request's answer (its rows and log record added to ``tally``); predict and
        OIP infer formats."""
        if tally.unknown:  # entities the online store lacks come first: they explain the rest
            unknown = tally.unknown.pop(id(job), None)
            if unknown:
                findings = [*self._unknown(name, unknown), *findings]
        if job.label == "infer":
            if tally.logging:  # logged once the batch is answered (_log_answered)
                tally.logged.append((job.request_id, instances, labels, probabilities))
            tally.rows += len(labels)
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
                    "warnings": oip.warnings_of([f.to_dict() for f in findings[:MAX_WARNINGS]])
                }
            return 200, orjson.dumps(answer), model.version
        # "explain" was checked to be a bool when parsed (_parse): only true explains
        wanted = type(request) is dict and request.get("explain") is True
        explained = explain_rows(model.package, instances) if wanted else None
        if tally.logging:  # (a failed explanation is an error answer: not logged)
            tally.logged.append((job.request_id, instances, labels, probabilities))
        tally.rows += len(labels)
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

    def _log_answered(
        self, name: str, model: LoadedModel, answered: list[tuple[str, list[Any], Any, Any]]
    ) -> None:
        """Log a batch's answered requests (in order, one line each) and remember their ids
        for feedback; a request the full log queue drops is counted."""
        log = self.log
        if log is None:
            return
        version, role = model.version, model.role
        dropped = log.append_many(
            name, version, answered, role=role, pipeline_hash=model.pipeline_hash
        )
        for _ in range(dropped):
            self.operations.dropped(name, version, role)
        self.feedback.issued(name, model, [(rid, instances) for rid, instances, _, _ in answered])

    def _count(self, name: str, version: str, rows: int) -> None:
        """Add ``rows`` predictions to ``keel_predictions`` (this thread's cell: no lock)."""
        key = (name, version, get_ident())
        cell = self._counted.get(key)
        if cell is None:  # made under a lock: once per version and thread
            cell = self._counted[key] = self.metrics.predictions.cell(name, version)
        cell.value += rows

    def _unknown(self, name: str, unknown: list[UnknownEntity]) -> list[Finding]:
        """Count an answer's unknown entities in ``keel_unknown_entities`` and word them as
        ``unknown_entity`` warnings (not capped: the answer caps its warnings)."""
        views: dict[str, int] = {}
        for entity in unknown:
            views[entity.view] = views.get(entity.view, 0) + 1
        for view, count in views.items():
            self.metrics.unknown_entities.labels(name, view).inc(count)
        return [entity.finding() for entity in unknown]

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


class Tally:
    """What a call of :meth:`Answers._scored` answered: rows (for ``keel_predictions``) and,
    when ``logging``, each answered request's log entry (request id, instances, labels,
    probabilities), written together once the batch is answered; ``unknown``: the entities
    the online store lacks, by parsed job, until its answer warns of them."""

    __slots__ = ("logged", "logging", "rows", "unknown")

    def __init__(self, *, logging: bool) -> None:
        self.logging = logging
        self.rows = 0
        self.logged: list[tuple[str, list[Any], Any, Any]] = []
        self.unknown: dict[int, list[UnknownEntity]] | None = None  # id(job) -> the entities


def _failed(model: LoadedModel, job: Job, exc: KeelError) -> tuple[int, bytes, str]:
    """A request's error answer: OIP errors name input tensors, not instances."""
    if job.label != "infer":
        return exc.http_status, orjson.dumps(exc.to_dict()), model.version
    error = oip.error_body(exc.to_dict(), model.package.signature["inputs"])
    return exc.http_status, orjson.dumps(error), model.version


def _explains(request: Any) -> bool:
    """Whether a predict request asks for explanations (``"explain": true``)."""
    flag = request.get("explain", False) if isinstance(request, dict) else False
    if not isinstance(flag, bool):
        msg = f'"explain" must be true or false; got {flag!r}.'
        raise DataValidationError(msg, field="explain")
    return flag
