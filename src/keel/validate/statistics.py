"""Per-column statistics as mergeable sketches, streamed in batches, bins frozen from a reference.

Numeric columns get count, nulls, exact min/max/mean/std (Chan's parallel moments), quantiles
and a distinct estimate from DataSketches (KLL, HLL), and a histogram on edges taken at the
reference deciles (outer edges open, one extra bin for nulls). Categorical columns get the top-k
values with counts (frequent-items sketch), a distinct estimate (HLL) and counts over the
reference categories plus an ``other`` bucket and a null bucket. Monitoring reuses the reference
edges and categories, so drift is computed from counts in O(bins), and the statistics of two
batches computed against one reference merge into the statistics of their union
(:func:`merge_statistics`). Error bounds of the sketch parts are in :mod:`keel.validate.sketches`.

Keys per column (issue-2 JSON has all but the last three): ``kind``, ``dtype``, ``count``,
``nulls``, ``min``, ``max``, ``mean``, ``std``, ``quantiles``, ``distinct``, ``edges``,
``counts`` (numeric) or ``categories``, ``top``, ``counts`` (categorical), then ``arrow_type``,
``moments`` ``{n, mean, m2}`` (numeric) and ``sketches`` (base64 ``kll``/``items``/``hll``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.data.files import open_data, retyped
from keel.errors import DataValidationError
from keel.validate.arrays import from_numpy, numbers
from keel.validate.sketches import (
    CategorySketch,
    NumericSketch,
    column_cdf,
    column_quantiles,
    distinct_count,
    merge_column,
    top_items,
)

if TYPE_CHECKING:
    from keel.data.sources import CsvFile

__all__ = [
    "OTHER",
    "QUANTILES",
    "TOP_K",
    "DataSource",
    "column_cdf",
    "column_kind",
    "column_quantiles",
    "compute_statistics",
    "histogram_counts",
    "merge_statistics",
]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_K = 50
OTHER = "__other__"
BATCH_ROWS = 1 << 20
CSV_BATCH_ROWS = 1 << 18  # parsed and cleaned strings take several times the Parquet batch
LOW_CARDINALITY = 8  # a batch with at most 1/8 as many distinct values as rows is fed by value
EXACT_VALUES = 1 << 20  # distinct (value, count) pairs kept to bin without a second pass

StatisticsInput: TypeAlias = (
    "pa.Table | pa.RecordBatchReader | CsvFile | DataSource | str | os.PathLike[str]"
)


def column_kind(data_type: pa.DataType) -> str:
    """``numeric``, ``boolean`` or ``categorical`` for an Arrow type (dictionaries by value)."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return "numeric"
    if pa.types.is_boolean(data_type):
        return "boolean"
    return "categorical"


def compute_statistics(
    data: StatisticsInput,
    *,
    reference: dict[str, Any] | None = None,
    on_batch: Callable[[int, pa.Table], None] | None = None,
) -> dict[str, Any]:
    """Statistics for every column, in one streamed pass over record batches.

    Args:
        data: An Arrow table, a record-batch reader (read once), or a path to a Parquet file
            or CSV file (as :func:`keel.data.sources.read_table` reads it). Parquet, and CSV
            over 64 MiB, are streamed in batches of about a million rows, so memory stays
            bounded on large files.
        reference: Statistics of a reference table; when given, histograms reuse its bin edges
            and categories so the two can be compared, and merged, bin by bin.
        on_batch: Called as ``on_batch(first_row, table)`` for each batch of the pass, in the
            same thread pool as the column updates, so other per-row work (e.g. row hashes for
            duplicate detection) shares the one read of the data.

    Returns:
        ``{"rows": n, "columns": {name: {...}}}``, JSON-serialisable.

    Without a reference, numeric edges are the deciles of the data's own KLL sketch and the
    counts take a second pass over the numeric columns (for a reader, which cannot be re-read,
    they are estimated from the sketch and ``counts_exact`` is false).

    Example:
        >>> stats = compute_statistics(pa.table({"x": [1, 2, 3]}))
        >>> stats["columns"]["x"]["max"]
        3.0
    """
    source = data if isinstance(data, DataSource) else DataSource(data)
    return retyped(source.csv, lambda: _statistics(source, reference, on_batch))


