"""A timestamp input with a ``unit`` (unix times in training) takes the same numbers, decimal
text and ISO 8601 text on the row path (requests) and the batch path (scored files), value for
value; ingestion's SQL conversion agrees with both; the schema checks the unit."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import ConfigError, DataValidationError
from keel.features.temporal import to_micros
from keel.validate.coerce import Coercer, InputRule
from keel.validate.schema import ColumnSchema, Schema, infer_schema

UNITS = ("s", "ms", "us")


def _row(unit: str, value: Any) -> int | str | None:
    coercer = Coercer([InputRule("t", "timestamp", unit=unit, invalid="warning")])
    values, findings = coercer.row({"t": value})
    if any(f.kind == "type_mismatch" for f in findings):
        return "bad"
    return to_micros(values["t"])


def _batch(unit: str, values: pa.Array) -> list[int | str | None]:
    coercer = Coercer([InputRule("t", "timestamp", unit=unit, invalid="warning")])
    coerced = coercer.table(pa.table({"t": values}))
    bad = set().union(*(set(i.rows.tolist()) for i in coerced.issues)) if coerced.issues else set()
    column = coerced.table.column("t").to_pylist()
    return ["bad" if i in bad else to_micros(v) for i, v in enumerate(column)]


@pytest.mark.parametrize("unit", UNITS)
def test_numbers_text_and_iso_agree_on_both_paths(unit: str) -> None:
    scale = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    ints = [881_250_949 * scale, None, 10**17]  # the last is beyond the year 9999 in s and ms
    floats = [881_250_949.25 * scale, math.nan, math.inf]
    texts = [str(881_250_949 * scale), " 881250949 ", "1997-12-04T15:55:49", None, "1e300"]
    for raw, array in ((ints, pa.array(ints, pa.int64())), (floats, pa.array(floats)),
                       (texts, pa.array(texts))):  # fmt: skip
        assert [_row(unit, v) for v in raw] == _batch(unit, array), (unit, raw)
    assert _row(unit, 881_250_949 * scale) == to_micros(datetime(1997, 12, 4, 15, 55, 49))
    assert _row(unit, True) == "bad" and _batch(unit, pa.array([True])) == ["bad"]


@settings(max_examples=200, deadline=None)
@given(
    unit=st.sampled_from(UNITS),
    value=st.one_of(
        st.integers(-(10**19), 10**19).filter(lambda v: -(2**63) <= v < 2**63),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
)
def test_row_and_batch_agree_on_any_number(unit: str, value: int | float) -> None:
    array = pa.array([value], pa.int64() if isinstance(value, int) else pa.float64())
    assert [_row(unit, value)] == _batch(unit, array)


@pytest.mark.parametrize("unit", UNITS)
def test_ingestion_converts_as_requests_do(unit: str, tmp_path: Path) -> None:
    from keel.data.scan import _from_epoch

    values = {"s": [881250949, 1.6e9 + 0.5], "ms": [881250949123, 1.6e12 + 0.5],
              "us": [881250949123456, 1.6e15]}[unit]  # fmt: skip
    for value in values:
        kind = "BIGINT" if isinstance(value, int) else "DOUBLE"
        sql = f"SELECT {_from_epoch(f'CAST({value!r} AS {kind})', kind, unit)}"
        found = duckdb.connect().execute(sql).fetchone()
        assert found is not None and to_micros(found[0]) == _row(unit, value)


def test_a_unit_only_on_a_timestamp_and_only_s_ms_us() -> None:
    with pytest.raises(ConfigError, match="unit: 'h' is not one of s, ms, us"):
        ColumnSchema(type="timestamp", unit="h")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="only a timestamp column"):
        ColumnSchema(type="int", unit="s")
    with pytest.raises(DataValidationError):
        InputRule("t", "int", unit="s")
    schema = Schema.from_dict({"columns": {"t": {"type": "timestamp", "unit": "ms"}}})
    assert schema.to_dict(exclude_defaults=True)["columns"]["t"] == {"type": "timestamp",
                                                                      "unit": "ms"}  # fmt: skip
    rule = Coercer.from_schema(schema, ["t"]).rule("t")
    assert rule.unit == "ms" and InputRule.from_state(rule.state()) == rule
    assert "unit" not in InputRule("t", "timestamp").state()  # states without units unchanged


def test_inferred_schema_keeps_the_unit_of_a_timestamp() -> None:
    stats = {
        "rows": 3,
        "columns": {
            "ts": {"kind": "categorical", "dtype": "timestamp", "count": 3, "nulls": 0,
                   "distinct": 3, "categories": [], "top": {}},
            "n": {"kind": "numeric", "dtype": "int", "count": 3, "nulls": 0, "distinct": 3,
                  "min": 1, "max": 3},
        },
    }  # fmt: skip
    schema = infer_schema(stats, units={"ts": "s", "n": "s"})
    assert schema.columns["ts"].unit == "s" and schema.columns["n"].unit is None
