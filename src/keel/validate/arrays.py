"""Arrow <-> NumPy for fixed-width numeric columns, read from the buffers.

pyarrow's ``to_numpy``, ``pa.array`` and ``pa.scalar`` import pandas (about 0.15 s, holding the
GIL) the first time they run, even when no pandas object is involved. The statistics pass and
the duplicate search run on every ``keel validate`` and ``keel run``, so they convert through
these two functions instead: a view of the values buffer, and a new array over a NumPy buffer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

__all__ = ["bits", "fixed_width", "from_numpy", "numbers", "valid"]


def _dtype(data_type: pa.DataType) -> np.dtype[np.generic]:
    if pa.types.is_signed_integer(data_type):
        return np.dtype(f"<i{data_type.bit_width // 8}")
    if pa.types.is_unsigned_integer(data_type):
        return np.dtype(f"<u{data_type.bit_width // 8}")
    if pa.types.is_floating(data_type):
        return np.dtype(f"<f{data_type.bit_width // 8}")
    msg = f"expected an integer or floating-point Arrow type, got {data_type}"
    raise TypeError(msg)


def valid(chunk: pa.Array) -> np.ndarray | None:
    """The validity of an array's slots as booleans (True = present); None when none is null."""
    if not chunk.null_count:
        return None
    bitmap = chunk.buffers()[0]
    if bitmap is None:  # the null type: no bitmap, every slot null
        return np.zeros(len(chunk), dtype=np.bool_)
    return bits(bitmap, chunk.offset, len(chunk))


def bits(buffer: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """``length`` bits of an Arrow bitmap (validity or boolean values) from bit ``offset``."""
    bitmap = np.frombuffer(buffer, dtype=np.uint8)
    unpacked: np.ndarray = np.unpackbits(bitmap, count=offset + length, bitorder="little")
    return unpacked[offset:].view(np.bool_)


def fixed_width(chunk: pa.Array) -> np.ndarray:
    """Every slot of an integer or floating-point array (null slots hold whatever is there)."""
    dtype = _dtype(chunk.type)
    if not len(chunk):
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(
        chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize
    )


def _chunk(chunk: pa.Array, nulls: str) -> np.ndarray:
    values = fixed_width(chunk)
    present = valid(chunk)
    if present is None:
        return values
    if nulls == "drop":
        kept: np.ndarray = values[present]
        return kept
    out = values.astype(np.float64)
    out[~present] = np.nan
    return out


def numbers(
    column: pa.Array | pa.ChunkedArray, nulls: Literal["drop", "nan"] = "drop"
) -> np.ndarray:
    """The values of an integer or floating-point column as a (read-only) NumPy array.

    Args:
        column: An Arrow array or chunked array of a fixed-width numeric type.
        nulls: ``"drop"`` leaves nulls out (the result is shorter, in the column's own dtype);
            ``"nan"`` keeps every row, as float64 with NaN for null, when there are nulls.

    Returns:
        A view of the Arrow buffer where it can be (one chunk, no nulls), else a copy.

    Example:
        >>> numbers(pa.chunked_array([[1, None, 3]]), nulls="nan")
        array([ 1., nan,  3.])
    """
    dtype = _dtype(column.type)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [_chunk(chunk, nulls) for chunk in chunks]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(parts)


def from_numpy(values: np.ndarray) -> pa.Array:
    """An Arrow array (no nulls) over a 1-d numeric NumPy array, sharing its memory."""
    values = np.ascontiguousarray(values)
    data_type = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(data_type, len(values), [None, pa.py_buffer(values)])
