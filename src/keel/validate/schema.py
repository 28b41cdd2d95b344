"""Schema: the reviewed contract for training data and serving requests.

Inferred from statistics, written to ``schema.yaml`` for review, and read back from there on
later runs so a reviewer's edits (a widened range, an accepted category) take effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import ConfigError

__all__ = ["ColumnSchema", "Schema", "infer_schema", "read_schema", "write_schema"]

Role = Literal["feature", "target", "timestamp", "entity", "sensitive", "pii", "ignored"]
ColumnType = Literal["int", "float", "string", "bool"]


class ColumnSchema(BaseModel):
    """One column's contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ColumnType
    role: Role = "feature"
    nullable: bool = True
    max_null_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    psi_warn: float = 0.1
    psi_alert: float = 0.25


class Schema(BaseModel):
    """Columns by name, in file order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: dict[str, ColumnSchema]

    def features(self) -> list[str]:
        """Names of the columns the model sees (features and sensitive attributes)."""
        return [n for n, c in self.columns.items() if c.role in ("feature", "sensitive")]

    def target(self) -> str | None:
        """The target column's name, if the schema has one."""
        return next((n for n, c in self.columns.items() if c.role == "target"), None)


def infer_schema(
    statistics: dict[str, Any],
    *,
    target: str | None = None,
    sensitive: list[str] | None = None,
    drop: list[str] | None = None,
    max_null_fraction: float = 0.5,
) -> Schema:
    """A schema from reference statistics: types, nullability, ranges and category sets.

    Args:
        statistics: Output of :func:`keel.validate.statistics.compute_statistics`.
        target: The label column.
        sensitive: Columns to audit for fairness (still model inputs).
        drop: Columns the model must not see.
        max_null_fraction: Ceiling on the null fraction of nullable columns.
    """
    sensitive_set, drop_set = set(sensitive or []), set(drop or [])
    rows = max(int(statistics["rows"]), 1)
    columns: dict[str, ColumnSchema] = {}
    for name, stats in statistics["columns"].items():
        role: Role = "feature"
        if name == target:
            role = "target"
        elif name in sensitive_set:
            role = "sensitive"
        elif name in drop_set:
            role = "ignored"
        nulls = int(stats["nulls"])
        observed = nulls / rows
        ceiling = max(max_null_fraction, min(1.0, round(observed * 2 + 0.01, 4)))
        common: dict[str, Any] = {
            "role": role,
            "nullable": nulls > 0 or role != "target",
            "max_null_fraction": 0.0 if role == "target" else ceiling,
        }
        if stats["kind"] == "numeric":
            columns[name] = ColumnSchema(
                type=stats["dtype"], min=stats.get("min"), max=stats.get("max"), **common
            )
        else:
            all_seen = stats["distinct"] <= len(stats["categories"])
            categories = sorted(stats["categories"]) if all_seen else None
            columns[name] = ColumnSchema(type=stats["dtype"], categories=categories, **common)
    return Schema(columns=columns)


def write_schema(schema: Schema, path: Path) -> None:
    """Write ``schema.yaml`` atomically (temp file, fsync, rename)."""
    body = {"columns": {n: c.model_dump(exclude_defaults=True) for n, c in schema.columns.items()}}
    for name, column in schema.columns.items():
        body["columns"][name]["type"] = column.type
    text = "# Inferred by keel; review and edit. It is the contract for data and requests.\n"
    text += yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        import os

        os.fsync(handle.fileno())
    tmp.replace(path)


def read_schema(path: Path) -> Schema:
    """Read a reviewed ``schema.yaml``.

    Raises:
        ConfigError: The file is not valid YAML or not a valid schema; names the column and key.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Schema.model_validate(data)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the schema ({exc}).") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: invalid YAML ({exc}). Fix it or delete it to re-infer."
        ) from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}. Fix it or delete it to re-infer.") from exc
