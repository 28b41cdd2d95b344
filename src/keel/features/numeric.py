"""Numeric transforms: impute, standardize, min-max, robust scale, log1p, clip, bucketize.

Batch columns are float64 NumPy vectors with NaN for missing; row values are Python floats.
Arithmetic transforms run the same IEEE operations in both paths (``(x - mean) / scale`` on a
float is the same operation NumPy runs per element). ``log1p`` runs the same NumPy ufunc in
both paths. Floating-point warnings (inf - inf, overflow to inf) are silenced: inputs are data,
and the results (inf, NaN) are the defined outcome in both paths.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import ConfigError
from keel.features.transform import Transform, as_strings, missing_values

__all__ = ["Bucketize", "Clip", "Impute", "Log1p", "MinMaxScale", "RobustScale", "Standardize"]

MISSING_TOKEN = "__missing__"


def _finite(column: np.ndarray) -> np.ndarray:
    finite: np.ndarray = column[np.isfinite(column)]
    return finite


class Impute(Transform):
    """Fill missing values; optionally add a 0/1 column saying the value was missing.

    Args:
        strategy: ``mean``, ``median``, ``mode`` (most frequent; ``most_frequent`` is an alias)
            or ``constant``. Strings take ``mode`` or ``constant``.
        fill_value: The constant (default 0 for numbers, ``__missing__`` for strings).
        indicator: Also output ``<column>:missing`` (1.0 where the value was missing).
    """

    kind = "impute"
    consumes = ("number", "category")

    def __init__(
        self, *, strategy: str = "median", fill_value: Any = None, indicator: bool = False
    ) -> None:
        self.strategy = strategy
        self.fill_value = fill_value
        self.indicator = indicator

    def output_kind(self, consumed: str) -> str:
        return consumed

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        strategy = "mode" if self.strategy == "most_frequent" else self.strategy
        self.fill_: float | str
        if isinstance(column, np.ndarray):
            self.fill_ = self._numeric_fill(strategy, column[~np.isnan(column)])
            return
        if strategy not in ("mode", "constant"):
            raise ConfigError(
                f"impute strategy '{self.strategy}' needs numbers; for strings use mode or "
                "constant.",
                field="strategy",
            )
        ranked = ranked_categories(column)
        if strategy == "mode" and ranked:
            self.fill_ = ranked[0]
        else:
            self.fill_ = MISSING_TOKEN if self.fill_value is None else str(self.fill_value)

    def _numeric_fill(self, strategy: str, values: np.ndarray) -> float:
        if strategy == "constant":
            try:
                return 0.0 if self.fill_value is None else float(self.fill_value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"impute: fill_value {self.fill_value!r} is not a number; a number column "
                    "needs a numeric fill_value.",
                    field="fill_value",
                ) from exc
        if not values.size:
            return 0.0
        if strategy == "mean":
            return float(values.mean())
        if strategy == "median":
            return float(np.median(values))
        if strategy == "mode":
            uniques, counts = np.unique(values, return_counts=True)
            return float(uniques[int(np.argmax(counts))])
        raise ConfigError(
            f"impute strategy '{self.strategy}' is not one of mean, median, mode, constant.",
            field="strategy",
        )

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        if isinstance(column, np.ndarray):
            return np.where(np.isnan(column), self.fill_, column)
        return pc.fill_null(column, self.fill_)

    def transform_value(self, value: Any) -> Any:
        if value is None or value != value:
            return self.fill_
        return value

    def missing(self, column: Any) -> np.ndarray:
        """Batch indicator: 1.0 where the column is missing."""
        return missing_values(column)


def ranked_categories(column: pa.Array) -> list[str]:
    """Distinct non-null strings, most frequent first (ties by value)."""
    counted = pc.value_counts(as_strings(column).drop_null())
    values = counted.field("values").to_pylist()
    counts = counted.field("counts").to_numpy()
    order = sorted(range(len(values)), key=lambda i: (-int(counts[i]), values[i]))
    return [values[i] for i in order]


class Standardize(Transform):
    """``(x - mean) / std`` with the mean and population std of the finite training values."""

    kind = "standardize"

    def __init__(self) -> None:
        pass

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        values = _finite(column)
        self.mean_, self.scale_ = 0.0, 1.0
        if values.size:
            self.mean_ = float(values.mean())
            std = float(values.std())
            self.scale_ = std if std > 0 else 1.0

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        with np.errstate(all="ignore"):
            return (column - self.mean_) / self.scale_

    def transform_value(self, value: Any) -> Any:
        return (float(value) - self.mean_) / self.scale_  # Python floats: inf, not a warning


class MinMaxScale(Transform):
    """``(x - min) / (max - min)`` over the finite training values (a zero range divides by 1)."""

    kind = "min_max"

    def __init__(self) -> None:
        pass

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        values = _finite(column)
        low = float(values.min()) if values.size else 0.0
        high = float(values.max()) if values.size else 1.0
        self.min_ = low
        self.range_ = high - low if high > low else 1.0

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        with np.errstate(all="ignore"):
            return (column - self.min_) / self.range_

    def transform_value(self, value: Any) -> Any:
        return (float(value) - self.min_) / self.range_


class RobustScale(Transform):
    """``(x - median) / IQR`` over the finite training values (a zero IQR divides by 1)."""

    kind = "robust_scale"

    def __init__(self) -> None:
        pass

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        values = _finite(column)
        self.center_, self.scale_ = 0.0, 1.0
        if values.size:
            q1, median, q3 = (float(q) for q in np.quantile(values, [0.25, 0.5, 0.75]))
            self.center_ = median
            self.scale_ = q3 - q1 if q3 > q1 else 1.0

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        with np.errstate(all="ignore"):
            return (column - self.center_) / self.scale_

    def transform_value(self, value: Any) -> Any:
        return (float(value) - self.center_) / self.scale_


def _signed_log1p(column: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        result: np.ndarray = np.sign(column) * np.log1p(np.abs(column))
    return result


class Log1p(Transform):
    """Signed ``log1p``: ``sign(x) * log1p(|x|)``, equal to ``log1p(x)`` for x >= 0.

    Defined for every number: negatives map to ``-log1p(-x)`` (no NaN for x <= -1),
    ``+-inf`` stay ``+-inf``, NaN stays missing.
    """

    kind = "log1p"

    def __init__(self) -> None:
        pass

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        return _signed_log1p(column)

    def transform_value(self, value: Any) -> Any:
        # the same NumPy ufuncs on a one-element vector: bit-identical to the batch path
        return float(_signed_log1p(np.array([value], dtype=np.float64))[0])


class Clip(Transform):
    """Clip to ``[lower, upper]``: fixed bounds, or quantiles of the training values.

    Args:
        lower: Fixed lower bound (None: no lower bound unless ``lower_quantile`` is set).
        upper: Fixed upper bound.
        lower_quantile: Fit the lower bound as this quantile (0-1) of the finite values.
        upper_quantile: Fit the upper bound as this quantile.
    """

    kind = "clip"

    def __init__(
        self,
        *,
        lower: float | None = None,
        upper: float | None = None,
        lower_quantile: float | None = None,
        upper_quantile: float | None = None,
    ) -> None:
        self.lower = lower
        self.upper = upper
        self.lower_quantile = lower_quantile
        self.upper_quantile = upper_quantile

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        values = _finite(column)
        low, high = self.lower, self.upper
        if self.lower_quantile is not None and values.size:
            low = float(np.quantile(values, self.lower_quantile))
        if self.upper_quantile is not None and values.size:
            high = float(np.quantile(values, self.upper_quantile))
        self.lower_ = -np.inf if low is None else float(low)
        self.upper_ = np.inf if high is None else float(high)
        if self.lower_ > self.upper_:
            raise ConfigError(
                f"clip: lower bound {self.lower_} is above upper bound {self.upper_}.",
                field="lower",
            )

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        low, high = self.lower_, self.upper_
        return np.where(column < low, low, np.where(column > high, high, column))

    def transform_value(self, value: Any) -> Any:
        if value < self.lower_:
            return self.lower_
        if value > self.upper_:
            return self.upper_
        return value


class Bucketize(Transform):
    """Bucket numbers by quantile or fixed boundaries.

    Bucket ``i`` holds ``edges[i-1] <= x < edges[i]``. Missing stays missing (NaN for
    ``ordinal``, all zeros for ``onehot``).

    Args:
        strategy: ``quantile`` (``n_bins`` buckets of about equal counts) or ``fixed``.
        n_bins: Number of quantile buckets.
        boundaries: The sorted inner edges for ``fixed``.
        encode: ``ordinal`` (one column, the bucket index) or ``onehot`` (one column per bucket).
    """

    kind = "bucketize"

    def __init__(
        self,
        *,
        strategy: str = "quantile",
        n_bins: int = 10,
        boundaries: list[float] | None = None,
        encode: str = "ordinal",
    ) -> None:
        self.strategy = strategy
        self.n_bins = n_bins
        self.boundaries = boundaries
        self.encode = encode

    def output_kind(self, consumed: str) -> str:
        return "matrix" if self.encode == "onehot" else "number"

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        if self.strategy == "fixed":
            if not self.boundaries:
                raise ConfigError("bucketize: strategy fixed needs boundaries.", field="boundaries")
            edges = [float(b) for b in self.boundaries]
            if edges != sorted(edges):
                raise ConfigError("bucketize: boundaries must be sorted.", field="boundaries")
        else:
            values = _finite(column)
            quantiles = np.linspace(0.0, 1.0, self.n_bins + 1)[1:-1]
            edges = (
                sorted({float(q) for q in np.quantile(values, quantiles)}) if values.size else []
            )
        self.edges_ = edges

    def _compile(self) -> None:
        self._edges = np.asarray(self.edges_, dtype=np.float64)

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        index = np.searchsorted(self._edges, column, side="right").astype(np.float64)
        index[np.isnan(column)] = np.nan
        if self.encode != "onehot":
            return index
        out = np.zeros((len(column), len(self.edges_) + 1), dtype=np.float64)
        rows = np.nonzero(~np.isnan(index))[0]
        out[rows, index[rows].astype(np.int64)] = 1.0
        return out

    def transform_value(self, value: Any) -> Any:
        if value != value:
            return np.nan
        return float(bisect.bisect_right(self.edges_, value))

    def write_value(self, value: Any, out: np.ndarray, offset: int) -> None:
        if self.encode != "onehot":
            out[offset] = self.transform_value(value)
        elif value == value:
            out[offset + bisect.bisect_right(self.edges_, value)] = 1.0

    def output_names(self, name: str) -> list[str]:
        if self.encode != "onehot":
            return [name]
        return [f"{name}:bin{i}" for i in range(len(self.edges_) + 1)]
