"""Check a table against its schema: the anomalies that stop a run before training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.schema import Schema
from keel.validate.statistics import column_kind

__all__ = ["Anomaly", "validate_table"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One finding: which column, what kind, how serious, and what was seen."""

    column: str | None
    kind: str
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form with stable keys."""
        return asdict(self)


_KINDS: dict[str, set[str]] = {
    "int": {"numeric"},
    "float": {"numeric"},
    "string": {"categorical"},
    "bool": {"boolean"},
}


def validate_table(table: pa.Table, schema: Schema, *, name: str = "data") -> list[Anomaly]:
    """Every anomaly of ``table`` against ``schema``; errors block training, warnings inform.

    Args:
        table: The data to check.
        schema: The contract.
        name: How to call the data in messages (``train``, ``test``, a file name).
    """
    found: list[Anomaly] = []
    present = set(table.column_names)
    for col_name, col in schema.columns.items():
        if col_name not in present:
            found.append(
                Anomaly(
                    col_name,
                    "missing_column",
                    "error",
                    f"{name}: column '{col_name}' is missing (schema expects {col.type}).",
                )
            )
    for col_name in table.column_names:
        if col_name not in schema.columns:
            found.append(
                Anomaly(
                    col_name,
                    "unexpected_column",
                    "warning",
                    f"{name}: column '{col_name}' is not in the schema; it is ignored.",
                )
            )
    rows = max(table.num_rows, 1)
    for col_name, col in schema.columns.items():
        if col_name not in present:
            continue
        column = table.column(col_name)
        kind = column_kind(column.type)
        if kind not in _KINDS[col.type]:
            found.append(
                Anomaly(
                    col_name,
                    "type_mismatch",
                    "error",
                    f"{name}: column '{col_name}' holds {column.type}, schema expects {col.type}.",
                    {"expected": col.type, "found": str(column.type)},
                )
            )
            continue
        fraction = column.null_count / rows
        if fraction > col.max_null_fraction or (not col.nullable and column.null_count):
            found.append(
                Anomaly(
                    col_name,
                    "null_fraction",
                    "error",
                    f"{name}: column '{col_name}' is {fraction:.1%} null, the schema allows "
                    f"{col.max_null_fraction:.1%}.",
                    {"null_fraction": fraction, "allowed": col.max_null_fraction},
                )
            )
        found.extend(_domain(column, col_name, col.min, col.max, col.categories, name, rows))
    return found


def _domain(
    column: pa.ChunkedArray,
    col_name: str,
    low: float | None,
    high: float | None,
    categories: list[str] | None,
    name: str,
    rows: int,
) -> list[Anomaly]:
    out: list[Anomaly] = []
    if (
        categories is not None
        and not pa.types.is_integer(column.type)
        and not pa.types.is_floating(column.type)
    ):
        text = column.cast(pa.string())
        unseen_mask = pc.and_(
            pc.is_valid(text),
            pc.invert(pc.is_in(text, value_set=pa.array(categories, type=pa.string()))),
        )
        unseen = pc.filter(text, pc.fill_null(unseen_mask, False))
        if len(unseen):
            values = pc.value_counts(unseen).field("values").to_pylist()[:10]
            out.append(
                Anomaly(
                    col_name,
                    "unseen_category",
                    "warning",
                    f"{name}: column '{col_name}' has {len(unseen)} rows with values not in the "
                    f"schema, e.g. {values[:5]}. Add them to schema.yaml if they are valid.",
                    {"rows": len(unseen), "values": values},
                )
            )
    if low is not None or high is not None:
        below = int(pc.sum(pc.less(column, low)).as_py() or 0) if low is not None else 0
        above = int(pc.sum(pc.greater(column, high)).as_py() or 0) if high is not None else 0
        if below or above:
            out.append(
                Anomaly(
                    col_name,
                    "out_of_range",
                    "warning",
                    f"{name}: column '{col_name}' has {below} rows below {low} and {above} "
                    f"above {high}.",
                    {"below": below, "above": above, "fraction": (below + above) / rows},
                )
            )
    return out
