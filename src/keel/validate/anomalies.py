"""Check data against its schema and a reference: the anomalies that stop a run before training.

:func:`validate_table` (:mod:`keel.validate.contract`, with :class:`Anomaly` and
:func:`severity_of`; all three importable from here) checks the contract alone (columns,
types, nulls, domains). :func:`validate_data` runs it and adds what needs the data's statistics
and a reference: row count, duplicate rows, constant columns, distribution shift
(:mod:`keel.validate.shift`), label shift, model inputs that look like ids or row counters
(training data only: :mod:`keel.validate.id_features`), and, on request, outliers and likely
mislabeled rows (both on a capped sample).

Given a Parquet path, :func:`validate_data` streams it: one pass computes the statistics and the
row hashes for duplicate detection; the contract checks then read the statistics (nulls, min/max,
exact category counts) and re-read a single column only where a check fails and must count rows.
Memory stays bounded by one batch plus eight bytes a row.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from keel.validate.contract import (
    UNCHECKED_ROLES,
    Anomaly,
    CheckedData,
    DataInput,
    Severity,
    contract_anomalies,
    severity_of,
    validate_table,
)
from keel.validate.duplicates import RowHashes, repeated_rows
from keel.validate.schema import Schema, infer_schema
from keel.validate.statistics import compute_statistics

__all__ = [
    "UNCHECKED_ROLES",
    "Anomaly",
    "ColumnProfile",
    "ExpectedRows",
    "Severity",
    "ValidationReport",
    "severity_of",
    "validate_data",
    "validate_table",
]


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
    source = CheckedData(data)
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
        found = contract_anomalies(source, schema, name, cur_stats)
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
        if ref:  # a narrower slice of the data (a later period), or a feed stuck on one value
            why = (
                f"where the reference had {_distinct(ref)} values: a feed stuck on one value, "
                "or rows from a narrower range (a later period) than the reference"
            )
        else:
            why = "in every row; it carries no information"
        message = f"{name}: column '{col_name}' holds a single value ({values[0]!r}) {why}."
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
