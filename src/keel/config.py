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
    field_validator,
    model_validator,
)

from keel.errors import ConfigError

__all__ = [
    "ENVIRONMENT",
    "DataConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "IncrementalConfig",
    "KeelConfig",
    "LightGBMParams",
    "ModelConfig",
    "MonitorConfig",
    "ServeConfig",
    "SourceConfig",
    "StoreConfig",
    "config_hash",
    "load_config",
]

CONFIG_FILE = "keel.yaml"

#: Environment variables Keel reads, and what each overrides. Read at load time, never at import.
ENVIRONMENT: dict[str, str] = {
    "KEEL_ENV": "name of the overlay file keel.<env>.yaml merged over keel.yaml",
    "KEEL_DB_URL": "metadata store URL (any SQLAlchemy URL); default sqlite:///<project>/.keel/keel.db",
    "KEEL_ARTIFACTS": "artifact store root (path or fsspec URL); default <project>/.keel/artifacts",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


class FeaturesConfig(_Frozen):
    """The feature pipeline: imputation, scaling and one-hot encoding."""

    numeric_impute: Literal["mean", "median", "constant"] = "median"
    categorical_impute: Literal["most_frequent", "constant"] = "most_frequent"
    scale: Literal["standard", "none"] = "standard"
    max_categories: int = Field(default=50, ge=2)


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
    """The model to train and register."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    flavor: Literal["lightgbm"] = "lightgbm"
    task: Literal["binary"] = "binary"
    params: LightGBMParams = Field(default_factory=LightGBMParams)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    early_stopping_rounds: int | None = Field(default=50, ge=1)
    seed: int = 0


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
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

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
