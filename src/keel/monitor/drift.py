"""PSI per feature between the training statistics and current data, on the training bins.

The training statistics froze each numeric column's decile edges and each categorical column's
category list; the current data is counted into the same bins (plus ``other`` and null bins), so
PSI is computed from two count vectors. Empty bins get a floor of 1e-4 on both sides, as in
Evidently, so a category that appears only now gives a large but finite PSI.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from keel.errors import DataValidationError
from keel.validate.shift import EPSILON, psi
from keel.validate.statistics import compute_statistics

__all__ = ["EPSILON", "compute_drift", "psi"]


def compute_drift(
    reference: dict[str, Any],
    current: pa.Table,
    *,
    columns: list[str],
    warn: float = 0.1,
    alert: float = 0.25,
    min_rows: int = 100,
) -> dict[str, Any]:
    """Per-column PSI with a verdict (``stable``, ``moderate``, ``drift``).

    Args:
        reference: Training statistics (with frozen bins).
        current: The data to compare (served inputs or a file).
        columns: Columns to check (the model's inputs).
        warn: PSI at or above which a column is ``moderate``.
        alert: PSI at or above which a column has ``drift``.
        min_rows: Below this many rows the verdict is ``insufficient_data``: PSI is noise there.

    Returns:
        ``{"rows", "verdict", "columns": [{"column", "psi", "verdict", "kind"}], ...}``.
    """
    present = [c for c in columns if c in current.column_names and c in reference["columns"]]
    stats = compute_statistics(
        _as_reference_types(current, present, reference), reference=reference
    )
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
    enough = current.num_rows >= min_rows
    drifted = [r["column"] for r in results if r["verdict"] == "drift"]
    if not enough:
        verdict = "insufficient_data"
    else:
        verdict = "drift" if drifted else "stable"
    return {
        "rows": current.num_rows,
        "reference_rows": reference["rows"],
        "verdict": verdict,
        "drifted_columns": drifted,
        "missing_columns": [c for c in columns if c not in current.column_names],
        "thresholds": {"warn": warn, "alert": alert, "min_rows": min_rows},
        "columns": results,
    }


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
