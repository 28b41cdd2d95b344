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
    strategy: Literal["mean", "median", "mode", "most_frequent", "constant"] = Field(
        default="median",
        description="mean, median, mode (the most frequent value; most_frequent is an alias) or "
        "constant.",
    )
    fill_value: float | str | None = Field(
        default=None,
        description="The constant (default 0 for numbers, __missing__ for strings).",
    )
    indicator: bool = Field(
        default=False,
        description="Also output <column>:missing, 1.0 where the value was missing.",
    )


class ClipStep(_StepParams):
    lower: float | None = Field(
        default=None,
        description="A fixed lower bound.",
    )
    upper: float | None = Field(
        default=None,
        description="A fixed upper bound.",
    )
    lower_quantile: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Fit the lower bound as this quantile (0-1) of the training values.",
    )
    upper_quantile: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Fit the upper bound as this quantile (0-1) of the training values.",
    )


class BucketizeStep(_StepParams):
    strategy: Literal["quantile", "fixed"] = Field(
        default="quantile",
        description="quantile (n_bins buckets of about equal counts) or fixed (at boundaries).",
    )
    n_bins: int = Field(
        default=10,
        ge=2,
        description="Number of quantile buckets.",
    )
    boundaries: list[float] | None = Field(
        default=None,
        description="The sorted inner edges of the buckets (strategy: fixed).",
    )
    encode: Literal["ordinal", "onehot"] = Field(
        default="ordinal",
        description="ordinal (one column: the bucket's index) or onehot (one column per bucket).",
    )


class OneHotStep(_StepParams):
    max_categories: int = Field(
        default=50,
        ge=1,
        description="The most frequent categories kept; rarer ones share an other column.",
    )
    unseen: Literal["auto", "other", "ignore", "error"] = Field(
        default="auto",
        description="Where a value outside the kept categories goes. auto: the other column if "
        "rare categories were folded into it, else nowhere (all zeros); other: always "
        "an other column; ignore: never one; error: a value never seen in training is "
        "an error.",
    )


class OrdinalStep(_StepParams):
    unknown_value: float = Field(
        default=-1.0,
        description="The output for a value never seen in training (missing stays NaN).",
    )


class HashStep(_StepParams):
    n_features: int = Field(
        default=32,
        ge=1,
        description="Number of hash columns.",
    )
    seed: int = Field(
        default=0,
        description="The hash seed.",
    )


class TargetEncodeStep(_StepParams):
    smoothing: float = Field(
        default=20.0,
        ge=0,
        description="Weight of the prior (the target's mean), in rows.",
    )
    folds: int = Field(
        default=5,
        ge=2,
        description="Folds of the out-of-fold encodings of the training rows.",
    )
    seed: int = Field(
        default=0,
        description="Seeds the fold assignment.",
    )


class CrossStep(_StepParams):
    separator: str = Field(
        default="|",
        description="Joins the parts into one category.",
    )


_DatePart = Literal["year", "month", "day", "dayofweek", "hour", "minute", "dayofyear"]


class DatetimeStep(_StepParams):
    parts: list[_DatePart] | None = Field(
        default=None,
        description="Parts output as numbers (default year, month, day, hour; dayofweek counts "
        "Monday as 0).",
    )
    cyclical: list[_DatePart] | None = Field(
        default=None,
        description="Parts output as sin and cos of their cycle (default month, dayofweek, hour).",
    )


class TfIdfStep(_StepParams):
    max_features: int = Field(
        default=100,
        ge=1,
        description="Vocabulary size: the most frequent terms in the training text.",
    )
    min_df: int = Field(
        default=1,
        ge=1,
        description="Training documents a term must appear in at least.",
    )
    lowercase: bool = Field(
        default=True,
        description="Lower-case the text before splitting it into terms.",
    )
    sublinear_tf: bool = Field(
        default=False,
        description="Use 1 + log(tf) instead of raw term counts.",
    )


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

    columns: list[str] = Field(
        min_length=1,
        description="The columns this chain applies to (or column: x for one).",
    )
    steps: list[TransformStep] = Field(
        min_length=1,
        description="The steps in order, each {kind: ..., parameters}.",
    )

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

    function: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="A @keel.feature function as module:function, importable from the project "
        "directory.",
    )
    inputs: list[str] = Field(
        min_length=1,
        description="The columns passed to it, in order.",
    )
    output: str = Field(
        min_length=1,
        description="The new column's name.",
    )
    type: Literal["float", "int", "string", "bool"] = Field(
        default="float",
        description="The new column's type.",
    )


class FeaturesConfig(Frozen):
    """The feature pipeline: defaults per column type, declared chains, custom features.

    Columns without a declared chain get the defaults: numbers are imputed (numeric_impute)
    and standardized (scale); strings are imputed (categorical_impute) and one-hot encoded
    (max_categories).
    """

    numeric_impute: Literal["mean", "median", "constant"] = Field(
        default="median",
        description="How the default chain fills missing numbers (constant: 0).",
    )
    categorical_impute: Literal["most_frequent", "constant"] = Field(
        default="most_frequent",
        description="How the default chain fills missing strings (constant: __missing__).",
    )
    scale: Literal["standard", "none"] = Field(
        default="standard",
        description="standard: the default chain standardizes numbers (mean 0, standard deviation "
        "1); none: leaves them as they are.",
    )
    max_categories: int = Field(
        default=50,
        ge=2,
        description="The default one-hot encoding keeps this many of a column's most frequent "
        "categories; the rest share an other column.",
    )
    transforms: list[TransformConfig] = Field(default_factory=list)
    custom: list[CustomFeatureConfig] = Field(default_factory=list)
    views: list[str] = Field(
        default_factory=list,
        description="Features of feature views to join onto the training and test rows, as "
        "view:feature or view:*.",
    )
    entity_timestamp: str | None = Field(
        default=None,
        description="The column giving each training row's point in time for those joins "
        "(default: the view's timestamp column).",
    )

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

    function: Literal["count", "sum", "mean", "min", "max"] = Field(
        description="The aggregation over the window.",
    )
    column: str | None = Field(
        default=None,
        description="The source column aggregated (every function but count needs one).",
    )
    window: str = Field(
        description="The trailing window: 30s, 15m, 12h, 7d, 2w.",
    )
    name: str | None = Field(
        default=None,
        pattern=_NAME,
        description="The feature's name (default <column>_<function>_<window>).",
    )

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

    name: str = Field(
        pattern=_NAME,
        description="The view's name, used in view:feature references.",
    )
    entities: list[str] = Field(
        min_length=1,
        description="The entity key columns.",
    )
    timestamp: str = Field(
        description="The event-time column: when each value became true.",
    )
    created_timestamp: str | None = Field(
        default=None,
        description="When each row was written: joins then use a row only once it existed "
        "(bitemporal).",
    )
    ttl: str = Field(
        default="0",
        description="How old a value may be at the entity's time, e.g. 2d (0: no limit).",
    )
    source: SourceConfig | None = None
    snapshot: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{6,64}$",
        description="A data snapshot's sha256 (or a prefix of 6+ digits) as the source, instead "
        "of source.",
    )
    features: list[str | AggregationConfig] = Field(
        min_length=1,
        description="Source columns (the latest value at or before the entity's time, within ttl) "
        "and aggregations over trailing windows.",
    )
    description: str = Field(
        default="",
        description="Free text, shown by keel features list.",
    )

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
