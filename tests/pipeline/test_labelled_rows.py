"""The labelled rows a retraining policy adds: checked row by row against the training schema
(excluded rows counted per reason), and accumulated across policy runs (de-duplicated by
request id and instance, the newest label winning, in a stable order)."""

from __future__ import annotations

import pyarrow as pa

from keel.pipeline.labelled_rows import INSTANCE, REQUEST_ID, accumulate, check_rows
from keel.validate.schema import ColumnSchema, Schema

TYPES = pa.schema([("hour", pa.int64()), ("temp", pa.float64()), ("kind", pa.string()),
                   ("cnt", pa.int64())])  # fmt: skip


def _schema(**severities: str) -> Schema:
    return Schema(
        columns={
            "hour": ColumnSchema(type="int", nullable=False, min=0, max=23),
            "temp": ColumnSchema(type="float", min=-10.0, max=40.0),
            "kind": ColumnSchema(type="string", categories=["a", "b"]),
            "cnt": ColumnSchema(type="int", role="target", nullable=False),
        },
        severities=severities,  # type: ignore[arg-type]
    )


def _rows(ids: list[str], cnt: list[float | None], **columns: list[object]) -> pa.Table:
    n = len(ids)
    data = {
        "hour": columns.get("hour", [1.0] * n),
        "temp": columns.get("temp", [20.0] * n),
        "kind": columns.get("kind", ["a"] * n),
        REQUEST_ID: ids,
        INSTANCE: columns.get("instance", [0] * n),
        "cnt": cnt,
    }
    return pa.table({k: pa.array(v) for k, v in data.items()})


def test_rows_that_do_not_fit_the_schema_are_excluded_and_counted() -> None:
    rows = _rows(
        ["r"] * 7,
        [10.0, None, 12.0, 13.0, 14.0, 15.0, float("nan")],
        hour=[1.0, 2.0, 2.5, None, 30.0, 3.0, 4.0],
        temp=[20.0, 20.0, 20.0, 20.0, 20.0, 99.0, 20.0],
        kind=["a", "a", "a", "a", "a", "z", "b"],
        instance=list(range(7)),
    )
    keep, excluded = check_rows(rows, _schema(), "cnt", TYPES)
    # by default out-of-range and unseen categories are warnings: drift is what to learn from
    assert keep.tolist() == [True, False, False, False, True, True, False]
    assert excluded == {
        "hour: not an integer (int64)": 1,
        "hour: null, the schema's column is not nullable": 1,
        "cnt: no label": 2,
    }
    strict = _schema(out_of_range="error", unseen_category="error")
    keep, excluded = check_rows(rows, strict, "cnt", TYPES)
    assert keep.tolist() == [True, False, False, False, False, False, False]
    assert excluded["hour: above the schema's max"] == 1
    assert excluded["temp: above the schema's max"] == 1
    assert sum(excluded.values()) == 6  # each row under its first failing check only


def test_labelled_rows_accumulate_across_runs() -> None:
    first = _rows(["a", "b", "c"], [1.0, 2.0, 3.0])
    merged, carried = accumulate(first, None)
    assert (merged.num_rows, carried) == (3, 0)
    # run 2: "a" left the span, "b" was relabelled, "d" is new
    second = _rows(["d", "b"], [4.0, 20.0])
    merged, carried = accumulate(second, first)
    assert carried == 2  # a and c, from run 1 only
    assert merged.column(REQUEST_ID).to_pylist() == ["a", "b", "c", "d"]
    assert merged.column("cnt").to_pylist() == [1.0, 20.0, 3.0, 4.0]
    # the same rows again: the same table, byte for byte (the pipeline's cache holds)
    again, carried = accumulate(second, merged)
    assert again.equals(merged) and carried == 2
    # the same request id with another instance is another row
    other = _rows(["a"], [9.0], instance=[1])
    assert accumulate(other, merged)[0].num_rows == 5
    # a snapshot from before the identity columns is not carried
    old = first.drop_columns([REQUEST_ID, INSTANCE])
    assert accumulate(second, old) == (accumulate(second, None)[0], 0)
