"""Outliers: robust per-column scores and the isolation forest report injected rows by id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from keel.validate.outliers import find_outliers, robust_z
from keel.validate.schema import ColumnSchema, Schema


def test_robust_z_ignores_the_outliers_themselves() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 1000.0, np.nan])
    z = robust_z(values)
    assert z is not None
    # median 3.5 and MAD 1.5 of the finite values: the 1000 does not move the scale
    assert z[2] == -z[3] == 0.6745 * -0.5 / 1.5
    assert z[5] > 100 and np.isnan(z[6])
    assert robust_z(np.array([0.0, 0.0, 0.0, 5.0])) is None  # MAD 0: no robust scale


def _table(seed: int = 0) -> tuple[pa.Table, list[int]]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=2000), rng.normal(size=2000)
    planted = [17, 500, 1999]
    a[planted] = [25.0, -30.0, 40.0]
    return pa.table({"a": a, "b": b, "label": rng.integers(0, 2, 2000)}), planted


def test_planted_values_are_reported_by_row_id() -> None:
    table, planted = _table()
    schema = Schema(columns={
        "a": ColumnSchema(type="float"), "b": ColumnSchema(type="float"),
        "label": ColumnSchema(type="int", role="target"),
    })  # fmt: skip
    found = find_outliers(table, schema, name="d")
    per_column = {a.column: a for a in found}
    assert set(per_column) <= {"a", "b", None} and "label" not in per_column
    assert set(per_column["a"].details["row_ids"][:3]) == set(planted)
    assert per_column["a"].severity == "warning"
    assert per_column["a"].details["rows"] < 10  # normal tails stay under |z| 3.5, mostly
    assert set(planted) <= set(per_column[None].details["row_ids"][:10])


def test_a_column_mostly_off_its_median_is_not_called_outlying() -> None:
    # 70% at 40 hours, the rest spread: 30% would pass |z| > 3.5, which describes the column
    hours = np.where(np.arange(1000) % 10 < 7, 40.0, np.arange(1000) % 97)
    found = find_outliers(pa.table({"h": hours}), Schema(columns={}))
    assert [a.column for a in found if a.column is not None] == []


def test_sampling_caps_the_rows_scored() -> None:
    table, _ = _table()
    found = find_outliers(table, Schema(columns={}), max_rows=500)
    assert found and all(a.details["sampled"] == 500 for a in found)
    assert all(0 <= r < 2000 for a in found for r in a.details["row_ids"])


def test_no_numeric_columns_no_outliers() -> None:
    assert find_outliers(pa.table({"c": ["a"] * 50}), Schema(columns={})) == []
