"""Check data against its schema and a reference: the anomalies that stop a run before training.

:func:`validate_table` checks the contract alone (columns, types, nulls, domains).
:func:`validate_data` adds what needs the data's statistics and a reference: row count,
duplicate rows, constant columns, distribution shift (:mod:`keel.validate.shift`), label shift,
model inputs that look like ids or row counters (training data only:
:mod:`keel.validate.id_features`), and, on request, outliers and likely mislabeled rows (both
on a capped sample).

Given a Parquet path, :func:`validate_data` streams it: one pass computes the statistics and the
row hashes for duplicate detection; the contract checks then read the statistics (nulls, min/max,
exact category counts) and re-read a single column only where a check fails and must count rows.
Memory stays bounded by one batch plus eight bytes a row.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.validate.duplicates import RowHashes, repeated_rows
from keel.validate.schema import Schema, infer_schema
from keel.validate.sketches import decode_exact
from keel.validate.statistics import DataSource, column_kind, compute_statistics

if TYPE_CHECKING:
    from keel.data.reader import CsvFile

__all__ = [
    "Anomaly",
    "ColumnProfile",
    "ExpectedRows",
    "ValidationReport",
    "severity_of",
    "validate_data",
    "validate_table",
]

Severity = Literal["error", "warning"]
DataInput: TypeAlias = "pa.Table | CsvFile | str | os.PathLike[str]"  # CsvFile: keel.data.reader

# Roles whose values are expected to move (dates, ids): no domain or shift checks on them.
UNCHECKED_ROLES = frozenset({"timestamp", "entity", "pii"})


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


@dataclass(frozen=True, slots=True)
class ExpectedRows:
    """How many rows the data should have against its reference, when not about as many.

    Attributes:
        ratio: The data's rows over the reference's that are expected (a holdout split's
            test side: ``test_fraction / (1 - test_fraction)``).
        why: What sets that ratio, in words (``split.test_fraction 0.2``).
    """

    ratio: float
    why: str


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    """One column's distribution, as proportions per bin, for the report's charts."""

    name: str
    kind: str
    labels: list[str]
    current: list[float]
    reference: list[float] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """The outcome of :func:`validate_data`: ``ok`` is False when any anomaly is an error."""

    ok: bool
    rows: int
    anomalies: list[Anomaly]
    name: str = "data"
    reference_rows: int | None = None
    profiles: list[ColumnProfile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Anomaly]:
        """The error-severity anomalies (they block a run)."""
        return [a for a in self.anomalies if a.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        """``{"ok", "rows", "anomalies": [...]}``, the ``keel validate --format json`` body."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "anomalies": [a.to_dict() for a in self.anomalies],
        }

    def to_html(self) -> str:
        """A self-contained HTML page: every anomaly and each column's distributions."""
        from keel.validate.report import render_html

        return render_html(self)


