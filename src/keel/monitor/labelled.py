"""The prediction log's request ids, instances and outputs, for joining labels to predictions.

:func:`read_logged` streams the same JSON Lines files, in the same order and with the same
version, role and time filter as :func:`keel.monitor.window.read_log`, so a row's position (and
so its row-count window) is the same in both; but it keeps what labels need: each row's request
id, its position in its request (``instance``), the request's time, version and role, the
prediction, P(positive) for a binary classifier, and the key columns a key-joined label names.
Arrow's JSON reader parses a file block by block (no Python loop over rows); a file whose values
do not fit the declared types is read line by line with orjson instead. Memory is one block at a
time. ``files_since`` skips day folders wholly before a time (a label's lookup reads only the
files within ``monitor.feedback.max_delay``).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from keel.monitor.counts import booleans, strings
from keel.monitor.logfiles import Part, logged_requests
from keel.monitor.window import (
    BATCH_ROWS,
    BLOCK_BYTES,
    WHOLE_FILE_BYTES,
    LogFilter,
    log_sources,
    request_instances,
)
from keel.validate.arrays import from_numpy, numbers

__all__ = [
    "LoggedRows",
    "Lookup",
    "canonical_value",
    "joined_key",
    "key_arrow_types",
    "key_hash",
    "key_hashes",
    "logged_sources",
    "read_logged",
]

_SLOW_REQUESTS = 4096
_ARROW = {"int": pa.float64(), "float": pa.float64(), "bool": pa.bool_()}


@dataclass(frozen=True)
class Lookup:
    """Labels by their join key (:func:`joined_key` of their columns) and their index.

    Built once per join: each key's 64-bit hash (:func:`key_hashes`), sorted. A block of log
    rows is looked up by binary search of its keys' hashes, and every hit is confirmed on the
    key text, so a hash collision never joins a wrong label (Arrow's ``index_in`` would rebuild
    its hash table of every label for each block: seconds per block at a million labels).
    """

    keys: pa.Array
    labels: np.ndarray
    hashes: np.ndarray = field(init=False, repr=False)
    order: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hashes, valid = key_hashes(self.keys)
        order = np.flatnonzero(valid)
        order = order[np.argsort(hashes[order], kind="stable")]
        object.__setattr__(self, "hashes", hashes[order])
        object.__setattr__(self, "order", order.astype(np.int64))

    def find(self, columns: list[pa.Array | pa.ChunkedArray]) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose key has a label (ascending), and that label's index (a hash lookup)."""
        none = np.zeros(0, dtype=np.int64)
        if not len(self.hashes):
            return none, none
        probe = joined_key(columns)
        hashes, valid = key_hashes(probe)
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        rows = np.flatnonzero(valid & (self.hashes[at] == hashes))
        if not rows.size:
            return none, none
        found = self.order[at[rows]]
        same = booleans(pc.equal(probe.take(from_numpy(rows)), self.keys.take(from_numpy(found))))
        return rows[same].astype(np.int64), self.labels[found[same]]


_FNV_PRIME = np.uint64(0x100000001B3)
_HASH_ROWS = 65_536  # keys hashed at a time: bounds the temporary byte matrix


