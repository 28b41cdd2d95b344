"""Outlying rows: robust per-column scores and a multivariate isolation forest, on a sample.

Per column, the modified z-score ``0.6745 * (x - median) / MAD`` (Iglewicz and Hoaglin) flags
``|z| > 3.5``; a column whose MAD is 0 (mostly one value, e.g. capital gains) has no robust
scale and is skipped, and so is one where over 5% of the rows pass the limit (a spike at one
value, such as 40 hours a week, makes the MAD too small to describe the rest). Across the
numeric columns, scikit-learn's ``IsolationForest`` (``contamination="auto"``) flags rows with a
negative decision score. Both run on at most
``max_rows`` sampled rows and report 0-based row ids of the data, most extreme first.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from keel.validate.anomalies import UNCHECKED_ROLES, Anomaly
from keel.validate.labels import feature_matrix
from keel.validate.schema import Schema
from keel.validate.statistics import column_kind

__all__ = ["MAX_FRACTION", "Z_LIMIT", "find_outliers", "robust_z"]

Z_LIMIT = 3.5
# Outliers are rare by definition: when more rows than this pass the limit, the median and MAD
# do not describe the column (a spike at one value, a discrete or very skewed column).
MAX_FRACTION = 0.05


def robust_z(values: np.ndarray) -> np.ndarray | None:
    """Modified z-scores (NaN stays NaN); None when the MAD is 0 or nothing is present."""
    present = values[np.isfinite(values)]
    if not present.size:
        return None
    median = float(np.median(present))
    mad = float(np.median(np.abs(present - median)))
    if mad == 0:
        return None
    return 0.6745 * (values - median) / mad


def find_outliers(
    table: pa.Table,
    schema: Schema,
    *,
    name: str = "data",
    max_rows: int = 50_000,
    seed: int = 0,
    examples: int = 20,
) -> list[Anomaly]:
    """``outliers`` warnings: one per column with robust outliers, one for the forest.

    Args:
        table: The data.
        schema: Roles: the target and timestamp, entity and pii columns are left out.
        name: How to call the data in messages.
        max_rows: Rows sampled.
        seed: Seed of the sample and the forest.
        examples: Row ids reported per anomaly.

    Returns:
        The anomalies; each one's details hold the count, the sample size and the row ids.
    """
    columns = [
        c
        for c in table.column_names
        if column_kind(table.column(c).type) == "numeric"
        and (c not in schema.columns or schema.columns[c].role not in {"target", *UNCHECKED_ROLES})
    ]
    if not columns or table.num_rows < 10:
        return []
    rows = np.arange(table.num_rows)
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
    x = feature_matrix(table.take(pa.array(rows)), columns)
    found = []
    for index, column in enumerate(columns):
        z = robust_z(x[:, index])
        if z is None:
            continue
        extreme = np.abs(np.nan_to_num(z, nan=0.0))
        hits = np.flatnonzero(extreme > Z_LIMIT)
        if hits.size and hits.size <= MAX_FRACTION * len(rows):
            top = hits[np.argsort(-extreme[hits], kind="stable")][:examples]
            found.append(_anomaly(column, name, hits.size, len(rows), rows[top], "robust z"))
    found.extend(_forest(x, rows, name, seed, examples))
    return found


def _forest(x: np.ndarray, rows: np.ndarray, name: str, seed: int, examples: int) -> list[Anomaly]:
    from sklearn.ensemble import IsolationForest

    with warnings.catch_warnings():  # an all-null column has no median; it is filled with 0
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)
    filled = np.where(np.isfinite(x), x, np.nan_to_num(medians, nan=0.0))
    forest = IsolationForest(n_estimators=100, contamination="auto", random_state=seed)
    scores = forest.fit(filled).decision_function(filled)
    hits = np.flatnonzero(scores < 0)
    if not hits.size:
        return []
    top = hits[np.argsort(scores[hits], kind="stable")][:examples]
    return [_anomaly(None, name, hits.size, len(rows), rows[top], "isolation forest")]


def _anomaly(
    column: str | None, name: str, count: int, sampled: int, row_ids: np.ndarray, method: str
) -> Anomaly:
    where = f"column '{column}'" if column else "the numeric columns together"
    ids = [int(r) for r in row_ids]
    message = (
        f"{name}: {count} of {sampled} sampled rows ({count / sampled:.1%}) are outliers in "
        f"{where} ({method}), e.g. rows {ids[:5]}."
    )
    details: dict[str, Any] = {
        "rows": count,
        "sampled": sampled,
        "fraction": count / sampled,
        "row_ids": ids,
        "method": method if column is None else f"{method} > {Z_LIMIT}",
    }
    return Anomaly(column, "outliers", "warning", message, details)
