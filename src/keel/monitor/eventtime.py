"""Event time: the rows' own time, read from an input column (``monitor.time_column``).

Monitoring windows are cut by the request time the server logged unless keel.yaml names an
input column that carries each row's event time (a date or time as text, or a unix time:
seconds, or the ``unit:`` schema.yaml gives the column; NannyML's ``timestamp_column``).
:func:`event_times` parses such a column vectorised (Arrow's ``strptime`` with
:data:`EVENT_TIME_FORMATS`, days that do not exist refused) and :func:`at_event_time` moves a
block of logged rows onto it, counting the rows whose time is missing or cannot be parsed: they
are in no window and are reported, never dropped silently. :func:`event_time_unit` finds the
unit: the model's rule for an input, else schema.yaml (the server logs values as sent, so
``881250949000`` with ``unit: ms`` is 1997, not the year 29896).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.monitor.window import EPOCH_MONTH, LogRows
from keel.validate.arrays import from_numpy, numbers
from keel.validate.epochs import DECIMAL, to_timestamps

__all__ = ["EVENT_TIME_FORMATS", "at_event_time", "event_time_unit", "event_times"]

EVENT_TIME_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M",
    "%Y/%m/%d",
)
"""The text formats an event-time column is parsed with (the first that fits a value wins;
a trailing ``Z`` reads as ``+00:00``); a numeric column is a unix time (seconds unless the
schema gives the column another ``unit``)."""


def event_time_unit(root: Path, column: str, coercer: Any = None) -> str | None:
    """The unit of the numbers an event-time column holds (``s``, ``ms``, ``us``; None:
    seconds): the model's rule when the column is an input (``coercer``), else the ``unit:``
    of the project's schema.yaml (a time column the model does not read)."""
    rules = {} if coercer is None else {rule.name: rule for rule in coercer.rules}
    if column in rules:
        return rules[column].unit  # type: ignore[no-any-return]
    path = root / "schema.yaml"
    if not path.exists():
        return None
    from keel.validate.schema import read_schema

    found = read_schema(path).columns.get(column)
    return None if found is None else found.unit


def _unix_seconds(values: pa.Array, unit: str) -> np.ndarray:
    """Unix times in ``unit`` as seconds, converted as ingestion and requests convert them
    (:func:`keel.validate.epochs.to_timestamps`); NaN where null or beyond years 1-9999."""
    times, _ = to_timestamps(values, unit)
    micros = np.asarray(numbers(pc.cast(times, pa.int64()), nulls="nan"), dtype=np.float64)
    return micros / 1e6


def event_times(values: pa.Array | pa.ChunkedArray, unit: str | None = None) -> np.ndarray:
    """Seconds since the epoch (float64) of an event-time column; NaN where a value is null or
    cannot be parsed. Text is parsed with :data:`EVENT_TIME_FORMATS` (no zone: UTC), numbers
    are unix times in ``unit`` (None: seconds; with a unit, decimal text too, as requests may
    send it), Arrow dates and timestamps are read as they are. Vectorised."""
    column = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return _unix_seconds(column, unit or "s")
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        seconds = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
        return np.asarray(numbers(seconds, nulls="nan"), dtype=np.float64)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return np.full(len(column), np.nan)
    text = pc.replace_substring_regex(pc.utf8_trim_whitespace(column), r"Z$", "+00:00")
    found = np.full(len(column), np.nan)
    real = _real_days(text)
    if unit is not None:
        number = pc.match_substring_regex(text, f"^{DECIMAL}$")
        found = _unix_seconds(pc.if_else(number, text, None).cast(pa.float64()), unit)
        real |= np.asarray(pc.fill_null(number, False).to_numpy(zero_copy_only=False), bool)
    for form in EVENT_TIME_FORMATS:
        open_rows = np.isnan(found)
        if not open_rows.any():
            break
        parsed = pc.strptime(text, format=form, unit="s", error_is_null=True)
        seconds = np.asarray(numbers(pc.cast(parsed, pa.int64()), nulls="nan"), np.float64)
        found = np.where(open_rows, seconds, found)
    return np.where(real, found, np.nan)


def _real_days(text: pa.Array) -> np.ndarray:
    """Whether each ``YYYY-MM-DD...`` value names a day that exists (the parser rolls
    2024-02-30 over to March 1st)."""

    def part(start: int, stop: int) -> np.ndarray:
        piece = pc.utf8_slice_codeunits(text, start, stop)
        digits = pc.fill_null(pc.utf8_is_digit(piece), False)
        value = pc.cast(pc.if_else(digits, piece, "0"), pa.int64())
        return np.asarray(numbers(value, nulls="nan"), dtype=np.float64)

    year, month, day = part(0, 4), part(5, 7), part(8, 10)
    known = (month >= 1) & (month <= 12)
    index = np.where(known, (year - 1970) * 12 + month - 1, 0).astype(np.int64)
    first = EPOCH_MONTH + index.astype("timedelta64[M]")
    length = ((first + np.timedelta64(1, "M")).astype("datetime64[D]")
              - first.astype("datetime64[D]")).astype(np.int64)  # fmt: skip
    real: np.ndarray = known & (day >= 1) & (day <= length)
    return real


def at_event_time(
    block: LogRows, column: str, unit: str | None = None
) -> tuple[LogRows | None, int]:
    """The block with each row's time read from the input ``column`` (numbers in ``unit``)
    instead of the request time, and how many rows were left out because theirs is missing or
    cannot be parsed (None when none is left)."""
    times = event_times(block.inputs.column(column), unit)
    ok = np.isfinite(times)
    unparsed = int(ok.size - np.count_nonzero(ok))
    if not unparsed:
        return replace(block, time=times), 0
    if not ok.any():
        return None, unparsed
    index = from_numpy(np.flatnonzero(ok))
    return replace(
        block,
        inputs=block.inputs.take(index),
        time=times[ok],
        prediction=block.prediction.take(index),
        probability=None if block.probability is None else block.probability[ok],
        meta=None if block.meta is None else block.meta.take(index),
        instance=None if block.instance is None else block.instance[ok],
    ), unparsed
