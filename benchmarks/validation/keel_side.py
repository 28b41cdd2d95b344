"""Keel's side of the checks: the 15 checks as a Keel Schema, and anomalies mapped back to checks.

Used by ``run_keel.py`` (the Python API) and by the harness for ``keel validate`` (the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from checks import CHECKS, COLUMNS, INTEGER_COLUMNS, check_id

from keel.validate.schema import ColumnSchema, Schema, write_schema

# Keel anomaly kinds -> our check kinds
KINDS = {
    "null_fraction": "not_null",
    "out_of_range": "between",
    "unseen_category": "in_set",
    "type_mismatch": "of_type",
}


def schema() -> Schema:
    """The 15 checks as a Keel Schema; unchecked columns get an unconstrained entry."""
    spec: dict[str, dict[str, Any]] = {
        name: {"type": "int" if name in INTEGER_COLUMNS else "string"} for name in COLUMNS
    }
    for kind, column, params in CHECKS:
        if kind == "not_null":
            spec[column]["nullable"] = False
        elif kind == "between":
            spec[column].update(min=params["min"], max=params["max"])
        elif kind == "in_set":
            spec[column]["categories"] = list(params["values"])
        else:
            spec[column]["type"] = {"int64": "int"}[params["type"]]
    return Schema(columns={name: ColumnSchema(**body) for name, body in spec.items()})


def write_schema_file(path: Path) -> Path:
    """``schema.yaml`` for ``keel validate --schema``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_schema(schema(), path)
    return path


def tally(anomalies: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """Unexpected rows per check, ``failed`` check ids, and ``extra``: anomalies beyond the 15."""
    results: dict[str, Any] = {check_id(kind, column): 0 for kind, column, _ in CHECKS}
    results["failed"] = []
    extra = []
    for anomaly in anomalies:
        kind, column, details = KINDS.get(anomaly["kind"]), anomaly["column"], anomaly["details"]
        ident = check_id(kind, column) if kind and column else None
        if ident not in results:
            extra.append(f"{anomaly['kind']}:{column}" if column else anomaly["kind"])
            continue
        if kind == "not_null":  # Keel reports the fraction
            results[ident] = round(details.get("null_fraction", 0.0) * rows)
        elif kind == "between":
            results[ident] = details.get("below", 0) + details.get("above", 0)
        else:
            results[ident] = details.get("rows")
        results["failed"].append(ident)
    results["extra"] = sorted(extra)
    return results