def validate_data(
    data: DataInput,
    *,
    schema: Schema | None = None,
    reference: dict[str, Any] | pa.Table | None = None,
    target: str | None = None,
    name: str = "data",
    outliers: bool = False,
    label_noise: bool = False,
    max_rows: int = 50_000,
    seed: int = 0,
    expected_rows: ExpectedRows | None = None,
) -> ValidationReport:
    """Every anomaly of ``data`` against a schema and a reference.

    Args:
        data: The data to check: an Arrow table, or a path to a Parquet or CSV file (Parquet,
            and CSV over 64 MiB, streamed in batches: bounded memory).
        schema: The contract; inferred from the reference (or from ``data`` itself when there is
            no reference) when None.
        reference: Statistics (from :func:`compute_statistics`) or a table to compare with;
            without one there are no shift or row-count checks.
        target: The label column; defaults to the schema's target.
        name: How to call the data in messages.
        outliers: Also look for outlying rows (robust per-column scores and an isolation forest).
        label_noise: Also look for likely mislabeled rows (confident learning); needs a target.
        max_rows: Rows sampled for the outlier and label-noise checks.
        seed: Seed of that sample and of the models fitted on it.
        expected_rows: The row ratio to the reference that is expected (the test side of a
            split); default: about as many rows (within half to twice the reference's).

    Returns:
        The report; ``report.ok`` is False when any anomaly has severity ``error``.

    Example:
        >>> report = validate_data(new_table, reference=train_table, target="income")
        >>> [a.kind for a in report.errors]
    """
    source = _Data(data)
    ref_stats = compute_statistics(reference) if isinstance(reference, pa.Table) else reference
    hashes = RowHashes(source.names)
    cur_stats = compute_statistics(source.source, reference=ref_stats, on_batch=hashes)
    rows = int(cur_stats["rows"])
    if schema is None:
        schema = infer_schema(ref_stats if ref_stats is not None else cur_stats, target=target)
    target = target or schema.target()
    # the duplicate search (a hash table over every row) overlaps the column checks
    with ThreadPoolExecutor(max_workers=1) as background:
        repeated = background.submit(_duplicates, hashes.result(rows), rows, schema, name)
        found = _contract(source, schema, name, cur_stats)
        found += _row_count(rows, ref_stats, schema, name, expected_rows)
        found += repeated.result()
    from keel.validate.malformed import malformed_rows  # lines a CSV file could not give

    found = [*malformed_rows(source.source.csv, schema, name), *found]
    if ref_stats is None:  # the data is the reference (training): do its inputs name rows?
        from keel.validate.id_features import id_features

        found += id_features(source.source, schema, name)
    notes: list[str] = []
    found += _constant(cur_stats, ref_stats, schema, name)
    metrics: dict[str, dict[str, Any]] = {}
    if ref_stats is not None:
        from keel.validate.shift import shift_anomalies

        nulls = frozenset(a.column for a in found if a.kind == "null_fraction" and a.column)
        found += shift_anomalies(
            cur_stats, ref_stats, schema, target, name, notes, metrics, nulls_reported=nulls
        )
    if outliers or label_noise:
        broken = {a.column for a in found if a.kind == "type_mismatch"}
        comparable = source.table([c for c in source.names if c not in broken])
        if outliers:
            from keel.validate.outliers import find_outliers

            found += find_outliers(comparable, schema, name=name, max_rows=max_rows, seed=seed)
        if label_noise:
            from keel.validate.labels import find_label_noise

            found += find_label_noise(comparable, target, name=name, max_rows=max_rows, seed=seed)
    return ValidationReport(
        ok=not any(a.severity == "error" for a in found),
        rows=rows,
        anomalies=found,
        name=name,
        reference_rows=None if ref_stats is None else int(ref_stats["rows"]),
        profiles=_profiles(cur_stats, ref_stats, metrics),
        notes=notes,
    )


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
    return _contract(_Data(table), schema, name, statistics)


class _Data:
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


