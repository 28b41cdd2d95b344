"""keel.yaml -> typed, frozen configuration.

Loading reads ``keel.yaml``, deep-merges ``keel.<env>.yaml`` on top when ``KEEL_ENV`` is set,
expands ``${VAR}`` / ``${VAR:-default}`` from the environment, and validates the result into
frozen pydantic models that forbid unknown keys. Every error names the file and line, the bad
key and the closest valid key::

    keel.yaml:14: unknown key 'learning_rte' in model.params. Did you mean 'learning_rate'?

Environment overrides live in one typed table (:data:`ENVIRONMENT`), read at load time.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from keel.errors import ConfigError

__all__ = [
    "ENVIRONMENT",
    "AggregationConfig",
    "AutoMLConfig",
    "CustomFeatureConfig",
    "DataConfig",
    "EvaluateConfig",
    "FeatureViewConfig",
    "FeaturesConfig",
    "IncrementalConfig",
    "KeelConfig",
    "LightGBMParams",
    "ModelConfig",
    "MonitorConfig",
    "ResourcesConfig",
    "SearchConfig",
    "SearchParam",
    "ServeConfig",
    "SourceConfig",
    "SplitConfig",
    "StoreConfig",
    "TransformConfig",
    "config_hash",
    "load_config",
]

CONFIG_FILE = "keel.yaml"

#: Environment variables Keel reads, and what each overrides. Read at load time, never at import.
ENVIRONMENT: dict[str, str] = {
    "KEEL_ENV": "name of the overlay file keel.<env>.yaml merged over keel.yaml",
    "KEEL_DB_URL": "metadata store URL (any SQLAlchemy URL); default sqlite:///<project>/.keel/keel.db",
    "KEEL_ARTIFACTS": "artifact store root (path or fsspec URL); default <project>/.keel/artifacts",
    "KEEL_ONLINE_STORE": "online feature store URL: sqlite:///path or redis://host:port/db; "
    "default sqlite:///<project>/.keel/online.db",
    "KEEL_EXECUTOR": "where search trials run: local (processes) or ray; overrides executor:",
    "KEEL_RAY_ADDRESS": "Ray cluster address (ray://host:10001, auto); overrides ray_address:",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class IncrementalConfig(_Frozen):
    """Incremental ingestion: read only rows whose ``column`` is above the last watermark."""

    column: str


SourceFormat = Literal["csv", "parquet", "jsonl", "sql", "duckdb"]


class SourceConfig(_Frozen):
    """Where a table comes from and how to parse it.

    ``path`` (csv, parquet, jsonl) may be a glob. CSV options left unset (``header``,
    ``delimiter``, ``quote``, ``escape``, ``encoding``) are detected from the file. ``sql`` reads
    ``query`` from the SQLAlchemy ``url``; ``duckdb`` runs ``query`` in DuckDB.
    """

    path: str | None = None
    format: SourceFormat = "csv"
    header: bool | None = None
    columns: list[str] | None = None
    delimiter: str | None = None
    quote: str | None = None
    escape: str | None = None
    comment: str | None = None
    encoding: str | None = None
    skip_rows: int = Field(default=0, ge=0)
    na_values: list[str] = Field(default_factory=list)
    replace: dict[str, dict[str, str]] = Field(default_factory=dict)
    types: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    query: str | None = None
    chunk_size: int = Field(default=100_000, ge=1)
    max_bad_rows: int | float = 0
    incremental: IncrementalConfig | None = None

    @field_validator("delimiter", "quote", "escape", "comment")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"must be one character, got {value!r}")
        return value

    @field_validator("max_bad_rows")
    @classmethod
    def _bad_rows_limit(cls, value: int | float) -> int | float:
        if isinstance(value, float) and not 0.0 <= value < 1.0:
            raise ValueError(
                f"a fraction must be in [0, 1), got {value!r}; write a whole number for a count"
            )
        if value < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return value

    @model_validator(mode="after")
    def _where_from(self) -> SourceConfig:
        needs = {"sql": ("url", "query"), "duckdb": ("query",)}.get(self.format, ("path",))
        missing = [key for key in needs if getattr(self, key) is None]
        if missing:
            keys = " and ".join(f"'{key}'" for key in needs)
            raise ValueError(f"a {self.format} source needs {keys}; add {missing[0]}")
        return self


class DataConfig(_Frozen):
    """The training data, the optional held-out test data, and the roles of columns."""

    train: SourceConfig
    test: SourceConfig | None = None
    target: str
    positive_label: str | None = None
    sensitive: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    max_null_fraction: float = Field(default=0.05, ge=0.0, le=1.0)


class _StepParams(_Frozen):
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


class TransformStep(_Frozen):
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
    name = _dotted(tuple(error["loc"]))
    if error["type"] == "extra_forbidden":
        known = list(model.model_fields)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        listed = ", ".join(known) or "none"
        hint = f"Did you mean '{close[0]}'?" if close else f"Parameters: {listed}"
        return f"unknown parameter '{name}' for {kind}. {hint}"
    return f"{kind}: {name}: {error['msg']} (got {error.get('input')!r})"


class TransformConfig(_Frozen):
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


class CustomFeatureConfig(_Frozen):
    """A ``@keel.feature`` function: ``{function: mypkg.feats:age_bucket, inputs: [age], ...}``."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    inputs: list[str] = Field(min_length=1)
    output: str = Field(min_length=1)
    type: Literal["float", "int", "string", "bool"] = "float"


