"""Schema: the reviewed contract for training data and serving requests.

Inferred from statistics, written to ``schema.yaml`` for review, and read back from there on
later runs so a reviewer's edits (a widened range, an accepted category) take effect. How two
schemas differ is :mod:`keel.validate.evolution`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from keel.config.loading import yaml_line
from keel.errors import ConfigError

__all__ = [
    "AnomalyKind",
    "ColumnSchema",
    "Schema",
    "SeverityLevel",
    "guess_role",
    "infer_schema",
    "pii_name",
    "read_schema",
    "schema_notes",
    "schema_to_yaml",
    "write_schema",
]

Role = Literal["feature", "target", "timestamp", "entity", "sensitive", "pii", "ignored"]
#: The roles a column can have had before keel.yaml's ``data.drop`` made it ``ignored``.
DroppableRole = Literal["feature", "timestamp", "entity", "sensitive", "pii"]
ColumnType = Literal["int", "float", "string", "bool", "date", "timestamp"]
#: How a number sent for a timestamp column is read: seconds, milliseconds or microseconds
#: since 1970-01-01 UTC (:mod:`keel.validate.epochs`).
TimeUnit = Literal["s", "ms", "us"]
SeverityLevel = Literal["error", "warning"]
AnomalyKind = Literal[
    "missing_column",
    "unexpected_column",
    "type_mismatch",
    "null_fraction",
    "out_of_range",
    "unseen_category",
    "distribution_shift",
    "duplicate_rows",
    "constant_column",
    "label_shift",
    "label_noise",
    "outliers",
    "row_count",
    "malformed_row",
    "id_feature",
]


_THRESHOLDS = (
    "psi_warn",
    "psi_alert",
    "js_warn",
    "js_error",
    "wasserstein_warn",
    "wasserstein_error",
)


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    """One column's contract; checked when built (a bad value raises ConfigError naming it)."""

    type: ColumnType
    unit: TimeUnit | None = None  # timestamps: numbers are unix times in this unit
    role: Role = "feature"
    role_before_drop: Role | None = None  # the role keel.yaml's data.drop took away
    nullable: bool = True
    max_null_fraction: float = 1.0
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    true_values: list[str] | None = None
    false_values: list[str] | None = None
    pii: bool | None = None
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    js_warn: float = 0.1
    js_error: float = 0.2
    wasserstein_warn: float = 0.1
    wasserstein_error: float = 0.5
    severities: dict[AnomalyKind, SeverityLevel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        checks: list[tuple[str, Any]] = [
            ("type", _choice(ColumnType)),
            ("unit", _optional(_choice(TimeUnit))),
            ("role", _choice(Role)),
            ("role_before_drop", _optional(_choice(DroppableRole))),
            ("nullable", _boolean),
            ("max_null_fraction", _number(0.0, 1.0)),
            ("min", _optional(_number())),
            ("max", _optional(_number())),
            ("categories", _optional(_texts)),
            ("true_values", _optional(_texts)),
            ("false_values", _optional(_texts)),
            ("pii", _optional(_boolean)),
            *((name, _number(0.0)) for name in _THRESHOLDS),
            ("severities", _severities),
        ]
        for name, check in checks:
            try:
                object.__setattr__(self, name, check(getattr(self, name)))
            except _Invalid as exc:
                problems.append(f"{name}: {exc}")
        spelled = self.true_values is not None or self.false_values is not None
        if spelled and self.type != "bool":
            problems.append(
                f"true_values/false_values: only a bool column has them, not {self.type}"
            )
        if self.unit is not None and self.type != "timestamp" and not problems:
            problems.append(
                f"unit: only a timestamp column reads numbers as unix time, not {self.type}; "
                "remove unit, or make the type timestamp"
            )
        if problems:
            raise ConfigError("; ".join(problems), field=problems[0].split(":")[0])

    @classmethod
    def from_dict(cls, data: Any) -> ColumnSchema:
        """A column from its ``schema.yaml`` mapping; unknown keys are errors."""
        return cls(**_keys(data, _COLUMN_FIELDS, required=("type",)))

    def to_dict(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        """Every field (or only those away from their defaults), in declaration order."""
        out = {}
        for name in _COLUMN_FIELDS:
            value = getattr(self, name)
            if not exclude_defaults or name == "type" or value != _COLUMN_DEFAULTS[name]:
                listed = name in ("categories", "true_values", "false_values") and value
                out[name] = list(value) if listed else value
        if "severities" in out:
            out["severities"] = dict(self.severities)
        return out


@dataclass(frozen=True, slots=True)
class Schema:
    """Columns by name, in file order."""

    columns: dict[str, ColumnSchema]
    severities: dict[AnomalyKind, SeverityLevel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.columns, dict) or not all(
            isinstance(c, ColumnSchema) for c in self.columns.values()
        ):
            msg = "columns: expected a mapping of column name to ColumnSchema"
            raise ConfigError(msg, field="columns")
        try:
            object.__setattr__(self, "severities", _severities(self.severities))
        except _Invalid as exc:
            raise ConfigError(f"severities: {exc}", field="severities") from None

    @classmethod
    def from_dict(cls, data: Any) -> Schema:
        """A schema from its ``schema.yaml`` (or ``--format json``) mapping.

        Raises:
            ConfigError: Names the key, e.g. ``columns.age.type: 'integer' is not one of ...``.
        """
        body = _keys(data, ("columns", "severities"), required=("columns",))
        columns = body["columns"]
        if not isinstance(columns, dict):
            raise ConfigError(f"columns: expected a mapping, got {type(columns).__name__}")
        built: dict[str, ColumnSchema] = {}
        for name, column in columns.items():
            try:
                built[str(name)] = ColumnSchema.from_dict(column)
            except ConfigError as exc:
                where = f"columns.{name}"
                messages = [f"{where}.{part}" for part in exc.message.split("; ")]
                field = f"{where}.{exc.field}" if exc.field else where
                raise ConfigError("; ".join(messages), field=field) from None
        return cls(columns=built, severities=body.get("severities") or {})

    def to_dict(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        """``{"columns": {name: {...}}, "severities": {...}}``, JSON- and YAML-able."""
        out: dict[str, Any] = {
            "columns": {
                n: c.to_dict(exclude_defaults=exclude_defaults) for n, c in self.columns.items()
            }
        }
        if self.severities or not exclude_defaults:
            out["severities"] = dict(self.severities)
        return out

    def severity_of(
        self, kind: AnomalyKind, default: SeverityLevel, column: str | None = None
    ) -> SeverityLevel:
        """Severity of ``kind``: the column's override, else the schema-wide one, else default."""
        if column is not None and column in self.columns:
            own = self.columns[column].severities.get(kind)
            if own is not None:
                return own
        return self.severities.get(kind, default)

    def features(self) -> list[str]:
        """Names of the columns the model sees (features and sensitive attributes)."""
        return [n for n, c in self.columns.items() if c.role in ("feature", "sensitive")]

    def target(self) -> str | None:
        """The target column's name, if the schema has one."""
        return next((n for n, c in self.columns.items() if c.role == "target"), None)


# --- field checks: plain functions, so validating data never imports pydantic -----------------


class _Invalid(ValueError):
    """One field's problem; the caller adds where it is."""


_COLUMN_FIELDS = tuple(f.name for f in fields(ColumnSchema))
_COLUMN_DEFAULTS: dict[str, Any] = {
    f.name: f.default_factory() if f.default_factory is not MISSING else f.default
    for f in fields(ColumnSchema)
}


def _keys(data: Any, known: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping with keys {', '.join(known)}, got {data!r}")
    problems = []
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(known)}"
            problems.append(f"{key}: unknown key ({hint})")
    problems += [f"{key}: required" for key in required if key not in data]
    if problems:
        raise ConfigError("; ".join(problems), field=problems[0].split(":")[0])
    return {str(k): v for k, v in data.items()}


def _choice(kind: Any) -> Any:
    choices = get_args(kind)

    def check(value: Any) -> Any:
        if value not in choices:
            raise _Invalid(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {value!r}")
    return value


def _number(low: float | None = None, high: float | None = None) -> Any:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number, got {value!r}")
        number = float(value)
        if math.isnan(number) or (low is not None and number < low):
            raise _Invalid(f"must be >= {low}, got {value!r}")
        if high is not None and number > high:
            raise _Invalid(f"must be <= {high}, got {value!r}")
        return number

    return check


def _optional(check: Any) -> Any:
    return lambda value: None if value is None else check(value)


def _texts(value: Any) -> list[str]:
    """Category values as strings (an unquoted YAML ``1`` or ``true`` means the text)."""
    if not isinstance(value, list | tuple):
        raise _Invalid(f"expected a list of values, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool):
            out.append("true" if item else "false")  # as Arrow writes booleans as text
        elif isinstance(item, str | int | float):
            out.append(str(item))
        else:
            raise _Invalid(f"expected text values, got {item!r}")
    return out


def _severities(value: Any) -> dict[AnomalyKind, SeverityLevel]:
    if not isinstance(value, dict):
        raise _Invalid(f"expected a mapping of anomaly kind to error or warning, got {value!r}")
    kinds, levels = get_args(AnomalyKind), get_args(SeverityLevel)
    for kind, level in value.items():
        if kind not in kinds:
            close = difflib.get_close_matches(str(kind), kinds, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(kinds)}"
            raise _Invalid(f"unknown anomaly kind {kind!r} ({hint})")
        if level not in levels:
            raise _Invalid(f"{kind}: {level!r} is not one of error, warning")
    return dict(value)


def infer_schema(
    statistics: dict[str, Any],
    *,
    target: str | None = None,
    sensitive: list[str] | None = None,
    drop: list[str] | None = None,
    max_null_fraction: float = 0.05,
    units: Mapping[str, str] | None = None,
) -> Schema:
    """A schema from reference statistics: types, nullability, domains and guessed roles.

    Roles: ``target`` and ``sensitive`` as given, ``ignored`` for ``drop`` (with the role it
    would have had as ``role_before_drop``, restored when it leaves ``drop``); otherwise guessed
    where obvious (see :func:`guess_role`): ``timestamp`` for temporal columns, date strings and
    names like ``date`` or ``dteday``; ``entity`` for near-unique id-like columns; ``pii`` for
    e-mail, phone or SSN values (a name alone is only suggested: :func:`schema_notes`); else
    ``feature``. A text column of two boolean spellings (``Yes``/``No``) is ``bool`` with
    ``true_values``/``false_values``. Every guess is plain YAML to edit.

    Args:
        statistics: Output of :func:`keel.validate.statistics.compute_statistics`.
        target: The label column.
        sensitive: Columns to audit for fairness (still model inputs).
        drop: Columns the model must not see.
        max_null_fraction: Ceiling on the null fraction of nullable columns.
        units: Columns read from unix times (keel.yaml's ``unix_time``) -> their unit, kept
            as the timestamp column's ``unit`` so requests may send the same numbers.

    Returns:
        The schema, columns in the statistics' order.
    """
    sensitive_set, drop_set = set(sensitive or []), set(drop or [])
    rows = max(int(statistics["rows"]), 1)
    columns: dict[str, ColumnSchema] = {}
    for name, stats in statistics["columns"].items():
        role: Role
        if name == target:
            role = "target"
        elif name in sensitive_set:
            role = "sensitive"
        elif name in drop_set:
            role = "ignored"
        else:
            role = guess_role(name, stats)
        before = guess_role(name, stats) if role == "ignored" else None
        nulls = int(stats["nulls"])
        observed = nulls / rows
        ceiling = max(max_null_fraction, min(1.0, round(observed * 2 + 0.01, 4)))
        common: dict[str, Any] = {
            "role": role,
            "role_before_drop": before,
            "nullable": nulls > 0 or role != "target",
            "max_null_fraction": 0.0 if role == "target" else ceiling,
        }
        domain = _domain(stats)
        if role != "target":
            domain = _as_boolean(domain)
        if units and name in units and domain["type"] == "timestamp":
            domain["unit"] = units[name]
        columns[name] = ColumnSchema(**common, **domain)
    return Schema(columns=columns)


def _as_boolean(domain: dict[str, Any]) -> dict[str, Any]:
    """A text column holding exactly a pair of boolean spellings (Yes/No, y/n, true/false...)
    is a bool column that accepts those spellings."""
    from keel.validate.coerce import BOOLEAN_PAIRS

    categories = domain.get("categories")
    if domain["type"] != "string" or not categories or len(categories) != 2:
        return domain
    lowered = {c.lower(): c for c in categories}
    for true, false in BOOLEAN_PAIRS:
        if set(lowered) == {true, false}:
            return {"type": "bool", "true_values": [lowered[true]],
                    "false_values": [lowered[false]]}  # fmt: skip
    return domain


def _domain(stats: dict[str, Any]) -> dict[str, Any]:
    """Type plus range (numbers) or category set (low-cardinality strings and booleans)."""
    if stats["kind"] == "numeric":
        return {"type": stats["dtype"], "min": stats.get("min"), "max": stats.get("max")}
    if stats["dtype"] in ("date", "timestamp"):
        return {"type": stats["dtype"]}
    all_seen = stats["distinct"] <= len(stats["categories"])
    categories = sorted(stats["categories"]) if all_seen else None
    return {"type": stats["dtype"], "categories": categories}


_TIME_NAMES = re.compile(
    r"^(date|time|timestamp|datetime|dteday|ts|dt)$|[_\-\s](date|time|timestamp|ts|at)$",
    re.IGNORECASE,
)
_PII_NAMES = re.compile(
    r"e-?mail|phone|mobile|ssn|social.?security|passport|first.?name|last.?name|full.?name|"
    r"surname|street|address|ip.?addr|credit.?card|card.?number|birth.?date|date.?of.?birth|^dob$",
    re.IGNORECASE,
)
_PII_VALUES = (
    re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$"),  # e-mail
    re.compile(r"^\+?(?=(?:\D*\d){7,15}\D*$)[\d\s().-]+$"),  # phone: 7 to 15 digits
    re.compile(r"^\d{3}-\d{2}-\d{4}$"),  # US social security number
)
_DATE_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")
_ID_SUFFIXES = ("id", "key", "uuid", "guid")
NEAR_UNIQUE = 0.95
MIN_SEQUENCE = 100  # fewer values than this are no evidence of a row number


def pii_name(name: str) -> str | None:
    """The part of a column name that suggests personal data (``phone``, ``email``...), if any."""
    found = _PII_NAMES.search(name)
    return found[0] if found else None


def guess_role(name: str, stats: dict[str, Any]) -> Role:
    """The role a column obviously plays, from its name and statistics; else ``feature``.

    ``pii``: most top values look like e-mail addresses, phone or social security numbers. A
    name alone (``PhoneService``) is no evidence: :func:`pii_name` finds those, and the
    pipeline suggests a review instead of dropping the column.
    ``timestamp``: a date or timestamp type, a name like ``date``, ``dteday`` or ``created_at``,
    or top values that are ISO dates. ``entity``: near-unique (distinct >= 95% of the values)
    and either named like an id (ends with ``id`` or ``key``) or a dense integer sequence such
    as a row number.

    Args:
        name: The column name.
        stats: The column's statistics (``kind``, ``dtype``, ``distinct``, ``top``, ...).

    Returns:
        ``pii``, ``timestamp``, ``entity`` or ``feature``.
    """
    present = max(int(stats["count"]) - int(stats["nulls"]), 0)
    near_unique = present > 1 and int(stats.get("distinct", 0)) >= NEAR_UNIQUE * present
    text = stats["kind"] == "categorical" and stats.get("dtype") == "string"
    values = [str(v) for v in stats.get("top") or {}] if text else []
    if stats.get("dtype") in ("date", "timestamp") or _TIME_NAMES.search(name):
        return "timestamp"
    if _mostly(values, (_DATE_VALUE,)):  # before PII values: a date looks like a phone number
        return "timestamp"
    if _mostly(values, _PII_VALUES):
        return "pii"
    if near_unique and name.lower().endswith(_ID_SUFFIXES):
        return "entity"
    if near_unique and present >= MIN_SEQUENCE and stats.get("dtype") == "int":
        span = float(stats["max"]) - float(stats["min"]) + 1
        if span <= present / NEAR_UNIQUE:  # 1..n with few gaps: a row number
            return "entity"
    return "feature"


def schema_notes(schema: Schema, statistics: dict[str, Any]) -> list[str]:
    """What an inferred schema guessed that a reviewer should know, with the fix for each.

    Columns named like personal data but kept as inputs (``PhoneService``), columns left out
    because their values look like personal data, and number columns with blank or missing
    cells (read as missing, then imputed).
    """
    notes = []
    for name, col in schema.columns.items():
        stats = statistics["columns"].get(name, {})
        word = pii_name(name)
        if col.pii is False:
            pass
        elif col.role == "pii":
            notes.append(
                f"column '{name}' looks like personal data and is left out of the model; if it "
                f"is not, set 'role: feature' and 'pii: false' on it in {_SCHEMA_FILE}."
            )
        elif word is not None and col.role in ("feature", "sensitive"):
            notes.append(
                f"column '{name}' is named like personal data ('{word}') but its values do not "
                f"look like it, so it stays a model input. If it is personal data, set "
                f"'role: pii' on it in {_SCHEMA_FILE}; if not, set 'pii: false' to silence this."
            )
        nulls = int(stats.get("nulls", 0))
        if col.type in ("int", "float") and nulls and col.role in ("feature", "sensitive"):
            notes.append(
                f"column '{name}' is numeric with {nulls} blank or missing cells; they are read "
                "as missing values (imputed by the feature pipeline)."
            )
    return notes


_SCHEMA_FILE = "schema.yaml"


def _mostly(values: list[str], patterns: tuple[re.Pattern[str], ...]) -> bool:
    """At least 3 values and 80% of them match one of the patterns."""
    if len(values) < 3:
        return False
    return any(sum(bool(p.match(v)) for v in values) >= 0.8 * len(values) for p in patterns)


_HEADER = """\
# Inferred by keel; review and edit. It is the contract for data and requests.
# Roles: feature, target, timestamp, entity, sensitive, pii, ignored (only feature and sensitive
# columns reach the model). Drift thresholds per column, warn/error (defaults): psi 0.1/0.25
# (psi_alert), js 0.1/0.2 (base 2), wasserstein 0.1/0.5 (W1 in reference standard deviations);
# override with e.g. `js_warn: 0.05`. Severities per anomaly kind: `severities: {kind: warning}`.
# The same types, ranges and categories check every served request and scored file: a value
# that does not convert (type_mismatch) rejects its row unless its severity is warning. A bool
# column accepts true/false and its true_values/false_values (as seen in training, any case).
# A timestamp column with `unit: s` (or ms, us; from keel.yaml's unix_time) also accepts numbers
# of that unit since 1970-01-01 UTC, as the training data held them.
# `pii: false` marks a column reviewed as not personal data (silences the name-based note).
# `role_before_drop` is the role keel.yaml's data.drop took away: given back when the column
# leaves data.drop.
"""


def schema_to_yaml(schema: Schema) -> str:
    """The reviewable YAML text of a schema: defaults left out, a comment header on top."""
    import yaml  # here, not at import: validating data needs no YAML

    body: dict[str, Any] = {
        "columns": {n: c.to_dict(exclude_defaults=True) for n, c in schema.columns.items()}
    }
    if schema.severities:
        body["severities"] = dict(schema.severities)
    return _HEADER + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def write_schema(schema: Schema, path: Path) -> None:
    """Write ``schema.yaml`` atomically (temp file, fsync, rename).

    The temporary file is this writer's own (pid and a random part in its name), so two
    processes writing at once never share one; the last rename wins.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("x", encoding="utf-8") as handle:
            handle.write(schema_to_yaml(schema))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_schema(path: Path) -> Schema:
    """Read a reviewed ``schema.yaml``.

    Raises:
        ConfigError: The file is not valid YAML or not a valid schema; names the column and key.
    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        try:  # libyaml when PyYAML has it: the same values, ~10x faster
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            data = yaml.safe_load(text)  # raises again, worded by the pure-Python parser
        return Schema.from_dict(data)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the schema ({exc}).") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: invalid YAML ({exc}). Fix it or delete it to re-infer."
        ) from exc
    except ConfigError as exc:
        where = yaml_line(text, exc.field, str(path)) or str(path)
        msg = f"{where}: {exc.message}. Fix it or delete it to re-infer."
        raise ConfigError(msg, field=exc.field) from exc
