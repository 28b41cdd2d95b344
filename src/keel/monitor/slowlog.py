"""The slow path of the prediction log reader: requests parsed one by one with orjson.

:func:`keel.monitor.window.read_jsonl` reads a JSON Lines file through Arrow's JSON reader with
the model's input types; from the first block whose values do not fit them (a client that sent
``"42"`` for a number, or ``"Yes"`` for a boolean) it hands the rest of the file to
:func:`read_slow`, which parses it line by line with orjson, ``SLOW_REQUESTS`` requests per
table, each mixed column as text for the coercion rules to read as serving does. A torn line (a
crash mid-write) is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.monitor.counts import strings
from keel.monitor.logfiles import logged_requests
from keel.monitor.window import LogFilter, LogRows, keep_selected
from keel.validate.arrays import from_numpy

__all__ = ["SLOW_REQUESTS", "read_slow", "rows_table"]

SLOW_REQUESTS = 4096  # requests per table on the orjson path


def read_slow(
    path: Path,
    skip: int,
    types: dict[str, pa.DataType],
    present: frozenset[str],
    select: LogFilter,
    binary: bool,
    meta: bool,
) -> Iterator[LogRows]:
    """The file after ``skip`` requests, line by line with orjson, mixed columns as text."""
    pending: list[dict[str, Any]] = []
    for request in logged_requests(path, skip):
        pending.append(request)
        if len(pending) >= SLOW_REQUESTS:
            yield from _slow_rows(pending, types, present, select, binary, meta)
            pending = []
    if pending:
        yield from _slow_rows(pending, types, present, select, binary, meta)


def _slow_rows(
    requests: list[dict[str, Any]],
    types: dict[str, pa.DataType],
    present: frozenset[str],
    select: LogFilter,
    binary: bool,
    meta: bool,
) -> Iterator[LogRows]:
    usable = [r for r in requests if _usable(r, binary)]
    if not usable:
        return
    head = pa.table(
        {
            "time": _arrow([_number(r.get("time")) for r in usable], pa.float64()),
            "model_version": _arrow([str(r.get("model_version", "")) for r in usable]),
            "role": _arrow([r.get("role") for r in usable], pa.string()),
            "index": pa.array(np.arange(len(usable), dtype=np.int64)),
        }
    )
    kept = [usable[i] for i in keep_selected(head, select)["index"].to_pylist()]
    if not kept:
        return
    rows = [row for r in kept for row in r["inputs"]]
    counts = np.array([len(r["inputs"]) for r in kept])
    times = np.repeat(np.array([float(r["time"]) for r in kept]), counts)
    predictions = _column([p for r in kept for p in r["predictions"]])
    probability = None
    if binary:
        values = [
            _number(p) for r in kept for p in (r.get("probabilities") or [None] * len(r["inputs"]))
        ]
        probability = np.array([math.nan if v is None else v for v in values], dtype=float)
    described = None
    if meta:
        described = pa.table(
            {
                "request_id": _text_column([r.get("request_id") for r in kept], counts),
                "model_version": _text_column([r.get("model_version", "") for r in kept], counts),
                "role": _text_column([r.get("role") or "primary" for r in kept], counts),
                "feature_pipeline": _text_column([r.get("feature_pipeline") for r in kept], counts),
                "hashed": _names_column([r.get("hashed") for r in kept], counts),
            }
        )
    yield LogRows(
        inputs=rows_table(rows, list(types)),
        present=present,
        time=times,
        versions=tuple(sorted({str(r.get("model_version", "")) for r in kept})),
        prediction=pa.chunked_array([predictions]),
        probability=probability,
        typed=False,
        meta=described,
        instance=None if described is None else _instances(counts),
    )


def _instances(counts: np.ndarray) -> np.ndarray:
    """Each row's position in its request, from the requests' row counts."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    instance: np.ndarray = np.arange(int(counts.sum()), dtype=np.int64) - starts
    return instance


def _names_column(values: list[Any], counts: np.ndarray) -> pa.Array:
    """Per-request lists of column names (null when absent or malformed), one per row; built
    from buffers (``pa.array`` of Python lists would import pandas)."""
    lists = [[str(v) for v in value] if isinstance(value, list) else [] for value in values]
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(names) for names in lists])
    flat = strings([name for names in lists for name in names])
    absent = from_numpy(np.array([not isinstance(v, list) for v in values], dtype=np.uint8))
    array = pa.ListArray.from_arrays(from_numpy(offsets), flat, mask=pc.cast(absent, pa.bool_()))
    return array.take(from_numpy(np.repeat(np.arange(len(values), dtype=np.int64), counts)))


def _text_column(values: list[Any], counts: np.ndarray) -> pa.Array:
    """Per-request values as text, repeated for each of the request's rows."""
    text = _arrow([None if v is None else _text(v) for v in values], pa.string())
    return text.take(from_numpy(np.repeat(np.arange(len(values), dtype=np.int64), counts)))


def _usable(request: dict[str, Any], binary: bool) -> bool:
    inputs, predictions = request.get("inputs"), request.get("predictions")
    if not isinstance(inputs, list) or not isinstance(predictions, list):
        return False
    if len(inputs) != len(predictions) or _number(request.get("time")) is None:
        return False
    probabilities = request.get("probabilities")
    return not (binary and isinstance(probabilities, list) and len(probabilities) != len(inputs))


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _column(values: Sequence[Any]) -> pa.Array:
    try:
        return _arrow(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _arrow([None if v is None else _text(v) for v in values], pa.string())


def _arrow(values: Sequence[Any], data_type: pa.DataType | None = None) -> pa.Array:
    """An Arrow array of Python values, through an object ndarray: given a list, pyarrow looks
    for pandas objects in it and so imports pandas (0.8 s)."""
    holder = np.empty(len(values), dtype=object)
    holder[:] = values
    return pa.array(holder, type=data_type)


def rows_table(rows: Sequence[Any], columns: list[str]) -> pa.Table:
    """Request rows as a table, one column per input, whatever JSON types clients sent (a
    column that mixes ``"Yes"`` and ``true`` becomes text, which the coercion rules read)."""
    arrays = [
        _column([row.get(name) if isinstance(row, dict) else None for row in rows])
        for name in columns
    ]
    return pa.table(arrays, names=columns)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
