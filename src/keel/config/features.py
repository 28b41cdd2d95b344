"""keel.yaml ``features:`` (declared transforms, custom functions, views to join) and
``feature_views:`` (entity keys, timestamps, TTL, window aggregations)."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from keel.config.base import Frozen, dotted
from keel.config.data import SourceConfig

__all__ = [
    "STEP_PARAMS",
    "AggregationConfig",
    "CustomFeatureConfig",
    "FeatureViewConfig",
    "FeaturesConfig",
    "TransformConfig",
    "parse_duration",
]


class _StepParams(Frozen):
    """Parameters of one transform step (see ``keel.features`` for what each kind does)."""


class ImputeStep(_StepParams):
    strategy: Literal["mean", "median", "mode", "most_frequent", "constant"] = "median"
    fill_value: float | str | None = None
    indicator: bool = False


class ClipStep(_StepParams):
    lower: float | None = None
    upper: float | None = None
    lower_quantile: float | None = Field(default=None, ge=0, le=1)
    upper_quantile: float | None = Field(default=None, ge=0, le=1)


class BucketizeStep(_StepParams):
    strategy: Literal["quantile", "fixed"] = "quantile"
    n_bins: int = Field(default=10, ge=2)
    boundaries: list[float] | None = None
    encode: Literal["ordinal", "onehot"] = "ordinal"


class OneHotStep(_StepParams):
    max_categories: int = Field(default=50, ge=1)
    unseen: Literal["auto", "other", "ignore", "error"] = "auto"


class OrdinalStep(_StepParams):
    unknown_value: float = -1.0


class HashStep(_StepParams):
    n_features: int = Field(default=32, ge=1)
    seed: int = 0


class TargetEncodeStep(_StepParams):
    smoothing: float = Field(default=20.0, ge=0)
    folds: int = Field(default=5, ge=2)
    seed: int = 0


class CrossStep(_StepParams):
    separator: str = "|"


_DatePart = Literal["year", "month", "day", "dayofweek", "hour", "minute", "dayofyear"]


class DatetimeStep(_StepParams):
    parts: list[_DatePart] | None = None
    cyclical: list[_DatePart] | None = None


class TfIdfStep(_StepParams):
    max_features: int = Field(default=100, ge=1)
    min_df: int = Field(default=1, ge=1)
    lowercase: bool = True
    sublinear_tf: bool = False


#: Transform kind -> its parameters (the same kinds as ``keel.features.transform.KINDS``).
STEP_PARAMS: dict[str, type[_StepParams]] = {
    "impute": ImputeStep,
    "standardize": _StepParams,
    "min_max": _StepParams,
    "robust_scale": _StepParams,
    "log1p": _StepParams,
    "clip": ClipStep,
    "bucketize": BucketizeStep,
    "one_hot": OneHotStep,
    "ordinal": OrdinalStep,
    "hash": HashStep,
    "target_encode": TargetEncodeStep,
    "cross": CrossStep,
    "datetime": DatetimeStep,
    "tfidf": TfIdfStep,
}


class TransformStep(Frozen):
    """One step of a declared chain: ``{kind: impute, strategy: median, indicator: true}``."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a step is a mapping like {kind: standardize}")
        if "kind" not in data:
            raise ValueError(f"a step needs 'kind' (one of {', '.join(STEP_PARAMS)})")
        kind = str(data["kind"])
        if kind not in STEP_PARAMS:
            close = difflib.get_close_matches(kind, list(STEP_PARAMS), n=1, cutoff=0.6)
            hint = f"Did you mean '{close[0]}'?" if close else f"Kinds: {', '.join(STEP_PARAMS)}"
            raise ValueError(f"unknown transform kind '{kind}'. {hint}")
        rest = {k: v for k, v in data.items() if k != "kind"}
        if set(rest) == {"params"} and isinstance(rest["params"], dict):
            rest = rest["params"]  # already in the {kind, params} shape (a dumped config)
        model = STEP_PARAMS[kind]
        try:
            params = model.model_validate(rest)
        except ValidationError as exc:
            raise ValueError(_step_problem(kind, model, exc)) from None
        return {"kind": kind, "params": params.model_dump()}