def _statistics(
    source: DataSource,
    reference: dict[str, Any] | None,
    on_batch: Callable[[int, pa.Table], None] | None,
) -> dict[str, Any]:
    ref_columns = (reference or {}).get("columns", {})
    accumulators: dict[str, _Numeric | _Categorical] = {}
    for field in source.schema:
        if pa.types.is_nested(field.type):
            msg = (
                f"column '{field.name}' holds {field.type}; statistics cover flat columns only. "
                "Flatten it (one column per field) or leave it out of the data."
            )
            raise DataValidationError(msg, field=field.name)
        kind = column_kind(field.type)
        ref = ref_columns.get(field.name)
        if kind == "numeric":
            edges = ref["edges"] if ref is not None and ref.get("kind") == "numeric" else None
            accumulators[field.name] = _Numeric(field.type, edges)
        else:
            same = ref is not None and ref.get("kind") in ("categorical", "boolean")
            accumulators[field.name] = _Categorical(field.type, ref["categories"] if same else None)
    rows = 0
    # Arrow's kernels release the GIL, so string counting overlaps the numeric sketches
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for table in _prefetched(source.tables(None)):
            # the per-row work (row hashes) is the longest job: first, so nothing waits on it
            jobs = [] if on_batch is None else [pool.submit(on_batch, rows, table)]
            jobs += [pool.submit(a.update, table.column(n)) for n, a in accumulators.items()]
            rows += table.num_rows
            for job in jobs:
                job.result()
    _finish_histograms(source, accumulators)
    return {"rows": rows, "columns": {n: a.finish() for n, a in accumulators.items()}}


