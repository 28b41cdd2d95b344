"""PSI per feature between the training statistics and current data, on the training bins.

The training statistics froze each numeric column's decile edges and each categorical column's
category list; the current data is counted into the same bins (plus ``other`` and null bins), so
PSI is computed from two count vectors. Empty bins get a floor of 1e-4 on both sides, as in
Evidently, so a category that appears only now gives a large but finite PSI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.data.files import open_data, read_batches, retyped
from keel.data.reader import CsvFile
from keel.errors import DataValidationError
from keel.validate.shift import EPSILON, psi
from keel.validate.statistics import compute_statistics

if TYPE_CHECKING:
    from keel.validate.coerce import Coercer

__all__ = ["EPSILON", "compute_drift", "log_table", "psi"]

BATCH_ROWS = 1 << 18  # rows cast at a time (the statistics regroup them into larger batches)


def compute_drift(
    reference: dict[str, Any],
    current: pa.Table | CsvFile | str | Path,
    *,
    columns: list[str],
    warn: float = 0.1,
    alert: float = 0.25,
    min_rows: int = 100,
    coercer: Coercer | None = None,
) -> dict[str, Any]:
    """Per-column PSI with a verdict (``stable``, ``moderate``, ``drift``).

    With fewer than ``min_rows`` rows every verdict is ``insufficient_data``: PSI of a handful
    of rows is noise, never "drift" or "stable".

    Args:
        reference: Training statistics (with frozen bins).
        current: The data to compare (served inputs, or a Parquet or CSV file, which is read in
            batches: bounded memory whatever its size; a CSV as
            :func:`keel.data.reader.open_file` opened it, or with its dialect detected).
        columns: Columns to check (the model's inputs).
        warn: PSI at or above which a column is ``moderate``.
        alert: PSI at or above which a column has ``drift``.
        min_rows: Below this many rows the verdict is ``insufficient_data``: PSI is noise there.
        coercer: The model's coercion rules: values are read as serving reads them (``Yes``
            and ``true`` are one boolean; ``"42"`` is a number) before they are counted, and
            values that do not convert are counted per column (``invalid``) instead.

    Returns:
        ``{"rows", "verdict", "columns": [{"column", "psi", "verdict", "kind", "invalid"}],
        ...}``.

    Raises:
        DataValidationError: The data has rows but lacks some of ``columns`` (lists what was
            expected and what was found).
    """
    opened = current if isinstance(current, pa.Table | CsvFile) else open_data(Path(current))
    names = _names(opened)
    missing = [c for c in columns if c not in names]
    if missing and names:
        raise DataValidationError(
            f"{'none' if len(missing) == len(columns) else 'only some'} of the model's input "
            f"columns are in the data: missing {missing}; found {names[:20]}. Expected "
            f"{columns}. Check the file's delimiter and header, or pass the right file.",
            field=missing[0],
        )
    present = [c for c in columns if c in names and c in reference["columns"]]
    rules = None if coercer is None else coercer.subset(present)
    invalid: dict[str, int] = dict.fromkeys(present, 0)
    rows, stats = retyped(opened, lambda: _statistics(opened, present, reference, rules, invalid))
    enough = rows >= min_rows
    results = []
    for name in present:
        ref = reference["columns"][name]
        value = psi(
            np.asarray(ref["counts"], float), np.asarray(stats["columns"][name]["counts"], float)
        )
        verdict = "drift" if value >= alert else "moderate" if value >= warn else "stable"
        results.append(
            {
                "column": name,
                "kind": ref["kind"],
                "psi": round(value, 6),
                "verdict": verdict if enough else "insufficient_data",
                "invalid": invalid[name],
            }
        )
    results.sort(key=lambda r: -r["psi"])
    drifted = [r["column"] for r in results if r["verdict"] == "drift"]
    if not enough:
        verdict = "insufficient_data"
    else:
        verdict = "drift" if drifted else "stable"
    return {
        "rows": rows,
        "reference_rows": reference["rows"],
        "verdict": verdict,
        "drifted_columns": drifted,
        "missing_columns": [c for c in columns if c not in names],
        "thresholds": {"warn": warn, "alert": alert, "min_rows": min_rows},
        "columns": results,
    }


def log_table(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    """Logged request rows as a table, one column per input, whatever JSON types clients sent
    (a column that mixes ``"Yes"`` and ``true`` becomes text, which the coercer reads)."""
    if not rows:
        return pa.table({})
    arrays = []
    for name in columns:
        values = [row.get(name) if isinstance(row, dict) else None for row in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            text = [None if v is None else _text(v) for v in values]
            arrays.append(pa.array(text, type=pa.string()))
    return pa.table(arrays, names=columns)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _names(opened: pa.Table | Path | CsvFile) -> list[str]:
    if isinstance(opened, Path):
        return list(pq.read_schema(opened).names)
    return list(opened.schema.names)


def _statistics(
    opened: pa.Table | Path | CsvFile,
    present: list[str],
    reference: dict[str, Any],
    coercer: Coercer | None,
    invalid: dict[str, int],
) -> tuple[int, dict[str, Any]]:
    """Rows, and the statistics of ``present`` cast to the training kinds, on its bins."""
    rows = 0
    invalid.update(dict.fromkeys(invalid, 0))  # a retry after widening a CSV's types counts anew
    schema = pa.schema(
        [
            (n, pa.float64() if reference["columns"][n]["kind"] == "numeric" else pa.string())
            for n in present
        ]
    )

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for table in read_batches(opened, present or None, BATCH_ROWS):
            rows += table.num_rows
            if coercer is not None:
                table = _coerced(table, coercer, invalid)
            yield from _as_reference_types(table, present, reference).to_batches()

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    stats = compute_statistics(reader, reference=reference)
    return rows, stats


def _coerced(table: pa.Table, coercer: Coercer, invalid: dict[str, int]) -> pa.Table:
    """The columns as serving reads them; booleans spelled as in training (the reference
    counted the training spellings), values that do not convert counted and left missing."""
    coerced = coercer.table(table)
    for issue in coerced.issues:
        if issue.kind == "type_mismatch":
            invalid[issue.column] += issue.count
    columns = []
    for rule, column in zip(coercer.rules, coerced.table.columns, strict=True):
        if rule.type == "bool":
            spelled = pa.array([rule.false_values[0], rule.true_values[0]], type=pa.string())
            codes = pc.cast(column, pa.int8())
            column = pc.take(spelled, codes)
        columns.append(column)
    return pa.table(columns, names=coercer.names)


def _as_reference_types(table: pa.Table, columns: list[str], reference: dict[str, Any]) -> pa.Table:
    """Cast each column to its training kind, so bins line up even for all-null columns."""
    cast = []
    for name in columns:
        kind = reference["columns"][name]["kind"]
        target = pa.float64() if kind == "numeric" else pa.string()
        try:
            cast.append(table.column(name).cast(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            msg = f"column '{name}' cannot be read as {kind} like the training data ({exc})."
            raise DataValidationError(msg, field=name) from exc
    return pa.table(cast, names=columns)