def _step_problem(kind: str, model: type[_StepParams], exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = dotted(tuple(error["loc"]))
    if error["type"] == "extra_forbidden":
        known = list(model.model_fields)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        listed = ", ".join(known) or "none"
        hint = f"Did you mean '{close[0]}'?" if close else f"Parameters: {listed}"
        return f"unknown parameter '{name}' for {kind}. {hint}"
    return f"{kind}: {name}: {error['msg']} (got {error.get('input')!r})"


class TransformConfig(Frozen):
    """A declared chain: ``{columns: [a, b], steps: [...]}`` (or ``column: a``).

    The steps replace the default chain of each column. A chain whose first step is ``cross``
    combines its columns into one category instead.
    """

    columns: list[str] = Field(min_length=1)
    steps: list[TransformStep] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_column(cls, data: Any) -> Any:
        if isinstance(data, dict) and "column" in data:
            if "columns" in data:
                raise ValueError("give either 'column' or 'columns', not both")
            data = {k: v for k, v in data.items() if k != "column"} | {"columns": [data["column"]]}
        return data


class CustomFeatureConfig(Frozen):
    """A ``@keel.feature`` function: ``{function: mypkg.feats:age_bucket, inputs: [age], ...}``."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    inputs: list[str] = Field(min_length=1)
    output: str = Field(min_length=1)
    type: Literal["float", "int", "string", "bool"] = "float"


class FeaturesConfig(Frozen):
    """The feature pipeline: defaults per column type, declared chains, custom features.

    Columns without a declared chain get the defaults: numbers are imputed (numeric_impute)
    and standardized (scale); strings are imputed (categorical_impute) and one-hot encoded
    (max_categories).
    """

    numeric_impute: Literal["mean", "median", "constant"] = "median"
    categorical_impute: Literal["most_frequent", "constant"] = "most_frequent"
    scale: Literal["standard", "none"] = "standard"
    max_categories: int = Field(default=50, ge=2)
    transforms: list[TransformConfig] = Field(default_factory=list)
    custom: list[CustomFeatureConfig] = Field(default_factory=list)
    views: list[str] = Field(default_factory=list)
    entity_timestamp: str | None = None

    @field_validator("views")
    @classmethod
    def _view_refs(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            if not _FEATURE_REF.match(ref):
                raise ValueError(f"{ref!r} is not a 'view:feature' reference (or 'view:*')")
        return refs


_FEATURE_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*:([A-Za-z_][A-Za-z0-9_]*|\*)$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``30s``, ``15m``, ``12h``, ``7d`` or ``2w`` (``0`` is 0)."""
    if text.strip() == "0":
        return 0
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. '30s', '15m', '12h', '7d', '2w'")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return int(match.group(1)) * unit


class AggregationConfig(Frozen):
    """A feature aggregated over a trailing time window: ``count``/``sum``/``mean``/``min``/``max``
    of ``column`` over the events in ``(t - window, t]`` (``count`` needs no column)."""

    function: Literal["count", "sum", "mean", "min", "max"]
    column: str | None = None
    window: str
    name: str | None = Field(default=None, pattern=_NAME)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError(f"window must be positive, got {value!r}")
        return value

    @model_validator(mode="after")
    def _needs_column(self) -> AggregationConfig:
        if self.function != "count" and self.column is None:
            raise ValueError(f"'{self.function}' needs a 'column' to aggregate")
        return self

    @property
    def feature_name(self) -> str:
        """The feature's name: ``name``, else ``<column>_<function>_<window>``."""
        if self.name:
            return self.name
        base = "count" if self.column is None else f"{self.column}_{self.function}"
        return f"{base}_{self.window.strip()}"


class FeatureViewConfig(Frozen):
    """A feature view: entity keys, an event timestamp, a source, a TTL and its features.

    The source is a snapshot (``snapshot: <sha256>``) or a :class:`SourceConfig` (Parquet
    path or glob, CSV, SQL ``url`` + ``query``, DuckDB ``query``). ``features`` lists source
    columns (latest value at or before the entity's time, within ``ttl``) and aggregations over
    trailing windows. With ``created_timestamp``, the join is bitemporal: a row is used only
    once it was created.
    """

    name: str = Field(pattern=_NAME)
    entities: list[str] = Field(min_length=1)
    timestamp: str
    created_timestamp: str | None = None
    ttl: str = "0"
    source: SourceConfig | None = None
    snapshot: str | None = Field(default=None, pattern=r"^[0-9a-f]{6,64}$")
    features: list[str | AggregationConfig] = Field(min_length=1)
    description: str = ""

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FeatureViewConfig:
        if (self.source is None) == (self.snapshot is None):
            raise ValueError("give exactly one of 'source' and 'snapshot'")
        names = self.feature_names()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; {dupes} repeat (set 'name:')")
        clash = sorted(set(names) & set(self.entities))
        if clash:
            raise ValueError(f"{clash} are entity keys, not features")
        return self

    def feature_names(self) -> list[str]:
        """The view's feature names, in declaration order."""
        return [f if isinstance(f, str) else f.feature_name for f in self.features]

    @property
    def ttl_seconds(self) -> int:
        """The TTL in seconds (0: no bound)."""
        return parse_duration(self.ttl)
