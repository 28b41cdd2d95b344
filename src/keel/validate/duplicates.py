"""Duplicate rows: 64-bit hashes of whole rows, batch by batch, and the rows that repeat one.

Each column becomes one 64-bit word per row (numbers by their bits, strings by a polynomial
hash of their bytes, computed once per distinct value through a dictionary encoding), the words
are mixed (splitmix64) and folded row-wise, in blocks of 32K rows so that every pass over a
block runs in cache. It is all NumPy ufuncs, which release the GIL, so the hashing overlaps the
statistics pass; 8 bytes a row are kept. Arrow's hash kernels then find the repeats. Equal rows
always hash equal (``-0.0`` equals ``0.0``, every NaN equals every NaN, nulls equal nulls); two
different rows share a hash with a probability of about 2**-64, so over ``n`` rows a false
repeat is about ``n**2 / 2**65`` likely. Rows are not compared value by value.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.arrays import bits, fixed_width, from_numpy, numbers, valid

__all__ = ["RowHashes", "repeated_rows", "row_hashes"]

_ROW = np.uint64(0x9E3779B97F4A7C15)  # odd: folds the column words of a row
_BYTE = np.uint64(0x100000001B3)  # odd: the base of the polynomial string hash
_BYTE_INVERSE = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_NULL_WORDS = np.array([0x6E756C6C6E756C6C], dtype=np.uint64)  # every null's word
_BLOCK_BYTES = 1 << 22  # strings are hashed this many bytes at a time (bounded scratch memory)
_BLOCK_ROWS = 1 << 15  # 256 KiB of words: a block's passes run in L2 cache


class RowHashes:
    """64-bit hashes of whole rows, batch by batch; called as ``on_batch`` of the statistics."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(columns)
        self.parts: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()

    def __call__(self, first_row: int, table: pa.Table) -> None:
        if not self.columns or not table.num_rows:
            return
        hashes = row_hashes(table.select(self.columns))
        with self.lock:
            self.parts[first_row] = hashes

    def result(self, rows: int) -> np.ndarray | None:
        """Every row's hash in row order; None when there were no columns to hash."""
        if not self.columns or rows < 2:
            return None
        with self.lock:
            return np.concatenate([self.parts[start] for start in sorted(self.parts)])


def row_hashes(table: pa.Table) -> np.ndarray:
    """One 64-bit hash per row of ``table``, equal for equal rows (column order matters)."""
    hashes = np.empty(table.num_rows, dtype=np.uint64)
    # blocks of rows small enough that a block's words stay in cache through every pass
    words = np.empty(_BLOCK_ROWS, dtype=np.uint64)
    scratch = np.empty(_BLOCK_ROWS, dtype=np.uint64)
    start = 0
    for batch in table.to_batches():  # columns chunked alike
        sources = [_source(column) for column in batch.columns]
        for low in range(0, batch.num_rows, _BLOCK_ROWS):
            high = min(low + _BLOCK_ROWS, batch.num_rows)
            block = hashes[start + low : start + high]
            block[:] = 0
            for source in sources:
                source(low, high, words[: high - low], scratch[: high - low])
                block *= _ROW
                block += words[: high - low]
        start += batch.num_rows
    return hashes


_Source: TypeAlias = Callable[[int, int, np.ndarray, np.ndarray], None]


def _source(array: pa.Array) -> _Source:
    """A writer of the mixed 64-bit words of rows ``[low, high)`` of ``array`` into ``out``.

    The per-array work (a dictionary's words, unpacking bits) is done once, here; every null
    gets the same word.
    """
    data_type = array.type
    if pa.types.is_dictionary(data_type):
        return _dictionary_source(array)
    if _is_text(data_type) and array.null_count < len(array):
        # hash each distinct value once; a dictionary's values are distinct, so they go straight in
        encoded = pc.dictionary_encode(array)
        if len(encoded.dictionary) < len(array):
            return _dictionary_source(encoded)
    if pa.types.is_null(data_type) or array.null_count == len(array):
        return _fill_source(_NULL_WORDS[0])
    present = valid(array)
    if pa.types.is_floating(data_type):
        return _numeric_source(fixed_width(array), present, floating=True)
    if pa.types.is_integer(data_type):
        return _numeric_source(fixed_width(array), present, floating=False)
    if pa.types.is_boolean(data_type):
        values = bits(array.buffers()[1], array.offset, len(array))
        return _numeric_source(values, present, floating=False)
    if pa.types.is_temporal(data_type) and data_type.bit_width in (32, 64):
        as_int = array.view(pa.int64() if data_type.bit_width == 64 else pa.int32())
        return _numeric_source(fixed_width(as_int), present, floating=False)
    # strings without repeats, decimals, fixed-size binary, the rest: by their bytes or text
    if not _is_text(data_type):
        binary = pa.types.is_fixed_size_binary(data_type)
        array = array.cast(pa.large_binary() if binary else pa.large_string())
    words = _text_words(array)
    _mix(words, np.empty_like(words))
    if present is not None:
        words[~present] = _NULL_WORDS[0]
    return _gather_source(words, None, None)


def _dictionary_source(array: pa.DictionaryArray) -> _Source:
    dictionary = array.dictionary
    table = _words(dictionary) if len(dictionary) else _NULL_WORDS
    return _gather_source(table, fixed_width(array.indices), valid(array.indices))


