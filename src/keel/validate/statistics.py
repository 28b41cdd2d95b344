"""Per-column statistics in one vectorised pass, with histogram bins frozen from the reference.

Numeric columns get count, nulls, min/max/mean/std, quantiles and a histogram on edges taken at
the reference deciles (outer edges open, one extra bin for nulls). Categorical columns get the
top-k values with counts plus an ``other`` bucket and a null bucket. Monitoring reuses the
reference edges and categories, so drift is computed from counts in O(bins).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["column_kind", "compute_statistics", "histogram_counts"]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_K = 50
OTHER = "__other__"


def column_kind(data_type: pa.DataType) -> str:
    """``numeric``, ``boolean`` or ``categorical`` for an Arrow type."""
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return "numeric"
    if pa.types.is_boolean(data_type):
        return "boolean"
    return "categorical"


def compute_statistics(
    table: pa.Table, *, reference: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Statistics for every column of a table.

    Args:
        table: The data.
        reference: Statistics of a reference table; when given, histograms reuse its bin edges
            and categories so the two can be compared bin by bin.

    Returns:
        ``{"rows": n, "columns": {name: {...}}}``, JSON-serialisable.
    """
    ref_columns = (reference or {}).get("columns", {})
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column_kind(column.type)
        ref = ref_columns.get(name)
        if kind == "numeric":
            columns[name] = _numeric(column, ref)
        else:
            columns[name] = _categorical(column, ref, kind)
    return {"rows": table.num_rows, "columns": columns}


def _numeric(column: pa.ChunkedArray, ref: dict[str, Any] | None) -> dict[str, Any]:
    present = column.drop_null().to_numpy().astype(np.float64, copy=False)
    nan = np.isnan(present)
    # NaN is missing everywhere in Keel (the feature pipeline imputes it), so it counts as null;
    # +-inf stay in the outer bins so the counts always add up to the rows.
    nulls = column.null_count + int(nan.sum())
    binned = present[~nan]
    values = binned[np.isfinite(binned)]
    is_integer = pa.types.is_integer(column.type)
    out: dict[str, Any] = {
        "kind": "numeric",
        "dtype": "int" if is_integer else "float",
        "count": len(column),
        "nulls": nulls,
    }
    if values.size:
        # values near the float64 limits may overflow to inf in the sums; that is the answer
        with np.errstate(over="ignore", invalid="ignore"):
            quantiles = np.quantile(values, QUANTILES)
            out.update(
                min=float(values.min()),
                max=float(values.max()),
                mean=float(values.mean()),
                std=float(values.std()),
                quantiles={str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
                distinct=int(np.unique(values).size),
            )
    if ref is not None and ref.get("kind") == "numeric":
        edges = list(ref["edges"])
    else:
        edges = _decile_edges(values)
    out["edges"] = edges
    out["counts"] = histogram_counts(binned, edges, nulls)
    return out


def _decile_edges(values: np.ndarray) -> list[float]:
    if not values.size:
        return []
    with np.errstate(over="ignore", invalid="ignore"):
        inner = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    return [float(edge) for edge in inner if np.isfinite(edge)]


def histogram_counts(values: np.ndarray, edges: list[float], nulls: int) -> list[int]:
    """Counts in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``, then the null count."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [int(c) for c in counts] + [int(nulls)]


def _categorical(column: pa.ChunkedArray, ref: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    nulls = column.null_count
    as_text = column.cast(pa.string()) if kind == "boolean" else column
    counted = pc.value_counts(as_text.drop_null())
    values = counted.field("values").to_pylist()
    counts = counted.field("counts").to_numpy()
    order = np.argsort(-counts, kind="stable")
    freq = {str(values[i]): int(counts[i]) for i in order}
    if ref is not None and ref.get("kind") in ("categorical", "boolean"):
        categories = list(ref["categories"])
    else:
        categories = list(freq)[:TOP_K]
    known = set(categories)
    other = sum(c for v, c in freq.items() if v not in known)
    return {
        "kind": kind,
        "dtype": "bool" if kind == "boolean" else "string",
        "count": len(column),
        "nulls": nulls,
        "distinct": len(freq),
        "top": dict(list(freq.items())[:TOP_K]),
        "categories": categories,
        "counts": [freq.get(c, 0) for c in categories] + [other, nulls],
    }