class FeaturesConfig(_Frozen):
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


class LightGBMParams(_Frozen):
    """LightGBM hyper-parameters Keel accepts (scikit-learn names)."""

    n_estimators: int = Field(default=400, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    max_depth: int = -1
    min_child_samples: int = Field(default=20, ge=1)
    subsample: float = Field(default=1.0, gt=0, le=1)
    subsample_freq: int = Field(default=0, ge=0)
    colsample_bytree: float = Field(default=1.0, gt=0, le=1)
    reg_alpha: float = Field(default=0.0, ge=0)
    reg_lambda: float = Field(default=0.0, ge=0)
    min_split_gain: float = Field(default=0.0, ge=0)
    class_weight: Literal["balanced"] | None = None


class ModelConfig(_Frozen):
    """The model to train and register.

    ``params`` are checked here for ``lightgbm`` (:class:`LightGBMParams`, with did-you-mean on
    a misspelt key); for the other flavors they are a free mapping the trainer checks
    (``sklearn`` takes ``estimator: module.Class`` plus the estimator's keyword arguments).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    flavor: Literal["lightgbm", "xgboost", "sklearn", "mlp", "auto"] = "lightgbm"
    task: Literal["binary", "multiclass", "regression"] = "binary"
    params: LightGBMParams | dict[str, Any] = Field(default_factory=dict, validate_default=True)
    sample_weight: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    early_stopping_rounds: int | None = Field(default=50, ge=1)
    seed: int = 0

    @field_validator("params", mode="wrap")
    @classmethod
    def _params_for_flavor(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> LightGBMParams | dict[str, Any]:
        if info.data.get("flavor", "lightgbm") == "lightgbm":
            # a ValidationError raised here keeps its locations: model.params.<key>
            return LightGBMParams.model_validate(value)
        if isinstance(value, BaseModel):
            return value.model_dump()
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError("params must be a mapping of names to values")
        return dict(value)

    def param_mapping(self) -> dict[str, Any]:
        """``params`` as a plain mapping, whatever the flavor."""
        params = self.params
        return params.model_dump() if isinstance(params, LightGBMParams) else dict(params)


class SplitConfig(_Frozen):
    """How the training data is split for validation (early stopping) and cross-validation.

    ``auto`` is stratified for classification and random for regression; ``time`` puts every
    validation row after every training row by ``column``; ``group`` keeps each value of
    ``column`` on one side. ``folds`` >= 2 adds k-fold cross-validation with per-fold metrics.
    """

    method: Literal["auto", "random", "stratified", "time", "group"] = "auto"
    column: str | None = None
    folds: int | None = Field(default=None, ge=2, le=50)

    @model_validator(mode="after")
    def _column_when_needed(self) -> SplitConfig:
        if self.method in ("time", "group") and not self.column:
            raise ValueError(f"split method '{self.method}' needs 'column'; add column: <name>")
        return self


_GATE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<|==)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


class EvaluateConfig(_Frozen):
    """Evaluation slices and the gates a new version must pass to take the alias."""

    slices: list[str] = Field(default_factory=list)
    gates: list[str] = Field(default_factory=list)

    @field_validator("gates")
    @classmethod
    def _gate_syntax(cls, gates: list[str]) -> list[str]:
        for gate in gates:
            if not _GATE.match(gate):
                raise ValueError(
                    f"gate {gate!r} is not '<metric> <op> <number>' (op one of >=, <=, >, <, ==),"
                    " e.g. 'roc_auc >= 0.9'"
                )
        return gates

    def parsed_gates(self) -> list[tuple[str, str, float]]:
        """Gates as ``(metric, operator, threshold)`` triples."""
        out = []
        for gate in self.gates:
            match = _GATE.match(gate)
            assert match is not None  # checked by the validator
            out.append((match.group(1), match.group(2), float(match.group(3))))
        return out


class RegistryConfig(_Frozen):
    """Which alias a version that passes the gates takes."""

    alias: str = "production"


class ServeConfig(_Frozen):
    """The online server's address."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_predictions: bool = True


class PSIThresholds(_Frozen):
    """PSI verdict thresholds: below ``warn`` is stable, at or above ``alert`` is drift."""

    warn: float = Field(default=0.1, gt=0)
    alert: float = Field(default=0.25, gt=0)


class MonitorConfig(_Frozen):
    """Drift monitoring of served inputs against the training statistics."""

    psi: PSIThresholds = Field(default_factory=PSIThresholds)
    min_rows: int = Field(default=100, ge=1)


class SearchParam(_Frozen):
    """One dimension of a search space: an int or float range, or categorical choices."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[str | int | float | bool | None] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError(
                    "a categorical parameter takes only 'choices', not low/high/log/step"
                )
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs both 'low' and 'high'")
        if self.choices is not None:
            raise ValueError(f"'choices' is for categorical parameters, not {self.type}")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(
                f"log: true needs low > 0 (got low {self.low:g}); raise low or drop log"
            )
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log: true' cannot be combined; keep one")
        if self.type == "int":
            integral = [v for v in (self.low, self.high, self.step) if v is not None]
            if any(v != int(v) for v in integral):
                raise ValueError("an int parameter needs whole-number low, high and step")
        return self


class SearchConfig(_Frozen):
    """Hyper-parameter search with Optuna (runs in the ``tune`` step, before ``train``).

    The budget is ``trials`` completed trials in the study (resumed studies count the trials
    already done) and/or ``timeout_seconds`` of wall time per invocation; with neither, 20 trials.
    ``metric`` defaults per task (binary roc_auc, multiclass log_loss, regression r2).
    """

    trials: int | None = Field(default=None, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    metric: (
        Literal["roc_auc", "pr_auc", "accuracy", "log_loss", "f1", "r2", "rmse", "mae"] | None
    ) = None
    direction: Literal["maximize", "minimize"] | None = None
    workers: int = Field(default=1, ge=1, le=256)
    space: dict[str, SearchParam] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grid_needs_steps(self) -> SearchConfig:
        if self.sampler == "grid":
            floats = [n for n, p in self.space.items() if p.type == "float" and p.step is None]
            if floats:
                raise ValueError(
                    f"sampler: grid needs a finite grid; give float parameter(s) {floats} a "
                    "'step', or make them categorical"
                )
        return self


AutoMLFamily = Literal["lightgbm", "xgboost", "linear", "random_forest", "mlp"]


class AutoMLConfig(_Frozen):
    """``model.flavor: auto``: which families compete, and the total wall-time budget."""

    time_budget_seconds: float = Field(default=120.0, gt=0)
    families: list[AutoMLFamily] = Field(default_factory=lambda: list(get_args(AutoMLFamily)))


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


class ResourcesConfig(_Frozen):
    """What one trial asks of the executor (Ray): CPUs, GPUs and memory (bytes, or '4GB').

    ``workers`` is the number of Ray Train workers for the final fit of LightGBM / XGBoost
    (with ``executor: ray``): above 1 the training rows are split across that many workers and
    each reserves these cpus / gpus / memory, so one model can use more than one machine.
    """

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)
    memory: int | str | None = None
    workers: int = Field(default=1, ge=1)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and not _MEMORY.match(value):
            raise ValueError(f"memory {value!r} is not a size; write bytes or e.g. '512MB', '4GB'")
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"memory must be positive, got {value}")
        return value

    def memory_bytes(self) -> int | None:
        """``memory`` in bytes (``'4GB'`` is 4 * 1024**3), or None when not set."""
        if self.memory is None or isinstance(self.memory, int):
            return self.memory
        match = _MEMORY.match(self.memory)
        assert match is not None  # checked by the validator
        unit = (match.group(2) or "B").upper()[0]
        scale = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[unit]
        return int(float(match.group(1)) * scale)


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


class AggregationConfig(_Frozen):
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


class FeatureViewConfig(_Frozen):
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


class StoreConfig(_Frozen):
    """Where metadata and artifacts live; ``KEEL_DB_URL`` and ``KEEL_ARTIFACTS`` override."""

    db_url: str | None = None
    artifacts: str | None = None


class KeelConfig(_Frozen):
    """A whole keel.yaml."""

    project: str
    data: DataConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    feature_views: list[FeatureViewConfig] = Field(default_factory=list)

    @field_validator("feature_views")
    @classmethod
    def _unique_views(cls, views: list[FeatureViewConfig]) -> list[FeatureViewConfig]:
        names = [v.name for v in views]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature view names must be unique; {dupes} repeat")
        return views

    search: SearchConfig | None = None
    automl: AutoMLConfig = Field(default_factory=AutoMLConfig)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    def resolve_path(self, root: Path, path: str) -> Path:
        """A data path from the config, relative to the project root unless absolute."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else root / candidate


def config_hash(value: BaseModel | Mapping[str, Any]) -> str:
    """A stable sha256 of a config (or a section of one): canonical JSON, sorted keys."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --- loading ---------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path = CONFIG_FILE, *, env: str | None = None) -> KeelConfig:
    """Load and validate keel.yaml, with the ``keel.<env>.yaml`` overlay when one is chosen.

    Args:
        path: The keel.yaml file, or the directory that holds it.
        env: Overlay name; defaults to ``$KEEL_ENV``.

    Returns:
        The frozen, validated configuration.

    Raises:
        ConfigError: The file is missing or unreadable, or a key or value is wrong; the message
            names file:line and the fix.
    """
    file = Path(path)
    if file.is_dir():
        file = file / CONFIG_FILE
    data, lines = _read_yaml(file)
    env = env if env is not None else os.environ.get("KEEL_ENV") or None
    if env:
        overlay = file.with_name(f"{file.stem}.{env}{file.suffix}")
        if not overlay.exists():
            raise ConfigError(
                f"KEEL_ENV={env} but {overlay} does not exist. Create it or unset KEEL_ENV."
            )
        extra, extra_lines = _read_yaml(overlay)
        data = _merge(data, extra)
        lines.update(extra_lines)
    data = _interpolate(data, (), lines)
    try:
        return KeelConfig.model_validate(data)
    except ValidationError as exc:
        first = _dotted(tuple(exc.errors()[0]["loc"])) if exc.errors() else None
        raise ConfigError(_explain(exc, lines, file), field=first) from exc


def _read_yaml(file: Path) -> tuple[dict[str, Any], dict[Path_, str]]:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        msg = f"{file}: no such file. Run 'keel init' to create a project, or pass --project."
        raise ConfigError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read it ({exc}).") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}. Fix the syntax there.") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: the top level must be a mapping of keys, e.g. 'project: x'.")
    lines: dict[Path_, str] = {}
    if node is not None:
        _index_lines(node, (), file.name, lines)
    return data, lines


def _index_lines(node: yaml.Node, at: Path_, name: str, out: dict[Path_, str]) -> None:
    out[at] = f"{name}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*at, str(key.value))
            out[child] = f"{name}:{key.start_mark.line + 1}"
            _index_lines(value, child, name, out)
            out[child] = f"{name}:{key.start_mark.line + 1}"
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*at, i), name, out)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _interpolate(value: Any, at: Path_, lines: dict[Path_, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*at, str(k)), lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*at, i), lines) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def expand(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            # shell semantics: ':-' also replaces a variable that is set but empty
            if found or (found is not None and default is None):
                return found
            if default is not None:
                return default
            where = _where(at, lines)
            msg = (
                f"{where}: environment variable {name} is not set (used in {_dotted(at)}). "
                f"Set it, or write ${{{name}:-default}} to give a default."
            )
            raise ConfigError(msg, field=_dotted(at))

        return _VAR.sub(expand, value)
    return value


def _explain(exc: ValidationError, lines: dict[Path_, str], file: Path) -> str:
    messages = []
    for error in exc.errors():
        loc: Path_ = tuple(error["loc"])
        where = _where(loc, lines) if lines else str(file)
        dotted = _dotted(loc[:-1]) if loc else ""
        key = str(loc[-1]) if loc else ""
        if error["type"] == "extra_forbidden":
            known = _fields_at(loc[:-1])
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            section = f" in {dotted}" if dotted else ""
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(known)}."
            messages.append(f"{where}: unknown key '{key}'{section}.{hint}")
        elif error["type"] == "missing":
            messages.append(f"{where}: missing required key '{_dotted(loc)}'. Add it.")
        else:
            got = error.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            messages.append(f"{where}: {_dotted(loc)}: {error['msg']}{shown}.")
    return "\n".join(messages)


def _where(loc: Path_, lines: Mapping[Path_, str]) -> str:
    for n in range(len(loc), -1, -1):
        found = lines.get(loc[:n])
        if found is not None:
            return found
    return CONFIG_FILE


def _dotted(loc: Path_) -> str:
    return ".".join(str(part) for part in loc)


def _fields_at(loc: Path_) -> list[str]:
    """The valid keys of the model at a location, for did-you-mean suggestions."""
    model: Any = KeelConfig
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None or get_args(annotation):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
