"""The server's OpenAPI document: FastAPI's routes plus the hot-path routes, all with schemas.

Predict, infer and features are answered by the server's own router (no framework on that
path), so FastAPI does not know them; :func:`add_fast_routes` writes their path items from the
models below, with every error status the middleware can answer. ``/docs`` renders the
document with a page shipped in the package (``static/docs.html``): no CDN, works offline.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DOCS_HTML", "add_fast_routes"]

Value = str | int | float | bool | None


class PredictRequest(BaseModel):
    instances: list[dict[str, Value]] = Field(
        min_length=1,
        description="One object per row: input name -> value. GET /v2/models/{name} lists a "
        "model's inputs; those with parameters.optional (filled_by a feature view) may be left "
        "out: the server looks them up by the entity keys (parameters.entity_key).",
    )
    explain: bool = Field(
        default=False, description="Predict only: add each input column's contribution."
    )


class Warning_(BaseModel):
    field: str | None = None
    message: str


class ExplainResponse(BaseModel):
    method: str = Field(description="lightgbm.pred_contrib or xgboost.pred_contribs (TreeSHAP).")
    columns: list[str] = Field(description="The input columns contributions are folded to.")
    outputs: list[str] = Field(description="log_odds, the class names, or value.")
    base_value: float | dict[str, float]
    rows: list[dict[str, Any]] = Field(
        description="Per row: margin, prediction, contributions (input column -> value); per "
        "class for multiclass. base_value + sum(contributions) = margin."
    )
    model_version: str | None = None
    request_id: str | None = None


class PredictResponse(BaseModel):
    predictions: list[Value] = Field(description="Label (classification) or value per row.")
    probabilities: list[float | list[float]] | None = Field(
        default=None, description="P(positive) per row, or per-class probabilities."
    )
    model_version: str
    request_id: str
    warnings: list[Warning_] | None = None
    explanations: ExplainResponse | None = Field(
        default=None, description='With "explain": true: as the explain route answers.'
    )


class Tensor(BaseModel):
    name: str
    datatype: str = Field(description="BOOL, INT64, FP64, BYTES, ...")
    shape: list[int]
    data: list[Any]


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor] = Field(min_length=1, description="One column tensor per model input.")
    parameters: dict[str, Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]


class FeaturesRequest(BaseModel):
    features: list[str] = Field(min_length=1, description='"view:feature" names.')
    entities: list[dict[str, Value]] = Field(min_length=1, description="Entity keys per row.")


class FeaturesResponse(BaseModel):
    results: list[dict[str, Value]]


class ErrorBody(BaseModel):
    error: str = Field(description="The error's type, e.g. DataValidationError.")
    message: str = Field(description="What happened and what to do.")
    field: str | None = Field(default=None, description="The offending field, when one is.")
    details: dict[str, Any] | None = None


_ERRORS = {
    "401": "Missing, unknown, revoked or expired token.",
    "403": "The token lacks the route's scope.",
    "404": "Model or version not served here.",
    "408": "The body did not arrive in time.",
    "413": "Body larger than serve.max_body_mb.",
    "415": "Content-Type is not application/json.",
    "422": "The request breaks the model's schema (names the field).",
    "429": "The token's rate limit is spent (Retry-After).",
    "503": "Overloaded: the queue would break serve.slo_p99_ms (Retry-After).",
}

_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def add_fast_routes(document: dict[str, Any]) -> dict[str, Any]:
    """Add predict, explain, infer (each also on a pinned ``/versions/{version}``) and
    features, with their schemas, to FastAPI's document."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    models = (
        PredictRequest,
        PredictResponse,
        ExplainResponse,
        InferRequest,
        InferResponse,
        FeaturesRequest,
        FeaturesResponse,
        ErrorBody,
    )
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
    paths = document.setdefault("paths", {})
    paths["/v1/models/{name}/predict"] = _post(
        "Predict (simple JSON API)", "PredictRequest", "PredictResponse", [_NAME]
    )
    paths["/v1/models/{name}/versions/{version}/predict"] = _post(
        "Predict with a given version (simple JSON API)",
        "PredictRequest",
        "PredictResponse",
        [_NAME, _VERSION],
    )
    paths["/v1/models/{name}/explain"] = _post(
        "Explain (exact TreeSHAP per input column)", "PredictRequest", "ExplainResponse", [_NAME]
    )
    paths["/v1/models/{name}/versions/{version}/explain"] = _post(
        "Explain with a given version (exact TreeSHAP per input column)",
        "PredictRequest",
        "ExplainResponse",
        [_NAME, _VERSION],
    )
    paths["/v2/models/{name}/infer"] = _post(
        "Infer (Open Inference Protocol v2)", "InferRequest", "InferResponse", [_NAME]
    )
    paths["/v2/models/{name}/versions/{version}/infer"] = _post(
        "Infer on a given version (Open Inference Protocol v2)",
        "InferRequest",
        "InferResponse",
        [_NAME, _VERSION],
    )
    paths["/v1/features"] = _post(
        "Online feature lookup", "FeaturesRequest", "FeaturesResponse", []
    )
    return document


def _post(summary: str, request: str, response: str, parameters: list[Any]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{request}"}
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}
            },
            "headers": {
                "Keel-Request-Id": {"schema": {"type": "string"}},
                "Keel-Model-Version": {"schema": {"type": "string"}},
            },
        }
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for status, description in _ERRORS.items():
        responses[status] = {"description": description, "content": error}
    operation = {
        "summary": summary,
        "parameters": parameters,
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
        "responses": responses,
        "security": [{"bearer": []}, {}],
    }
    return {"post": operation}


DOCS_HTML = "docs.html"