def key_hashes(keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each key's bytes (FNV-style over 8-byte words, vectorised: a loop over
    a key's words, never over rows) and whether the key is valid (not null)."""
    n = len(keys)
    valid = booleans(pc.is_valid(keys)) if keys.null_count else np.ones(n, dtype=bool)
    binary = pc.fill_null(keys, "") if keys.null_count else keys
    binary = binary.cast(pa.large_binary())
    _, offsets_buffer, data_buffer = binary.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[binary.offset : binary.offset + n + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else None
    if data is None or not data.size:
        data = np.zeros(1, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint64)
    byte = np.arange(8)
    for start in range(0, n, _HASH_ROWS):
        stop = min(start + _HASH_ROWS, n)
        first = offsets[start:stop]
        length = offsets[start + 1 : stop + 1] - first
        hashed = length.astype(np.uint64) * _FNV_PRIME
        for word in range(-(-int(length.max(initial=0)) // 8)):
            at = first[:, None] + (word * 8 + byte)
            chunk = np.where(
                (word * 8 + byte) < length[:, None], data[np.minimum(at, data.size - 1)], 0
            ).astype(np.uint8)
            mixed = (hashed ^ chunk.view(np.uint64).ravel()) * _FNV_PRIME
            # a key's words only: its hash never depends on the longest key beside it
            hashed = np.where(length > word * 8, mixed ^ (mixed >> np.uint64(29)), hashed)
        out[start : start + len(first)] = hashed
    return out, valid


def key_arrow_types(inputs: dict[str, str], key: tuple[str, ...]) -> dict[str, pa.DataType]:
    """Each key column's Arrow type as the log is read: numbers as float64, booleans, text."""
    return {name: _ARROW.get(inputs[name], pa.string()) for name in key}


@dataclass(frozen=True)
class LoggedRows:
    """A block of logged rows (one per served instance) that passed the filter.

    ``first_row`` is the position of the block's first row among every selected row (what a
    row-count window counts); ``keys`` holds the key columns (no columns when none is asked).
    """

    first_row: int
    request_id: pa.Array
    instance: np.ndarray
    time: np.ndarray
    version: pa.Array
    role: pa.Array
    prediction: pa.Array
    probability: np.ndarray | None
    keys: pa.Table

    @property
    def rows(self) -> int:
        """Rows in the block."""
        return len(self.instance)


def logged_sources(directory: Path, model: str, select: LogFilter) -> list[Part | Path]:
    """The model's compacted parts and JSON Lines files, in the drift reader's order."""
    return log_sources(directory / model, select)


def read_logged(
    directory: Path,
    model: str,
    *,
    select: LogFilter = LogFilter(),
    keys: dict[str, pa.DataType] | None = None,
    prediction_type: pa.DataType = pa.string(),
    binary: bool = False,
    only: frozenset[Part] | None = None,
) -> Iterator[LoggedRows]:
    """Stream the logged rows of ``model`` that ``select`` keeps, with their request ids.

    Args:
        directory: The log's root (``.keel/predictions``).
        model: The model's name.
        select: Version, role and time range to keep.
        keys: Key columns to read from the inputs, with their Arrow types.
        prediction_type: The logged predictions' type (string labels, float64 values).
        binary: Read ``probabilities`` as P(positive).
        only: Read these compacted parts only (the ones a monitoring run merged stored
            sketches of instead of reading their rows).
    """
    key_types = keys or {}
    first = 0
    sources = logged_sources(directory, model, select)
    if only is not None:
        sources = [s for s in sources if s in only]
    for source in sources:
        if isinstance(source, Part):
            blocks = _read_part(source.path, key_types, select, prediction_type, binary, first)
        else:
            blocks = _read_file(source, key_types, select, prediction_type, binary, first)
        for block in blocks:
            first += block.rows
            yield block


def _read_part(
    path: Path,
    keys: dict[str, pa.DataType],
    select: LogFilter,
    prediction_type: pa.DataType,
    binary: bool,
    first: int,
) -> Iterator[LoggedRows]:
    """A compacted Parquet part (one row per instance; a request's rows are consecutive)."""
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    names = handle.schema_arrow.names
    # the inputs only for key columns: without them a part is read without its largest column
    wanted = ["request_id", "time", "model_version", "role", "prediction"]
    wanted += ["inputs"] if keys else []
    scored = binary and "probability" in names
    previous: str | None = None  # the last request id of the previous batch
    count = 0  # rows of that request so far
    for batch in handle.iter_batches(
        batch_size=BATCH_ROWS, columns=[*wanted, "probability"] if scored else wanted
    ):
        table = _keep(pa.Table.from_batches([batch]), select)
        if table.num_rows == 0:
            continue
        ids = table["request_id"].combine_chunks()
        instance = request_instances(ids, previous, count)
        previous = ids[len(ids) - 1].as_py()
        count = int(instance[-1]) + 1
        key_table = pa.table({})
        if keys:
            struct = table["inputs"].combine_chunks()
            stored = {
                struct.type.field(i).name: struct.type.field(i).type
                for i in range(struct.type.num_fields)
            }
            key_table = pa.table(
                {
                    name: struct.field(name) if stored.get(name) == t else pa.nulls(len(struct), t)
                    for name, t in keys.items()
                }
            )
        probability = None
        if binary:
            probability = (
                numbers(table["probability"], nulls="nan").astype(np.float64)
                if scored
                else np.full(table.num_rows, np.nan)
            )
        prediction = table["prediction"].combine_chunks()
        if prediction.type != prediction_type:
            prediction = prediction.cast(prediction_type, safe=False)
        yield LoggedRows(
            first_row=first,
            request_id=ids,
            instance=instance,
            time=numbers(table["time"], nulls="nan").astype(np.float64),
            version=table["model_version"].combine_chunks(),
            role=pc.fill_null(table["role"].combine_chunks(), strings(["primary"])[0]),
            prediction=prediction,
            probability=probability,
            keys=key_table,
        )
        first += table.num_rows


def _schema(keys: dict[str, pa.DataType], prediction_type: pa.DataType, binary: bool) -> pa.Schema:
    fields = [
        ("request_id", pa.string()),
        ("time", pa.float64()),
        ("model_version", pa.string()),
        ("role", pa.string()),
        ("predictions", pa.list_(prediction_type)),
    ]
    if keys:
        fields.append(("inputs", pa.list_(pa.struct(list(keys.items())))))
    if binary:
        fields.append(("probabilities", pa.list_(pa.float64())))
    return pa.schema(fields)


def _read_file(
    path: Path,
    keys: dict[str, pa.DataType],
    select: LogFilter,
    prediction_type: pa.DataType,
    binary: bool,
    first: int,
) -> Iterator[LoggedRows]:
    data = path.read_bytes() if path.stat().st_size <= WHOLE_FILE_BYTES else None
    parse = pj.ParseOptions(
        explicit_schema=_schema(keys, prediction_type, binary),
        unexpected_field_behavior="ignore",
    )
    source: Any = io.BytesIO(data) if data is not None else path
    done = 0
    try:
        reader = pj.open_json(
            source, read_options=pj.ReadOptions(block_size=BLOCK_BYTES), parse_options=parse
        )
        for batch in reader:
            done += batch.num_rows
            rows = _rows(pa.Table.from_batches([batch]), keys, select, binary, first)
            if rows is not None:
                first += rows.rows
                yield rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        yield from _read_slow(path, done, keys, select, prediction_type, binary, first)


def _keep(table: pa.Table, select: LogFilter) -> pa.Table:
    """The requests the filter keeps (the same rules as the drift reader's)."""
    mask = pc.is_valid(table["time"])
    if select.version is not None:
        mask = pc.and_(mask, pc.equal(table["model_version"], strings([select.version])[0]))
    if select.role is not None:
        same = pc.equal(table["role"], strings([select.role])[0])
        if select.role == "primary":
            same = pc.or_kleene(same, pc.is_null(table["role"]))
        mask = pc.and_(mask, same)
    if select.since is not None:
        mask = pc.and_(mask, pc.greater_equal(table["time"], _float(select.since)))
    if select.until is not None:
        mask = pc.and_(mask, pc.less(table["time"], _float(select.until)))
    kept = booleans(mask)
    return table if kept.all() else table.take(from_numpy(np.flatnonzero(kept)))


def _float(value: float) -> pa.Scalar:
    return from_numpy(np.array([value], dtype=np.float64))[0]


def _rows(
    table: pa.Table,
    keys: dict[str, pa.DataType],
    select: LogFilter,
    binary: bool,
    first: int,
) -> LoggedRows | None:
    table = _keep(table, select)
    if table.num_rows == 0:
        return None
    predictions = table["predictions"].combine_chunks()
    flat = pc.list_flatten(predictions)
    parents = numbers(pc.list_parent_indices(predictions))
    lengths = np.nan_to_num(numbers(pc.list_value_length(predictions), nulls="nan")).astype(int)
    starts = np.cumsum(lengths) - lengths
    instance = np.arange(len(parents), dtype=np.int64) - starts[parents]
    key_table = pa.table({})
    if keys:
        inputs = table["inputs"].combine_chunks()
        if not np.array_equal(numbers(pc.list_value_length(inputs), nulls="nan"), lengths):
            return None  # a malformed request (answers do not match its rows): not counted
        rows = pc.list_flatten(inputs)
        key_table = pa.table({name: rows.field(name) for name in keys})
    take = from_numpy(parents.astype(np.int64))
    probability = None
    if binary:
        probs = table["probabilities"].combine_chunks()
        counts = np.nan_to_num(numbers(pc.list_value_length(probs), nulls="nan")).astype(int)
        values = numbers(pc.list_flatten(probs), nulls="nan").astype(np.float64)
        if np.array_equal(counts, lengths):
            probability = values
        else:  # some requests logged no probabilities: NaN for their rows
            probability = np.full(len(parents), np.nan)
            probability[counts[parents] > 0] = values
    return LoggedRows(
        first_row=first,
        request_id=table["request_id"].combine_chunks().take(take),
        instance=instance,
        time=numbers(table["time"], nulls="nan")[parents].astype(np.float64),
        version=table["model_version"].combine_chunks().take(take),
        role=pc.fill_null(table["role"].combine_chunks(), strings(["primary"])[0]).take(take),
        prediction=flat,
        probability=probability,
        keys=key_table,
    )


def _read_slow(
    path: Path,
    skip: int,
    keys: dict[str, pa.DataType],
    select: LogFilter,
    prediction_type: pa.DataType,
    binary: bool,
    first: int,
) -> Iterator[LoggedRows]:
    """The file after ``skip`` requests, line by line with orjson (mixed types as null)."""
    pending: list[dict[str, Any]] = []
    for request in logged_requests(path, skip):
        if not _usable(request):
            continue
        pending.append(_typed(request, keys, prediction_type, binary))
        if len(pending) >= _SLOW_REQUESTS:
            block = _slow_block(pending, keys, select, prediction_type, binary, first)
            if block is not None:
                first += block.rows
                yield block
            pending = []
    if pending:
        block = _slow_block(pending, keys, select, prediction_type, binary, first)
        if block is not None:
            yield block


def _usable(request: dict[str, Any]) -> bool:
    inputs, predictions = request.get("inputs"), request.get("predictions")
    time = request.get("time")
    return (
        isinstance(inputs, list)
        and isinstance(predictions, list)
        and len(inputs) == len(predictions)
        and isinstance(time, int | float)
        and not isinstance(time, bool)
    )


def _typed(
    request: dict[str, Any],
    keys: dict[str, pa.DataType],
    prediction_type: pa.DataType,
    binary: bool,
) -> dict[str, Any]:
    """One request with every value of the declared type (null where it is not)."""
    number = pa.types.is_floating(prediction_type)
    rid = request.get("request_id")
    record: dict[str, Any] = {
        "request_id": rid if isinstance(rid, str) else None,
        "time": float(request["time"]),
        "model_version": str(request.get("model_version", "")),
        "role": request.get("role") if isinstance(request.get("role"), str) else None,
        "predictions": [_scalar(p, number) for p in request["predictions"]],
    }
    if keys:
        record["inputs"] = [
            {
                n: _key_value(row.get(n), t) if isinstance(row, dict) else None
                for n, t in keys.items()
            }
            for row in request["inputs"]
        ]
    if binary:
        probs = request.get("probabilities")
        record["probabilities"] = (
            [_scalar(p, True) for p in probs] if isinstance(probs, list) else []
        )
    return record


def _scalar(value: Any, number: bool) -> Any:
    if number:
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
    return None if value is None else str(value)


def _key_value(value: Any, data_type: pa.DataType) -> Any:
    return canonical_value(value, data_type)


def canonical_value(value: Any, data_type: pa.DataType) -> Any:
    """A key value as the log is read with ``data_type``: a float, a bool or text; None when it
    cannot be one (``"abc"`` for a number)."""
    if value is None:
        return None
    if pa.types.is_floating(data_type):
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            return None
    if pa.types.is_boolean(data_type):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return {"true": True, "false": False}.get(text)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def joined_key(columns: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Array:
    """One text key per row from several columns (null where any is null), for hash lookups
    with ``pc.index_in``: Arrow's own casts to text, so both sides of a lookup agree."""
    texts = [pc.cast(c, pa.string()) for c in columns]
    if len(texts) == 1:
        joined = texts[0]
    else:
        # the separator as an Arrow scalar: a Python str argument makes pyarrow import pandas
        joined = pc.binary_join_element_wise(*texts, strings(["\x1f"])[0])
    if isinstance(joined, pa.ChunkedArray):
        return joined.combine_chunks()
    return joined


def key_hash(values: list[Any]) -> str:
    """The stored hash of a key's canonical values (in the configured column order)."""
    return hashlib.sha256(orjson.dumps(values)).hexdigest()


def _slow_block(
    requests: list[dict[str, Any]],
    keys: dict[str, pa.DataType],
    select: LogFilter,
    prediction_type: pa.DataType,
    binary: bool,
    first: int,
) -> LoggedRows | None:
    schema = _schema(keys, prediction_type, binary)
    table = pa.Table.from_pylist(requests, schema=schema)
    return _rows(table, keys, select, binary, first)
