"""Row hashes and the Arrow buffer reads under them: equal rows hash equal, different rows don't."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.validate import duplicates
from keel.validate.arrays import from_numpy, numbers
from keel.validate.duplicates import repeated_rows, row_hashes

INTS = st.one_of(st.none(), st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1))
FLOATS = st.one_of(
    st.none(), st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, 1.5]), st.floats()
)
TEXTS = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "é"]), st.text(max_size=6))
ROWS = st.lists(st.tuples(INTS, FLOATS, TEXTS, st.one_of(st.none(), st.booleans())), max_size=40)


def canonical(value: Any) -> Any:
    """What a duplicate check calls equal: -0.0 is 0.0, every NaN is the same."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value + 0.0
    return value


def as_table(rows: list[tuple[Any, ...]], dictionary: bool) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    text = pa.array(columns[2], type=pa.string())
    return pa.table(
        {
            "i": pa.array(columns[0], type=pa.int64()),
            "f": pa.array(columns[1], type=pa.float64()),
            "s": text.dictionary_encode() if dictionary else text,
            "b": pa.array(columns[3], type=pa.bool_()),
        }
    )


@settings(max_examples=150, deadline=None)
@given(ROWS, st.booleans(), st.integers(1, 7))
def test_rows_hash_equal_exactly_when_they_are_equal(
    rows: list[tuple[Any, ...]], dictionary: bool, chunk: int
) -> None:
    table = as_table(rows, dictionary)
    hashes = row_hashes(table)
    for i, a in enumerate(rows):
        for j, b in enumerate(rows[:i]):
            same = tuple(map(canonical, a)) == tuple(map(canonical, b))
            assert (hashes[i] == hashes[j]) == same, (a, b)
    # batch boundaries, slices and chunking change nothing
    batches = table.to_batches(max_chunksize=chunk)
    assert row_hashes(pa.Table.from_batches(batches, schema=table.schema)).tolist() == (
        hashes.tolist()
    )
    if len(rows) > 2:
        assert row_hashes(table.slice(1)).tolist() == hashes[1:].tolist()


def test_other_arrow_types_hash_by_value() -> None:
    import datetime
    import decimal

    day = datetime.datetime(2024, 1, 1)
    table = pa.table(
        {
            "t": pa.array([day, day, day, None]),
            "d": pa.array([decimal.Decimal("1.5")] * 2 + [decimal.Decimal("2.5"), None]),
            "n": pa.nulls(4),
            "fixed": pa.array([b"ab", b"ab", b"ab", None], pa.binary(2)),
            "date": pa.array([day.date()] * 4),
            "small": pa.array([1, 1, 1, None], pa.int8()),
            "half": pa.array([np.float16(1)] * 4, pa.float16()),
        }
    )
    hashes = row_hashes(table)
    assert hashes[0] == hashes[1] != hashes[2] != hashes[3]


def test_long_strings_are_hashed_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duplicates, "_BLOCK_BYTES", 1000)
    unique = [str(i) * 300 for i in range(500)]
    hashes = row_hashes(pa.table({"s": [*unique, unique[7], "", ""]}))
    count, first = repeated_rows(hashes)
    assert (count, first.tolist()) == (2, [500, 502])


@given(st.lists(st.integers(min_value=0, max_value=6), max_size=60))
def test_repeated_rows_are_the_later_copies(values: list[int]) -> None:
    seen: set[int] = set()
    want = []
    for i, v in enumerate(values):
        if v in seen:
            want.append(i)
        seen.add(v)
    hashes = np.asarray(values, dtype=np.uint64)
    count, got = repeated_rows(hashes)
    assert (count, got.tolist()) == (len(want), want)
    count, first = repeated_rows(hashes, limit=2)
    assert (count, first.tolist()) == (len(want), want[:2])


def test_repeated_rows_finds_late_repeats_past_the_first_prefix() -> None:
    hashes = np.arange(100_000, dtype=np.uint64)
    hashes[[70_000, 99_999]] = [5, 70_001]
    count, first = repeated_rows(hashes, limit=20)
    assert (count, first.tolist()) == (2, [70_000, 99_999])


@pytest.mark.parametrize("data_type", [pa.int8(), pa.uint16(), pa.int64(), pa.float32()])
def test_numbers_reads_sliced_chunks_with_nulls(data_type: pa.DataType) -> None:
    column = pa.chunked_array(
        [pa.array([1, None, 3, 4], data_type).slice(1), pa.array([5, 6], data_type)]
    )
    assert numbers(column, nulls="drop").tolist() == [3, 4, 5, 6]
    assert np.isnan(numbers(column, nulls="nan")[0])
    assert numbers(column, nulls="nan")[1:].tolist() == [3.0, 4.0, 5.0, 6.0]
    assert numbers(pa.chunked_array([], data_type)).size == 0


def test_from_numpy_shares_the_buffer() -> None:
    values = np.arange(5, dtype=np.int64)
    array = from_numpy(values[::2])
    assert array.to_pylist() == [0, 2, 4]
    assert numbers(array).tolist() == [0, 2, 4]


def test_validation_imports_neither_pandas_nor_duckdb(tmp_path: Path) -> None:
    """pyarrow's to_numpy would import pandas (~0.15 s); the validate path reads buffers."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1, 2, 2, None], "s": ["a", "b", "b", None]}), path)
    code = (
        "import sys\n"
        "from keel.validate.anomalies import validate_data\n"
        f"report = validate_data({str(path)!r})\n"
        "assert [a.kind for a in report.anomalies] == ['duplicate_rows'], report.anomalies\n"
        "print(sorted(m for m in ('pandas', 'duckdb') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
