"""Unix times: whole or decimal numbers of seconds, milliseconds or microseconds since
1970-01-01 00:00 UTC, read as timestamps.

keel.yaml's ``unix_time:`` (on a source) names the columns ingestion reads as timestamps, each
with its unit (:mod:`keel.data.scan` converts them in SQL, once, as it reads the source);
schema.yaml's ``unit:`` on a ``timestamp`` column tells the coercion of requests and scored
files how to read a number sent for it (:mod:`keel.validate.coerce`): ``881250949`` with
``unit: s`` is 1997-12-04 15:55:49, on every path. :func:`epoch_unit` is how ``keel init
--from`` recognises such a column: a name that says time (``timestamp``, ``created_at``,
``eventTime``) and values that all fall between 1990 and 2100 in one unit (the units' spans do
not overlap, so the magnitude tells them apart); ``time`` holding minutes (1 to 60) stays a
number.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.infer_roles import name_words

__all__ = [
    "DECIMAL",
    "MICROS",
    "TIME_WORDS",
    "Unit",
    "epoch_bounds",
    "epoch_unit",
    "from_epoch",
    "read_epoch",
    "time_named",
    "to_timestamps",
]

Unit = Literal["s", "ms", "us"]
#: A decimal number as text (``881250949``, ``1.6e9``): what a unix time sent as text looks like.
DECIMAL = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
#: Microseconds per unit.
MICROS: dict[str, int] = {"s": 1_000_000, "ms": 1_000, "us": 1}
#: The span of plausible unix times in seconds: 1990-01-01 to 2100-01-01 (UTC).
EARLIEST, LATEST = 631_152_000, 4_102_444_800
_EPOCH = datetime(1970, 1, 1)
# what a datetime holds (years 1 to 9999, a day in from either end: these are exact as
# floats too, so the row and the batch path draw the line at the same value)
_LOW = (datetime(1, 1, 2) - _EPOCH) // timedelta(microseconds=1)
_HIGH = (datetime(9999, 12, 31) - _EPOCH) // timedelta(microseconds=1)
#: Words of a column name that say it holds a point in time (``event_time``, ``createdAt``).
TIME_WORDS = frozenset({"time", "timestamp", "ts", "date", "datetime", "dt", "epoch", "unix",
                        "unixtime", "when", "created", "updated", "modified"})  # fmt: skip
#: Last words that do when they end the name (``rated_at``, ``signed_on``).
_LAST_WORDS = frozenset({"at", "on"})
_NOT_WHEN = frozenset({"birth", "dob", "born", "birthday"})


def time_named(name: str) -> bool:
    """Whether a column's name says it holds a point in time (``timestamp``, ``ts``,
    ``created_at``, ``created_ms``, ``eventTime``, ``epoch``), not a date of birth."""
    words = name_words(name)
    if not words or _NOT_WHEN & set(words):
        return False
    return bool(TIME_WORDS & set(words)) or (words[-1] in _LAST_WORDS and len(words) > 1)


def epoch_unit(name: str, values: pa.Array | pa.ChunkedArray) -> Unit | None:
    """The unit of a column of unix times, or None when it is not one.

    A column is one when its name says time (:func:`time_named`), it holds integers or
    decimals, and every present value lies between 1990 and 2100 read in one unit.

    Example:
        >>> epoch_unit("timestamp", pa.array([881250949, 891717742]))
        's'
        >>> epoch_unit("time", pa.array([1, 15, 60])) is None
        True
    """
    kind = values.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)) or not time_named(name):
        return None
    span = pc.min_max(values)
    low, high = span["min"].as_py(), span["max"].as_py()
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    for unit, micros in MICROS.items():
        scale = 1_000_000 // micros  # units per second
        if EARLIEST * scale <= low and high <= LATEST * scale:
            return unit  # type: ignore[return-value]
    return None


def epoch_bounds(unit: str) -> tuple[int, int]:
    """The lowest and highest number of ``unit`` since 1970 that is a time (years 1-9999)."""
    factor = MICROS[unit]
    return -(-_LOW // factor), _HIGH // factor


def from_epoch(value: int | float, unit: str) -> datetime | None:
    """One unix time as a naive UTC datetime; None when it is NaN or beyond years 1-9999.

    Integers convert exactly; decimals round to the nearest microsecond (half to even, as
    :func:`to_timestamps` rounds)."""
    if isinstance(value, float):
        scaled = value * MICROS[unit]
        if not math.isfinite(scaled):
            return None
        micros = round(scaled)
    else:
        micros = int(value) * MICROS[unit]
    if not _LOW <= micros <= _HIGH:
        return None
    return _EPOCH + timedelta(microseconds=micros)


def read_epoch(value: Any, unit: str, number: re.Pattern[str], space: str) -> tuple[Any, bool]:
    """The row path of a timestamp input with a unit (:class:`keel.validate.coerce.Coercer`):
    numbers, and text that ``number`` matches once ``space`` is trimmed, become datetimes
    (:func:`from_epoch`); dates, None and other text pass as they are (the pipeline parses
    ISO text); NaN is missing. ``(value, True)``, or ``(None, False)`` when it does not
    convert (a boolean, an infinity, a time beyond the years 1-9999)."""
    kind = type(value)
    found: int | float
    if kind is int or kind is float:
        found = value
    elif kind is str:
        text = value.strip(space)
        if not number.fullmatch(text):
            return value, True  # ISO text (or not): the pipeline parses it, as without a unit
        found = float(text)
    elif isinstance(value, np.integer | np.floating):
        found = value.item()
    elif value is None or hasattr(value, "year"):
        return value, True
    else:
        return None, False
    if found != found:  # NaN: missing, as for numbers
        return None, True
    converted = from_epoch(found, unit)
    return converted, converted is not None


def to_timestamps(values: pa.Array, unit: str) -> tuple[pa.Array, np.ndarray]:
    """A column of unix times (integers or floats) as ``timestamp[us]``, and a mask of the
    values that are none (beyond years 1-9999, infinite): those become null.

    The same numbers as :func:`from_epoch`, value for value."""
    factor = MICROS[unit]
    if pa.types.is_integer(values.type):
        if values.type == pa.uint64():  # >= 2**63 is no time in any unit: held at int64's top
            top = pa.scalar(2**63 - 1, pa.uint64())
            values = pc.if_else(pc.greater(values, top), top, values)
        wide = values.cast(pa.int64())
        limit = _HIGH // factor, _LOW // factor + (1 if _LOW % factor else 0)
        bad = pc.or_kleene(pc.greater(wide, limit[0]), pc.less(wide, limit[1]))
        inside = pc.if_else(bad, None, wide)
        micros = pc.multiply(inside, factor)
    else:
        scaled = pc.round(pc.multiply(values.cast(pa.float64()), float(factor)),
                          round_mode="half_to_even")  # fmt: skip
        ok = pc.and_kleene(
            pc.is_finite(scaled),
            pc.and_kleene(
                pc.greater_equal(scaled, float(_LOW)), pc.less_equal(scaled, float(_HIGH))
            ),
        )
        nan = pc.is_nan(scaled)
        bad = pc.and_kleene(pc.invert(ok), pc.invert(nan))
        micros = pc.if_else(ok, scaled, None).cast(pa.int64())
    mask = np.asarray(pc.fill_null(bad, False).to_numpy(zero_copy_only=False), dtype=bool)
    return micros.cast(pa.timestamp("us")), mask
