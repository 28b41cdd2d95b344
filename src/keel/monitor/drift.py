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
import pyarrow.parquet as pq

from keel.data.files import open_data, read_batches, retyped
from keel.errors import DataValidationError
from keel.validate.shift import EPSILON, psi
from keel.validate.statistics import compute_statistics

if TYPE_CHECKING:
    from keel.data.sources import CsvFile

__all__ = ["EPSILON", "compute_drift", "psi"]

BATCH_ROWS = 1 << 18  # rows cast at a time (the statistics regroup them into larger batches)


def compute_drift(
    reference: dict[str, Any],
    current: pa.Table | str | Path,
    *,
    columns: list[str],
    warn: float = 0.1,
    alert: float = 0.25,
    min_rows: int = 100,
) -> dict[str, Any]:
    """Per-column PSI with a verdict (``stable``, ``moderate``, ``drift``).

    Args:
        reference: Training statistics (with frozen bins).
        current: The data to compare (served inputs, or a Parquet or CSV file, which is read in
            batches: bounded memory whatever its size).
        columns: Columns to check (the model's inputs).
        warn: PSI at or above which a column is ``moderate``.
        alert: PSI at or above which a column has ``drift``.
        min_rows: Below this many rows the verdict is ``insufficient_data``: PSI is noise there.

    Returns:
        ``{"rows", "verdict", "columns": [{"column", "psi", "verdict", "kind"}], ...}``.
    """
    opened = current if isinstance(current, pa.Table) else open_data(Path(current))
    names = _names(opened)
    present = [c for c in columns if c in names and c in reference["columns"]]
    rows, stats = retyped(opened, lambda: _statistics(opened, present, reference))
    results = []
    for name in present:
        ref = reference["columns"][name]
        value = psi(
            np.asarray(ref["counts"], float), np.asarray(stats["columns"][name]["counts"], float)
        )
        verdict = "drift" if value >= alert else "moderate" if value >= warn else "stable"
        results.append(
            {"column": name, "kind": ref["kind"], "psi": round(value, 6), "verdict": verdict}
        )
    results.sort(key=lambda r: -r["psi"])
    enough = rows >= min_rows
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


def _names(opened: pa.Table | Path | CsvFile) -> list[str]:
    if isinstance(opened, Path):
        return list(pq.read_schema(opened).names)
    return list(opened.schema.names)


def _statistics(
    opened: pa.Table | Path | CsvFile, present: list[str], reference: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """Rows, and the statistics of ``present`` cast to the training kinds, on its bins."""
    rows = 0
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
            yield from _as_reference_types(table, present, reference).to_batches()

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    stats = compute_statistics(reader, reference=reference)
    return rows, stats


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
