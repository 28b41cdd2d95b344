"""Datetime parts (year, month, day, weekday, hour...) and their cyclical sin/cos encodings.

Both paths turn a value into microseconds since the Unix epoch (UTC; a naive time is taken as
UTC, a date as its midnight) and compute the parts with the same integer NumPy calendar
arithmetic; the row path runs it on a one-element vector. Sin/cos come from tables built once
per period, so both paths read the same floats. Strings are parsed as ISO 8601 by one Python
function, called per distinct value in the batch path.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import ConfigError, DataValidationError
from keel.features.transform import Transform, map_unique

__all__ = ["PERIODS", "DatetimeParts", "to_micros"]

#: Part -> its period for cyclical encodings (None: not cyclical).
PERIODS: dict[str, int | None] = {
    "year": None,
    "month": 12,
    "day": 31,
    "dayofweek": 7,
    "hour": 24,
    "minute": 60,
    "dayofyear": 366,
}
_EPOCH = datetime(1970, 1, 1)
_MICRO = timedelta(microseconds=1)


def to_micros(value: Any) -> int | None:
    """Microseconds since the epoch for a datetime, date or ISO 8601 string (None stays None).

    Raises:
        DataValidationError: Another type, or a string that is not ISO 8601.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise DataValidationError(
                f"cannot read {value!r} as a date/time; send ISO 8601, e.g. "
                "'2024-05-01' or '2024-05-01T13:45:00Z'.",
                details={"value": value},
            ) from exc
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return int((value - _EPOCH) // _MICRO)
    if isinstance(value, date):
        return int((datetime(value.year, value.month, value.day) - _EPOCH) // _MICRO)
    raise DataValidationError(
        f"expected a date/time (ISO 8601 string), got {type(value).__name__} {value!r}.",
        details={"got": type(value).__name__},
    )


def _parts(micros: np.ndarray) -> dict[str, np.ndarray]:
    """Calendar parts (int64) of epoch microseconds, by exact integer arithmetic."""
    t = micros.astype("datetime64[us]")
    days = t.astype("datetime64[D]")
    months = t.astype("datetime64[M]")
    years = t.astype("datetime64[Y]")
    return {
        "year": years.astype(np.int64) + 1970,
        "month": months.astype(np.int64) % 12 + 1,
        "day": (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
        "dayofweek": (days.astype(np.int64) + 3) % 7,  # 1970-01-01 was a Thursday; Monday is 0
        "hour": (micros // 3_600_000_000) % 24,
        "minute": (micros // 60_000_000) % 60,
        "dayofyear": (days - years.astype("datetime64[D]")).astype(np.int64) + 1,
    }


class DatetimeParts(Transform):
    """Calendar parts of a date/time as numbers, and sin/cos of the cyclical ones.

    Args:
        parts: Parts output as plain numbers: year, month, day, dayofweek (Monday 0), hour,
            minute, dayofyear.
        cyclical: Parts output as ``sin(2 pi v / period)`` and ``cos(...)`` (all but year).

    A missing value gives NaN in every column.
    """

    kind = "datetime"
    consumes = ("datetime", "category")

    def __init__(
        self,
        *,
        parts: list[str] | None = None,
        cyclical: list[str] | None = None,
    ) -> None:
        self.parts = parts
        self.cyclical = cyclical

    def output_kind(self, consumed: str) -> str:
        return "matrix"

    def _plain(self) -> list[str]:
        return list(self.parts) if self.parts is not None else ["year", "month", "day", "hour"]

    def _cyclic(self) -> list[str]:
        chosen = self.cyclical if self.cyclical is not None else ["month", "dayofweek", "hour"]
        return list(chosen)

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        for name in self._plain() + self._cyclic():
            if name not in PERIODS:
                raise ConfigError(
                    f"datetime: unknown part '{name}'; parts: {', '.join(PERIODS)}.", field="parts"
                )
        bad = [name for name in self._cyclic() if PERIODS[name] is None]
        if bad:
            raise ConfigError(f"datetime: '{bad[0]}' has no period to encode cyclically.")
        self.fitted_ = True

    def _compile(self) -> None:
        self._tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in self._cyclic():
            period = PERIODS[name] or 1
            angles = [2.0 * math.pi * v / period for v in range(period + 1)]
            self._tables[name] = (
                np.array([math.sin(a) for a in angles]),
                np.array([math.cos(a) for a in angles]),
            )

    def _encode(self, micros: np.ndarray, missing: np.ndarray) -> np.ndarray:
        plain, cyclic = self._plain(), self._cyclic()
        out = np.empty((len(micros), len(plain) + 2 * len(cyclic)), dtype=np.float64)
        parts = _parts(micros)
        for j, name in enumerate(plain):
            out[:, j] = parts[name]
        for j, name in enumerate(cyclic):
            sin, cos = self._tables[name]
            out[:, len(plain) + 2 * j] = sin[parts[name]]
            out[:, len(plain) + 2 * j + 1] = cos[parts[name]]
        out[missing] = np.nan
        return out

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            table, codes = map_unique(column, to_micros)
            missing = np.asarray([m is None for m in table])[codes]
            micros = np.asarray([0 if m is None else m for m in table], dtype=np.int64)[codes]
            return self._encode(micros, missing)
        if pa.types.is_null(column.type):
            column = column.cast(pa.timestamp("us"))
        if pa.types.is_date(column.type):
            column = column.cast(pa.timestamp("us"))
        elif pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("us", tz=column.type.tz), safe=False)
        else:
            raise DataValidationError(
                f"datetime: expected a date, timestamp or ISO 8601 string column; got "
                f"{column.type}."
            )
        missing = pc.is_null(column).to_numpy(zero_copy_only=False)
        integers = pc.fill_null(column.cast(pa.int64()), 0)
        return self._encode(integers.to_numpy(zero_copy_only=False), missing)

    def write_value(self, value: Any, out: np.ndarray, offset: int) -> None:
        micros = to_micros(value)
        row = self._encode(
            np.array([0 if micros is None else micros], dtype=np.int64),
            np.array([micros is None]),
        )
        out[offset : offset + row.shape[1]] = row[0]

    def output_names(self, name: str) -> list[str]:
        names = [f"{name}:{part}" for part in self._plain()]
        for part in self._cyclic():
            names += [f"{name}:{part}_sin", f"{name}:{part}_cos"]
        return names