def _prefetched(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The same tables, the next one read in a background thread while this one is counted."""
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(next, tables, None)
        try:
            while (table := pending.result()) is not None:
                pending = reader.submit(next, tables, None)
                yield table
        finally:
            pending.cancel()
            if not pending.cancelled():
                pending.exception()  # let a running read finish before closing the file
            close = getattr(tables, "close", None)
            if close is not None:
                close()


def _finish_histograms(
    source: DataSource, accumulators: dict[str, _Numeric | _Categorical]
) -> None:
    pending = {
        name: accumulator
        for name, accumulator in accumulators.items()
        if isinstance(accumulator, _Numeric)
        and accumulator.edges is None
        and not accumulator.fix_edges()
    }
    if not pending:
        return
    if source.rereadable:
        for table in source.tables(list(pending)):
            for name, accumulator in pending.items():
                accumulator.bin(table.column(name))
    else:
        for accumulator in pending.values():
            accumulator.estimate_counts()


class DataSource:
    """Data to read, opened once: a table, a record-batch reader, or a Parquet or CSV file.

    :meth:`tables` gives it as ~1M-row tables (256K rows for a streamed CSV), as often as asked
    (a reader only once). :mod:`keel.validate.anomalies` re-reads columns through it.
    """

    def __init__(
        self, data: pa.Table | pa.RecordBatchReader | CsvFile | str | os.PathLike[str]
    ) -> None:
        self.path: Path | None = None
        self.table: pa.Table | None = None
        self.reader: pa.RecordBatchReader | None = None
        self.csv: CsvFile | None = None
        if isinstance(data, pa.Table):
            self.table = data
        elif isinstance(data, pa.RecordBatchReader):
            self.reader = data
        elif not isinstance(data, str | os.PathLike):
            self.csv = data  # a CsvFile, already scanned
        else:
            opened = open_data(Path(data))
            if isinstance(opened, Path):
                self.path = opened
            elif isinstance(opened, pa.Table):
                self.table = opened
            else:
                self.csv = opened
        self.rereadable = self.reader is None
        self.file_schema = None if self.path is None else pq.read_schema(self.path)

    @property
    def schema(self) -> pa.Schema:
        """The columns and types (a large CSV's may widen on a second read)."""
        if self.table is not None:
            return self.table.schema
        if self.reader is not None:
            return self.reader.schema
        if self.csv is not None:
            return self.csv.schema
        assert self.file_schema is not None
        return self.file_schema

    def tables(self, columns: list[str] | None) -> Iterator[pa.Table]:
        if self.table is not None:
            table = self.table if columns is None else self.table.select(columns)
            for offset in range(0, table.num_rows, BATCH_ROWS):
                yield table.slice(offset, BATCH_ROWS)
        elif self.reader is not None:
            yield from _regroup(self.reader)
        elif self.csv is not None:
            yield from self.csv.tables(columns, CSV_BATCH_ROWS)
        else:
            yield from self._parquet(columns)

    def _parquet(self, columns: list[str] | None) -> Iterator[pa.Table]:
        assert self.path is not None
        # strings come back dictionary-encoded, as Parquet stores them: counting is a bincount
        strings = [f.name for f in self.schema if pa.types.is_string(f.type)]
        with pq.ParquetFile(self.path, read_dictionary=strings) as parquet:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield pa.Table.from_batches([batch])


def _regroup(reader: pa.RecordBatchReader) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        pending.append(batch)
        size += batch.num_rows
        if size >= BATCH_ROWS:
            yield pa.Table.from_batches(pending, schema=reader.schema)
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending, schema=reader.schema)


def _type_name(data_type: pa.DataType) -> str:
    if pa.types.is_dictionary(data_type):
        return str(data_type.value_type)
    return str(data_type)


class _Numeric:
    """One numeric column's exact counts and sketches, fed batch by batch."""

    def __init__(self, data_type: pa.DataType, edges: list[float] | None) -> None:
        self.type = data_type.value_type if pa.types.is_dictionary(data_type) else data_type
        # uint64 may not fit int64: it takes the float path
        self.is_integer = pa.types.is_integer(self.type) and not pa.types.is_uint64(self.type)
        self.edges = None if edges is None else list(edges)
        self.bins = np.zeros(0 if edges is None else len(edges) + 1, dtype=np.int64)
        self.count = 0
        self.nulls = 0
        self.infinite = [0, 0]
        self.counts_exact = True
        self.exact: list[tuple[np.ndarray, np.ndarray]] | None = []
        self.exact_size = 0
        self.sketch = NumericSketch()

    def _values(self, column: pa.ChunkedArray) -> np.ndarray:
        """Non-null values as int64 for integer columns; float64 (NaN kept) otherwise."""
        if pa.types.is_dictionary(column.type):
            column = column.cast(self.type)
        if self.is_integer:
            return np.asarray(numbers(column, nulls="drop"), dtype=np.int64)
        return np.asarray(numbers(column, nulls="nan"), dtype=np.float64)

    def update(self, column: pa.ChunkedArray) -> None:
        values = self._values(column)
        self.count += len(column)
        if self.is_integer:
            self.nulls += column.null_count
            binned = finite = values
            distinct, counts = _integer_counts(values)
        else:
            binned, finite = self._split(values)
            distinct, counts = _float_counts(finite)
        if distinct.size * LOW_CARDINALITY <= finite.size:
            # few distinct values: feed them sorted (KLL compacts sorted input twice as fast)
            # and bin the distinct values with their counts instead of every row
            self.sketch.update_counts(distinct, counts)
            if self.edges is not None:
                self._add(distinct, counts)
        else:
            self.sketch.update(np.asarray(finite, dtype=np.float64), distinct, counts)
            if self.edges is not None:
                self._add(finite, None)
        self._remember(distinct, counts)
        if binned.size > finite.size:
            negative = int((binned == -np.inf).sum())
            positive = binned.size - finite.size - negative
            self.infinite[0] += negative
            self.infinite[1] += positive
            if self.edges is not None:
                self.bins[0] += negative
                self.bins[-1] += positive

    def _split(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Non-null values (infinities kept), and the finite ones among them."""
        # NaN is missing everywhere in Keel (the feature pipeline imputes it), so it counts as
        # null; +-inf stay in the outer bins so the counts always add up to the rows.
        nan = np.isnan(values)
        nulls = int(nan.sum())
        self.nulls += nulls
        binned = values[~nan] if nulls else values
        finite = np.isfinite(binned)
        return binned, binned if finite.all() else binned[finite]

    def _remember(self, distinct: np.ndarray, counts: np.ndarray) -> None:
        """Keep exact per-value counts (bounded) so reference edges need no second pass."""
        if self.edges is not None or self.exact is None:
            return
        self.exact.append((distinct, counts))
        self.exact_size += distinct.size
        if self.exact_size > EXACT_VALUES:
            # batches repeat most values: fold them together before giving up
            values, inverse = np.unique(
                np.concatenate([v for v, _ in self.exact]), return_inverse=True
            )
            folded = np.bincount(inverse, weights=np.concatenate([c for _, c in self.exact]))
            self.exact = [(values, folded.astype(np.int64))]
            self.exact_size = values.size
            if values.size > EXACT_VALUES // 2:  # would fold again soon: too many values
                self.exact = None

    def _add(self, values: np.ndarray, weights: np.ndarray | None) -> None:
        index = np.searchsorted(np.asarray(self.edges, dtype=np.float64), values, side="left")
        self.bins += np.bincount(index, weights=weights, minlength=self.bins.size).astype(np.int64)

    def fix_edges(self) -> bool:
        """Edges at the distinct finite deciles of the sketch; True when the counts are done."""
        deciles = self.sketch.quantiles(np.linspace(0.1, 0.9, 9))
        # sorted() of a set, not np.unique: that imports numpy.ma (~10 ms) on its first call
        self.edges = sorted({float(e) for e in deciles if math.isfinite(e)})
        self.bins = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.bins[0] += self.infinite[0]
        self.bins[-1] += self.infinite[1]
        if self.exact is None:
            return False
        for distinct, counts in self.exact:
            self._add(distinct, counts)
        self.exact = None
        return True

    def bin(self, column: pa.ChunkedArray) -> None:
        """Second pass: add a batch's finite values to the bins (infinities are counted)."""
        values = self._values(column)
        self._add(values if self.is_integer else values[np.isfinite(values)], None)

    def estimate_counts(self) -> None:
        """Counts from the sketch when the data cannot be read twice (exact while it is)."""
        self.counts_exact = self.sketch.exact is not None
        if not self.sketch.n:
            return
        assert self.edges is not None
        self.bins += self.sketch.bin_counts(self.edges)

    def finish(self) -> dict[str, Any]:
        sketch = self.sketch
        out: dict[str, Any] = {
            "kind": "numeric",
            "dtype": "int" if pa.types.is_integer(self.type) else "float",
            "count": self.count,
            "nulls": self.nulls,
        }
        if sketch.n:
            quantiles = sketch.quantiles(np.asarray(QUANTILES))
            out.update(
                min=sketch.min,
                max=sketch.max,
                mean=sketch.mean,
                std=math.sqrt(sketch.m2 / sketch.n) if math.isfinite(sketch.m2) else math.inf,
                quantiles={str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
                distinct=distinct_count({"hll": sketch.serialized()["hll"]}),
            )
        out["edges"] = list(self.edges or [])
        out["counts"] = [int(c) for c in self.bins] + [self.nulls]
        if not self.counts_exact:
            out["counts_exact"] = False
        out["arrow_type"] = _type_name(self.type)
        out["moments"] = {"n": sketch.n, "mean": sketch.mean, "m2": sketch.m2}
        out["sketches"] = sketch.serialized()
        return out


def _integer_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values (as float64) and their counts, for int64 values."""
    if not values.size:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    # Arrow's hash count releases the GIL (numpy's bincount does not), so columns overlap
    counted = pc.value_counts(from_numpy(values))
    distinct = numbers(counted.field("values"))
    order = np.argsort(distinct, kind="stable")
    return distinct[order].astype(np.float64), numbers(counted.field("counts"))[order]


def _float_counts(finite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values (``-0.0`` as ``0.0``) and their counts."""
    if not finite.size:
        return finite, np.zeros(0, dtype=np.int64)
    counted = pc.value_counts(from_numpy(finite + 0.0))
    values = numbers(counted.field("values"))
    order = np.argsort(values, kind="stable")
    return values[order], numbers(counted.field("counts"))[order]


class _Categorical:
    """One categorical (or boolean) column's counts over the reference categories and sketches."""

    def __init__(self, data_type: pa.DataType, categories: list[str] | None) -> None:
        self.type = data_type
        self.kind = column_kind(data_type)
        self.categories = None if categories is None else list(categories)
        self.index = {c: i for i, c in enumerate(self.categories or [])}
        self.known = np.zeros(len(self.index), dtype=np.int64)
        self.count = 0
        self.nulls = 0
        self.sketch = CategorySketch()

    def update(self, column: pa.ChunkedArray) -> None:
        self.count += len(column)
        self.nulls += column.null_count
        values, counts = _value_counts(column)
        self.sketch.update(values, counts)
        if self.categories is not None:
            for value, count in zip(values, counts.tolist(), strict=True):
                position = self.index.get(value)
                if position is not None:
                    self.known[position] += count

    def finish(self) -> dict[str, Any]:
        serialized = self.sketch.serialized()
        top = top_items(serialized["items"], TOP_K)
        present = self.count - self.nulls
        if self.categories is None:
            categories = [value for value, _, _ in top]
            # lower bounds (the true counts below 768 distinct values) keep 'other' >= 0
            known = [lower for _, _, lower in top]
        else:
            categories, known = self.categories, [int(c) for c in self.known]
        return {
            "kind": self.kind,
            "dtype": _categorical_dtype(self.type),
            "count": self.count,
            "nulls": self.nulls,
            "distinct": distinct_count(serialized),
            "top": {value: count for value, count, _ in top},
            "categories": categories,
            "counts": [*known, present - sum(known), self.nulls],
            "arrow_type": _type_name(self.type),
            "sketches": serialized,
        }


def _categorical_dtype(data_type: pa.DataType) -> str:
    if pa.types.is_boolean(data_type):
        return "bool"
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    return "string"


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """Distinct non-null values of a batch as strings, with their counts."""
    if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):
        return _dictionary_counts(column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.string())
    counted = pc.value_counts(column)
    values = counted.field("values")
    keep = values.is_valid()
    return (
        values.filter(keep).to_pylist(),
        numbers(counted.field("counts").filter(keep)),
    )


def _dictionary_counts(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    totals: dict[str, int] = {}
    for chunk in column.chunks:
        counted = pc.value_counts(chunk)  # counts dictionary indices, without the GIL
        values = counted.field("values")
        keep = values.is_valid()
        names = values.filter(keep).dictionary_decode().to_pylist()
        for name, count in zip(
            names, counted.field("counts").filter(keep).to_pylist(), strict=True
        ):
            totals[name] = totals.get(name, 0) + count
    return list(totals), np.fromiter(totals.values(), dtype=np.int64, count=len(totals))


def histogram_counts(values: np.ndarray, edges: list[float], nulls: int) -> list[int]:
    """Counts in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``, then the null count."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [int(c) for c in counts] + [int(nulls)]


def merge_statistics(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The statistics of the union of two batches, from the statistics of each.

    Both must be computed against the same reference (same numeric edges and categories), for
    example ``compute_statistics(batch, reference=train_stats)`` on each serving worker. Exact
    parts (rows, count, nulls, min, max, mean, std, histogram counts) merge exactly (moments by
    Chan's parallel update, equal up to float rounding); quantiles, top-k and distinct come from
    the merged sketches, within the bounds in :mod:`keel.validate.sketches`.

    Args:
        a: Statistics of one batch.
        b: Statistics of another batch.

    Returns:
        Statistics of both, in the same format.

    Raises:
        DataValidationError: The two have different columns, bins or categories, or one was
            written before sketches existed (recompute it).
    """
    if list(a["columns"]) != list(b["columns"]):
        msg = (
            f"cannot merge statistics with different columns: {list(a['columns'])} vs "
            f"{list(b['columns'])}. Compute both from data with the same columns."
        )
        raise DataValidationError(msg)
    columns = {
        name: merge_column(name, stats, b["columns"][name], QUANTILES, TOP_K)
        for name, stats in a["columns"].items()
    }
    return {"rows": int(a["rows"]) + int(b["rows"]), "columns": columns}
