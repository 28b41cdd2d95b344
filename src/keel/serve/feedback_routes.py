"""Delayed labels over REST: ``POST /v1/models/{name}/feedback``.

The body is ``{"labels": [{"request_id": ..., "label": ...} | {"key": {...}, "label": ...}]}``,
read under the server's body limits and held to at most ``serve.max_instances`` labels (and
:data:`~keel.monitor.feedback.MAX_ITEMS`). The route needs the ``predict`` scope when auth is on
(whoever may ask for predictions may report their outcome). A well-formed body answers 200 with
one result per label (accepted, replaced, or rejected with the reason: unknown request id, a
label outside the target's values, a duplicate...); a malformed body answers 400 (413 too large,
415 not JSON); an unknown model 404. Checking and storing run in FastAPI's thread pool, never on
the event loop.

:class:`FeedbackState` is the server's memory for it: the request ids (and key hashes) it issued
lately, so a label sent right after its prediction is known before the log is flushed, and each
served model's label spec (task, classes, key column types), read from its package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from keel.errors import DataValidationError, KeelError, NotFoundError
from keel.monitor.feedback import MAX_ITEMS, LabelSpec, RecentIds
from keel.serve.limits import Limits, parse_json, read_body
from keel.serve.models import LoadedModel

__all__ = ["FeedbackState", "feedback_router"]

_EXAMPLE = '{"labels": [{"request_id": "...", "label": ...}]}'
_SCALAR = {"type": ["string", "number", "boolean"]}
_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["labels"],
                "additionalProperties": False,
                "properties": {
                    "labels": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["label"],
                            "properties": {
                                "request_id": {"type": "string", "maxLength": 200},
                                "instance": {"type": "integer", "minimum": 0},
                                "key": {"type": "object", "additionalProperties": _SCALAR},
                                "label": _SCALAR,
                            },
                        },
                    }
                },
            }
        }
    },
}


class FeedbackState:
    """Recently issued request ids and the label spec of each served model version.

    Args:
        key: ``monitor.feedback.key``: the key columns labels may be joined by.
        serial: the serial of a request id the server made (:class:`RecentIds`).
    """

    def __init__(
        self, key: tuple[str, ...] = (), serial: Callable[[str], int | None] | None = None
    ) -> None:
        self.key = key
        self.recent = RecentIds(serial=serial)
        self._specs: dict[tuple[str, str], LabelSpec | None] = {}

    def spec(self, name: str, model: LoadedModel) -> LabelSpec:
        """The label spec of a served model (cached per version).

        Raises:
            DataValidationError: ``monitor.feedback.key`` names a column the model lacks.
        """
        package = model.package
        return LabelSpec.of(name, package.task, package.classes, package.pipeline.inputs, self.key)

    def issued(self, name: str, model: LoadedModel, served: Sequence[tuple[str, Any]]) -> None:
        """Remember served requests, as (request id, instances) (called on the prediction
        path, once a batch: a slot written per request, plus a hash per instance when labels
        are joined by key)."""
        key = None
        if self.key:
            cached = (name, model.version)
            if cached not in self._specs:
                try:
                    self._specs[cached] = self.spec(name, model)
                except KeelError:
                    self._specs[cached] = None  # the key does not fit this model: ids only
            found = self._specs[cached]
            key = None if found is None else found.key
        self.recent.add_many(name, served, key)


def feedback_router(
    project: Any,
    state: FeedbackState,
    models: Callable[[], Mapping[str, LoadedModel]],
    limits: Limits,
) -> APIRouter:
    """The feedback route over ``project``'s metadata database and prediction log."""
    from keel.monitor.labels import submit_feedback

    router = APIRouter(tags=["feedback"])
    most = min(MAX_ITEMS, limits.max_instances)

    @router.post(
        "/v1/models/{name}/feedback",
        summary="Delayed labels for served predictions, joined by request id or key",
        response_description="One result per label: accepted, replaced or rejected (reason)",
        openapi_extra={"requestBody": _BODY},
    )
    async def post_feedback(name: str, request: Request) -> Response:
        length = request.headers.get("content-length")
        body = await read_body(request.receive, None if length is None else length.encode(), limits)
        labels = _labels(parse_json(body, limits, example=_EXAMPLE), most)
        served = models().get(name)
        if served is None:
            known = ", ".join(sorted(models())) or "none"
            msg = f"model '{name}' is not served here. Served models: {known}."
            raise NotFoundError(msg, field="name")
        spec = state.spec(name, served)
        result = await run_in_threadpool(
            submit_feedback,
            project,
            name,
            labels,
            source="http",
            spec=spec,
            recent=state.recent,
        )
        return Response(orjson.dumps(result.to_dict()), media_type="application/json")

    return router


def _labels(body: Any, most: int) -> list[Any]:
    """The ``labels`` list of a request body.

    Raises:
        DataValidationError: Not ``{"labels": [...]}``, empty, or more than ``most`` labels.
    """
    labels = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(labels, list) or not labels:
        msg = f"request must be {_EXAMPLE} with at least one label."
        raise DataValidationError(msg, field="labels")
    extra = sorted(k for k in body if k != "labels")
    if extra:
        raise DataValidationError(f"unknown field(s) {extra}; send {_EXAMPLE}.", field="body")
    if len(labels) > most:
        msg = (
            f"at most {most} labels per request (serve.max_instances); got {len(labels)}. Send "
            "them in several requests, or use 'keel feedback NAME --input FILE'."
        )
        raise DataValidationError(msg, field="labels")
    return labels
