"""The contract checks: data against its schema, column by column, and what a finding is.

An :class:`Anomaly` is one finding (column, kind, severity, message); :func:`severity_of` reads
the severity a schema gives a kind. :func:`validate_table` checks a table against the contract
alone: missing and unexpected columns, types, null fractions, and the domains (categories,
bool spellings, numeric ranges) of the columns whose values are checked. Given statistics, the
checks read null counts, min/max and exact category counts from them and re-read a column only
where a check fails and must count rows (:class:`CheckedData` streams a Parquet or large CSV
file batch by batch). :func:`keel.validate.anomalies.validate_data` adds the checks that need
a reference.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.validate.schema import Schema
from keel.validate.sketches import decode_exact
from keel.validate.statistics import DataSource, column_kind

if TYPE_CHECKING:
    from keel.data.reader import CsvFile

__all__ = [
    "UNCHECKED_ROLES",
    "Anomaly",
    "CheckedData",
    "DataInput",
    "Severity",
    "contract_anomalies",
    "severity_of",
    "validate_table",
]

Severity = Literal["error", "warning"]
DataInput: TypeAlias = "pa.Table | CsvFile | str | os.PathLike[str]"  # CsvFile: keel.data.reader

# Roles whose values are expected to move (dates, ids): no domain or shift checks on them.
UNCHECKED_ROLES = frozenset({"timestamp", "entity", "pii"})
# Columns the model never reads (keel.yaml's data.drop): no domain checks either; a value out
# of the training range there says nothing of the model (their shift is a warning at most).
_NO_DOMAIN_ROLES = UNCHECKED_ROLES | {"ignored"}


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


def validate_table(
    table: pa.Table,
    schema: Schema,
    *,
    name: str = "data",
    statistics: dict[str, Any] | None = None,
) -> list[Anomaly]:
    """The contract checks: missing and unexpected columns, types, nulls and domains.

    Args:
        table: The data to check.
        schema: The contract.
        name: How to call the data in messages (``train``, ``test``, a file name).
        statistics: The table's statistics, when already computed: the checks then read null
            counts, min/max and exact category counts from them instead of scanning columns.

    Returns:
        The anomalies; errors block training, warnings inform.
    """
    return contract_anomalies(CheckedData(table), schema, name, statistics)


class CheckedData:
    """The checked data, opened once: a table, or a Parquet or large CSV file, streamed."""

    def __init__(self, data: DataInput) -> None:
        self.source = DataSource(data)
        self.names: list[str] = list(self.schema.names)

    @property
    def schema(self) -> pa.Schema:
        """The columns and types (a large CSV's may widen while its statistics are read)."""
        return self.source.schema

    def chunks(self, column: str) -> Iterator[pa.ChunkedArray]:
        """The column batch by batch (a Parquet file's strings dictionary-encoded)."""
        for table in self.source.tables([column]):
            yield table.column(0)

    def table(self, columns: list[str]) -> pa.Table:
        """These columns as one table (read whole: the sampled checks need random access)."""
        if self.source.table is not None:
            return self.source.table.select(columns)
        if self.source.path is not None:
            return pq.read_table(self.source.path, columns=columns)
        return pa.concat_tables(self.source.tables(columns))


def contract_anomalies(
    data: CheckedData, schema: Schema, name: str, statistics: dict[str, Any] | None
) -> list[Anomaly]:
    found: list[Anomaly] = []
    present = set(data.names)
    for col_name, col in schema.columns.items():
        if col_name not in present:
            message = f"{name}: column '{col_name}' is missing (schema expects {col.type})."
            found.append(
                Anomaly(
                    col_name,
                    "missing_column",
                    severity_of(schema, "missing_column", "error", col_name),
                    message,
                )
            )
    for col_name in data.names:
        if col_name not in schema.columns:
            message = f"{name}: column '{col_name}' is not in the schema; it is ignored."
            level = severity_of(schema, "unexpected_column", "warning", None)
            found.append(Anomaly(col_name, "unexpected_column", level, message))
    for col_name in schema.columns:
        if col_name in present:
            stats = (statistics or {}).get("columns", {}).get(col_name)
            found.extend(_column(data, col_name, schema, name, stats))
    return found


def severity_of(schema: Schema, kind: str, default: Severity, column: str | None) -> Severity:
    """The severity of ``kind``: the column's override, else the schema-wide one, else default."""
    overrides = [schema.severities]
    if column is not None and column in schema.columns:
        overrides.insert(0, schema.columns[column].severities)
    for override in overrides:
        value = override.get(kind)  # type: ignore[call-overload]
        if value is not None:
            return "error" if value == "error" else "warning"
    return default


def _type_ok(expected: str, found: pa.DataType, unit: str | None = None) -> bool:
    kind = column_kind(found)
    if unit is not None and kind == "numeric":  # unix times of a timestamp's unit
        return expected == "timestamp"
    if expected in ("int", "float"):
        return kind == "numeric"
    if expected == "bool":  # text spells booleans (Yes/No): its values are checked by _spelled
        return kind == "boolean" or pa.types.is_string(found) or pa.types.is_large_string(found)
    if expected == "string":
        return kind == "categorical" and not pa.types.is_temporal(found)
    return kind == "categorical"  # dates and timestamps: anything not numeric or boolean


def _column(
    data: CheckedData,
    col_name: str,
    schema: Schema,
    name: str,
    stats: dict[str, Any] | None,
) -> list[Anomaly]:
    col = schema.columns[col_name]
    data_type = data.schema.field(col_name).type
    if not _type_ok(col.type, data_type, col.unit):
        message = f"{name}: column '{col_name}' holds {data_type}, schema expects {col.type}."
        details = {"expected": col.type, "found": str(data_type)}
        kind_severity = severity_of(schema, "type_mismatch", "error", col_name)
        return [Anomaly(col_name, "type_mismatch", kind_severity, message, details)]
    out: list[Anomaly] = _spelled(data, col_name, schema, name, stats)
    if stats is not None:
        rows, null_count = int(stats["count"]), int(stats["nulls"])
    else:
        counted = [(len(c), c.null_count) for c in data.chunks(col_name)]
        rows, null_count = sum(n for n, _ in counted), sum(n for _, n in counted)
    fraction = null_count / max(rows, 1)
    if fraction > col.max_null_fraction or (not col.nullable and null_count):
        out.append(
            Anomaly(
                col_name,
                "null_fraction",
                severity_of(schema, "null_fraction", "error", col_name),
                f"{name}: column '{col_name}' is {fraction:.1%} null, the schema allows "
                f"{col.max_null_fraction:.1%}.",
                {"null_fraction": fraction, "allowed": col.max_null_fraction},
            )
        )
    if col.role not in _NO_DOMAIN_ROLES:
        out.extend(_unseen(data, col_name, schema, name, stats))
        out.extend(_out_of_range(data, col_name, schema, name, max(rows, 1), stats))
    return out


def _spelled(
    data: CheckedData, col_name: str, schema: Schema, name: str, stats: dict[str, Any] | None
) -> list[Anomaly]:
    """A bool column held as text: values that are none of its spellings (case aside)."""
    col = schema.columns[col_name]
    if col.type != "bool" or column_kind(data.schema.field(col_name).type) == "boolean":
        return []
    trues, falses = col.true_values or ["true"], col.false_values or ["false"]
    accepted = {t.lower() for t in [*trues, *falses, "true", "false"]}
    spellings = sorted({*accepted, *trues, *falses, *(t.upper() for t in accepted)})
    _, values = _unseen_counts(data, col_name, spellings, stats)
    values = [v for v in values if v.strip().lower() not in accepted]
    if not values:
        return []
    message = (
        f"{name}: column '{col_name}' is bool (true: {trues}, false: {falses}) but holds other "
        f"values, e.g. {values[:5]}. Add the spelling to true_values/false_values in "
        "schema.yaml if it is valid."
    )
    severity = severity_of(schema, "type_mismatch", "error", col_name)
    return [Anomaly(col_name, "type_mismatch", severity, message, {"values": values[:10]})]


def _unseen_counts(
    data: CheckedData, col_name: str, categories: list[str], stats: dict[str, Any] | None
) -> tuple[int, list[str]]:
    """Rows outside ``categories`` and those values, most frequent first."""
    top = stats.get("top") if stats is not None else None
    if isinstance(top, dict) and stats is not None and int(stats.get("distinct", -1)) <= len(top):
        # the statistics hold every distinct value with its exact count: no second scan
        allowed = set(categories)
        unseen = sorted(((c, v) for v, c in top.items() if v not in allowed), reverse=True)
        return sum(c for c, _ in unseen), [v for _, v in unseen]
    value_set = pa.array(categories, type=pa.string())
    totals: dict[str, int] = {}
    for column in data.chunks(col_name):
        text = column.cast(pa.string())
        mask = pc.invert(pc.is_in(text, value_set=value_set))
        counted = pc.value_counts(
            pc.filter(text, pc.fill_null(pc.and_(pc.is_valid(text), mask), False))
        )
        for value, count in zip(
            counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
        ):
            totals[str(value)] = totals.get(str(value), 0) + int(count)
    ordered = sorted(totals.items(), key=lambda item: -item[1])
    return sum(totals.values()), [value for value, _ in ordered]


def _unseen(
    data: CheckedData,
    col_name: str,
    schema: Schema,
    name: str,
    stats: dict[str, Any] | None,
) -> list[Anomaly]:
    col = schema.columns[col_name]
    if col.categories is None or column_kind(data.schema.field(col_name).type) == "numeric":
        return []
    count, values = _unseen_counts(data, col_name, col.categories, stats)
    if not count:
        return []
    values = values[:10]
    return [
        Anomaly(
            col_name,
            "unseen_category",
            severity_of(schema, "unseen_category", "warning", col_name),
            f"{name}: column '{col_name}' has {count} rows with values not in the "
            f"schema, e.g. {values[:5]}. Add them to schema.yaml if they are valid.",
            {"rows": count, "values": values},
        )
    ]


def _out_of_range(
    data: CheckedData,
    col_name: str,
    schema: Schema,
    name: str,
    rows: int,
    stats: dict[str, Any] | None,
) -> list[Anomaly]:
    low, high = schema.columns[col_name].min, schema.columns[col_name].max
    data_type = data.schema.field(col_name).type
    if (low is None and high is None) or column_kind(data_type) != "numeric":
        return []
    if stats is not None and pa.types.is_integer(data_type):
        # exact integer bounds from the statistics (floats may hold infinities they leave out)
        lowest, highest = stats.get("min"), stats.get("max")
    else:
        lowest = highest = None
        for column in data.chunks(col_name):
            bounds = pc.min_max(column)
            a, b = bounds["min"].as_py(), bounds["max"].as_py()
            lowest = a if lowest is None or (a is not None and a < lowest) else lowest
            highest = b if highest is None or (b is not None and b > highest) else highest
    within_low = low is None or lowest is None or lowest >= low
    within_high = high is None or highest is None or highest <= high
    if within_low and within_high:
        return []  # the common case (or an all-null column), without counting row by row
    exact = (stats or {}).get("sketches", {}).get("exact")
    if exact is not None and pa.types.is_integer(data_type) and _exact_as_float(lowest, highest):
        # every distinct value with its count is in the statistics: no second scan
        values, counts = decode_exact(exact)
        below = int(counts[values < low].sum()) if low is not None else 0
        above = int(counts[values > high].sum()) if high is not None else 0
    else:
        below = above = 0
        for column in data.chunks(col_name):
            below += int(pc.sum(pc.less(column, low)).as_py() or 0) if low is not None else 0
            above += int(pc.sum(pc.greater(column, high)).as_py() or 0) if high is not None else 0
    if not (below or above):
        return []
    return [
        Anomaly(
            col_name,
            "out_of_range",
            severity_of(schema, "out_of_range", "warning", col_name),
            f"{name}: column '{col_name}' has {below} rows below {low} and {above} above {high}.",
            {"below": below, "above": above, "fraction": (below + above) / rows},
        )
    ]


def _exact_as_float(*bounds: Any) -> bool:
    """Whether integers within these bounds survive the float64 the exact counts store."""
    return all(b is not None and abs(b) < 2**53 for b in bounds)