def _words(values: pa.Array) -> np.ndarray:
    """Mixed words of a (small) array, such as a dictionary's values, in fresh memory."""
    words = np.empty(len(values), dtype=np.uint64)
    _source(values)(0, len(values), words, np.empty_like(words))
    return words


def _gather_source(
    table: np.ndarray, codes: np.ndarray | None, present: np.ndarray | None
) -> _Source:
    def write(low: int, high: int, out: np.ndarray, scratch: np.ndarray) -> None:
        if codes is None:
            out[:] = table[low:high]
            return
        np.take(table, codes[low:high], out=out, mode="clip")
        if present is not None:
            out[~present[low:high]] = _NULL_WORDS[0]

    return write


def _fill_source(word: np.uint64) -> _Source:
    def write(low: int, high: int, out: np.ndarray, scratch: np.ndarray) -> None:
        out[:] = word

    return write


def _numeric_source(values: np.ndarray, present: np.ndarray | None, *, floating: bool) -> _Source:
    def write(low: int, high: int, out: np.ndarray, scratch: np.ndarray) -> None:
        if floating:
            as_float = out.view(np.float64)
            np.add(values[low:high], 0.0, out=as_float)  # -0.0 becomes 0.0
            as_float[np.isnan(as_float)] = np.nan  # one NaN bit pattern
        else:
            np.copyto(out, values[low:high], casting="unsafe")
        _mix(out, scratch)
        if present is not None:
            out[~present[low:high]] = _NULL_WORDS[0]

    return write


def _mix(words: np.ndarray, scratch: np.ndarray) -> None:
    """splitmix64's finaliser, in place: every input bit moves every output bit."""
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        np.right_shift(words, np.uint64(shift), out=scratch)
        words ^= scratch
        words *= np.uint64(multiplier)
    np.right_shift(words, np.uint64(31), out=scratch)
    words ^= scratch


def _is_text(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
    )


def _text_words(chunk: pa.Array) -> np.ndarray:
    """Polynomial hashes of each value's bytes, ``sum((b_j + 1) * B**j)`` mod 2**64, unmixed."""
    large = pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type)
    kind = np.int64 if large else np.int32
    width = np.dtype(kind).itemsize
    count = len(chunk)
    if not count:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(
        chunk.buffers()[1], dtype=kind, count=count + 1, offset=chunk.offset * width
    ).astype(np.int64)
    data_buffer = chunk.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, dtype=np.uint8)
    )
    words = np.empty(count, dtype=np.uint64)
    first = 0
    while first < count:
        # the values whose bytes fit in one block (at least one value)
        last = int(np.searchsorted(offsets, offsets[first] + _BLOCK_BYTES, side="right")) - 1
        last = min(max(last, first + 1), count)
        words[first:last] = _block_words(data, offsets[first : last + 1])
        first = last
    return words


def _block_words(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    begin, end = int(offsets[0]), int(offsets[-1])
    size = end - begin
    powers = np.full(size + 1, _BYTE, dtype=np.uint64)
    powers[0] = 1
    np.cumprod(powers, out=powers)  # B**j, wrapping mod 2**64
    prefix = np.zeros(size + 1, dtype=np.uint64)
    terms = data[begin:end].astype(np.uint64)
    terms += np.uint64(1)
    terms *= powers[:-1]
    np.cumsum(terms, out=prefix[1:])
    starts = offsets[:-1] - begin
    sums: np.ndarray = prefix[offsets[1:] - begin] - prefix[starts]
    inverse = np.full(size + 1, _BYTE_INVERSE, dtype=np.uint64)
    inverse[0] = 1
    np.cumprod(inverse, out=inverse)  # B**-j: shifts each value's sum to start at B**0
    sums *= inverse[starts]
    return sums


def repeated_rows(hashes: np.ndarray, limit: int | None = None) -> tuple[int, np.ndarray]:
    """How many rows repeat an earlier row's hash, and the first ``limit`` of them (ascending).

    Arrow's hash kernels, O(n) and without the GIL: the count is ``n - count_distinct``; the
    row ids come from a dictionary encoding of a prefix that grows until it holds ``limit``
    repeats (a new value takes the next dictionary code, so a row is a first occurrence exactly
    when its code exceeds every code before it). Sorting the hashes instead took seconds at
    10M rows when most rows repeat.
    """
    if hashes.size < 2:
        return 0, np.zeros(0, dtype=np.int64)
    count = hashes.size - int(pc.count_distinct(from_numpy(hashes)).as_py())
    want = count if limit is None else min(limit, count)
    if not want:
        return count, np.zeros(0, dtype=np.int64)
    end = min(hashes.size, max(1 << 12, 4 * want))
    while True:
        codes = numbers(pc.dictionary_encode(from_numpy(hashes[:end])).indices)
        first = np.empty(end, dtype=np.bool_)
        first[0] = True
        np.greater(codes[1:], np.maximum.accumulate(codes[:-1]), out=first[1:])
        found = np.flatnonzero(~first)
        if found.size >= want or end == hashes.size:
            return count, found[:want]
        end = min(hashes.size, end * 8)