def _contract(
    data: _Data, schema: Schema, name: str, statistics: dict[str, Any] | None
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


def _type_ok(expected: str, found: pa.DataType) -> bool:
    kind = column_kind(found)
    if expected in ("int", "float"):
        return kind == "numeric"
    if expected == "bool":  # text spells booleans (Yes/No): its values are checked by _spelled
        return kind == "boolean" or pa.types.is_string(found) or pa.types.is_large_string(found)
    if expected == "string":
        return kind == "categorical" and not pa.types.is_temporal(found)
    return kind == "categorical"  # dates and timestamps: anything not numeric or boolean


def _column(
    data: _Data,
    col_name: str,
    schema: Schema,
    name: str,
    stats: dict[str, Any] | None,
) -> list[Anomaly]:
    col = schema.columns[col_name]
    data_type = data.schema.field(col_name).type
    if not _type_ok(col.type, data_type):
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
    if col.role not in UNCHECKED_ROLES:
        out.extend(_unseen(data, col_name, schema, name, stats))
        out.extend(_out_of_range(data, col_name, schema, name, max(rows, 1), stats))
    return out


def _spelled(
    data: _Data, col_name: str, schema: Schema, name: str, stats: dict[str, Any] | None
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
    data: _Data, col_name: str, categories: list[str], stats: dict[str, Any] | None
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
    data: _Data,
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
    data: _Data,
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


def _row_count(
    rows: int,
    reference: dict[str, Any] | None,
    schema: Schema,
    name: str,
    expected: ExpectedRows | None = None,
) -> list[Anomaly]:
    """A row count far (over 2x either way) from the reference's, or from the ratio expected."""
    if rows == 0:
        return [Anomaly(None, "row_count", "error", f"{name}: no rows. Check the source.")]
    if reference is None:
        return []
    ref_rows = int(reference["rows"])
    ratio = rows / max(ref_rows, 1)
    details: dict[str, Any] = {"rows": rows, "reference_rows": ref_rows, "ratio": ratio}
    want = 1.0 if expected is None else expected.ratio
    if expected is not None:
        details["expected_ratio"] = want
    if ref_rows and want > 0 and (ratio < want / 2 or ratio > want * 2):
        message = (
            f"{name}: {rows} rows against {ref_rows} in the reference ({ratio:.2f}x); "
            "a partial or duplicated load?"
            if expected is None
            else f"{name}: {rows} rows against {ref_rows} in the reference ({ratio:.2f}x) "
            f"where {expected.why} gives about {want:.2f}x; check how the rows were split."
        )
        level = severity_of(schema, "row_count", "warning", None)
        return [Anomaly(None, "row_count", level, message, details)]
    return []


def _duplicates(
    hashes: np.ndarray | None, rows: int, schema: Schema, name: str, examples: int = 20
) -> list[Anomaly]:
    """Rows equal to an earlier row, found by their 64-bit row hashes."""
    if hashes is None:
        return []
    count, repeats = repeated_rows(hashes, limit=examples)
    if not count:
        return []
    row_ids = repeats.tolist()
    fraction = count / rows
    message = (
        f"{name}: {count} {'row repeats' if count == 1 else 'rows repeat'} an earlier row "
        f"({fraction:.1%}), e.g. rows {row_ids[:5]}. "
        "Deduplicate the source if they are not genuine repeats."
    )
    details = {"rows": count, "fraction": fraction, "row_ids": row_ids}
    level = severity_of(schema, "duplicate_rows", "warning", None)
    return [Anomaly(None, "duplicate_rows", level, message, details)]


def _distinct(stats: dict[str, Any]) -> int:
    return int(stats.get("distinct", 0) or 0)


def _constant(
    current: dict[str, Any], reference: dict[str, Any] | None, schema: Schema, name: str
) -> list[Anomaly]:
    found = []
    ref_columns = (reference or {}).get("columns", {})
    for col_name, stats in current["columns"].items():
        ref = ref_columns.get(col_name)
        all_null = stats["nulls"] >= stats["count"]  # the null check's business
        if all_null or _distinct(stats) > 1 or (ref is not None and _distinct(ref) <= 1):
            continue
        values = list(stats.get("top", {})) or [stats.get("min")]
        before = f"where the reference had {_distinct(ref)} values" if ref else "in every row"
        message = (
            f"{name}: column '{col_name}' holds a single value ({values[0]!r}) {before}; "
            "it carries no information."
        )
        details = {"distinct": _distinct(stats), "values": values[:1], "nulls": stats["nulls"]}
        kind_severity = severity_of(schema, "constant_column", "warning", col_name)
        found.append(Anomaly(col_name, "constant_column", kind_severity, message, details))
    return found


def _labels(stats: dict[str, Any]) -> list[str]:
    if stats["kind"] == "numeric":
        edges = [f"{e:.4g}" for e in stats["edges"]]
        if not edges:
            return ["all", "null"]
        inner = [f"({a}, {b}]" for a, b in itertools.pairwise(edges)]
        return [f"<= {edges[0]}", *inner, f"> {edges[-1]}", "null"]
    return [*map(str, stats["categories"]), "other", "null"]


def _proportions(counts: list[int]) -> list[float]:
    total = max(sum(counts), 1)
    return [c / total for c in counts]


def _profiles(
    current: dict[str, Any], reference: dict[str, Any] | None, metrics: dict[str, Any]
) -> list[ColumnProfile]:
    ref_columns = (reference or {}).get("columns", {})
    profiles = []
    for col_name, stats in current["columns"].items():
        ref = ref_columns.get(col_name)
        same_bins = (
            ref is not None
            and ref["kind"] == stats["kind"]
            and len(ref["counts"]) == len(stats["counts"])
        )
        profiles.append(
            ColumnProfile(
                name=col_name,
                kind=stats["kind"],
                labels=_labels(ref if same_bins and ref is not None else stats),
                current=_proportions(stats["counts"]),
                reference=_proportions(ref["counts"]) if same_bins and ref is not None else None,
                metrics=metrics.get(col_name, {}),
            )
        )
    return profiles
