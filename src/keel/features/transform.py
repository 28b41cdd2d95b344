"""The Transform contract every feature transform follows, and the table of transform kinds.

A transform follows scikit-learn's contract: a keyword-only ``__init__`` that stores its
parameters unchanged and does no work, ``fit`` that returns ``self``, fitted attributes whose
names end in ``_``, and a JSON ``state()`` / ``from_state()`` pair. Each one has two paths over
the same fitted attributes:

- ``transform(column)``: vectorised over a whole column (NumPy float64 for numbers, a PyArrow
  string array for categories), used for training and batch scoring;
- ``transform_value(value)`` (or ``write_value`` for encoders): one Python value, used for a
  single request with no DataFrame and no Arrow on the hot path.

The two paths apply the same IEEE float64 operations in the same order, or the batch path maps
every *distinct* value of a column through the row function (:func:`unique_codes`), so the
results agree bit for bit by construction.

Values flow between transforms in one of four kinds: ``number`` (float64, NaN is missing),
``category`` (a string, None is missing), ``datetime`` (a temporal value or ISO 8601 string),
and ``matrix`` (the final columns an encoder writes).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import ConfigError, DataValidationError, NotFittedError

__all__ = ["KINDS", "Transform", "as_strings", "transform_class", "unique_codes"]

T = TypeVar("T")

#: Transform kind (the ``kind:`` of a step in keel.yaml) -> "module:Class", imported lazily.
KINDS: dict[str, str] = {
    "impute": "keel.features.numeric:Impute",
    "standardize": "keel.features.numeric:Standardize",
    "min_max": "keel.features.numeric:MinMaxScale",
    "robust_scale": "keel.features.numeric:RobustScale",
    "log1p": "keel.features.numeric:Log1p",
    "clip": "keel.features.numeric:Clip",
    "bucketize": "keel.features.numeric:Bucketize",
    "one_hot": "keel.features.categorical:OneHot",
    "ordinal": "keel.features.categorical:Ordinal",
    "hash": "keel.features.categorical:Hashing",
    "target_encode": "keel.features.categorical:TargetEncode",
    "cross": "keel.features.categorical:Cross",
    "datetime": "keel.features.temporal:DatetimeParts",
    "tfidf": "keel.features.text:TfIdf",
}


def transform_class(kind: str) -> type[Transform]:
    """The Transform class for a kind, e.g. ``standardize``.

    Raises:
        ConfigError: Unknown kind; names the closest kind and lists them all.
    """
    path = KINDS.get(kind)
    if path is None:
        close = difflib.get_close_matches(kind, list(KINDS), n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"unknown transform kind '{kind}'.{hint} Kinds: {', '.join(KINDS)}.", field="kind"
        )
    module, name = path.split(":")
    cls: type[Transform] = getattr(importlib.import_module(module), name)
    return cls


class Transform:
    """Base class: parameters, fitted attributes, JSON state and the two paths.

    Subclasses set ``kind`` and ``consumes`` (the kinds of value they accept), and implement
    ``_fit``, ``transform``, ``output_kind`` and either ``transform_value`` (1 -> 1
    transforms) or ``write_value`` plus ``output_names`` (encoders, which produce ``matrix``).
    """

    kind: ClassVar[str] = ""
    consumes: ClassVar[tuple[str, ...]] = ("number",)
    needs_target: ClassVar[bool] = False

    def output_kind(self, consumed: str) -> str:
        """The kind of value output for an input of kind ``consumed``."""
        return "number"

    # --- the scikit-learn contract -----------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The keyword-only constructor parameters, as stored."""
        signature = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name, p in signature.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    def fit(self, column: Any, y: np.ndarray | None = None) -> Transform:
        """Learn the fitted attributes from a batch column; returns self."""
        self._fit(column, y)
        self._compile()
        return self

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        """Set the fitted attributes (names ending in ``_``); stateless transforms set none."""
        self.fitted_ = True

    def _compile(self) -> None:
        """Build the lookups both paths use from the fitted attributes (after fit/from_state)."""

    def is_fitted(self) -> bool:
        """Whether fit (or from_state) has run."""
        return any(name.endswith("_") and not name.startswith("_") for name in vars(self))

    def check_fitted(self) -> None:
        """Raise NotFittedError when used before fit."""
        if not self.is_fitted():
            raise NotFittedError(f"transform '{self.kind}' is not fitted; call fit() first.")

    def state(self) -> dict[str, Any]:
        """``{"kind", "params", "fitted"}`` as JSON-able data."""
        self.check_fitted()
        fitted = {
            name: _jsonable(value)
            for name, value in vars(self).items()
            if name.endswith("_") and not name.startswith("_")
        }
        return {"kind": self.kind, "params": self.get_params(), "fitted": fitted}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Transform:
        """Rebuild a fitted transform of any kind from :meth:`state`."""
        impl = transform_class(str(state["kind"]))
        transform = impl(**state["params"])
        for name, value in state["fitted"].items():
            setattr(transform, name, value)
        transform._compile()
        return transform

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # --- the two paths -----------------------------------------------------------------------

    def transform(self, column: Any) -> Any:
        """Batch path: a column in, a column (or an (n, k) matrix for encoders) out."""
        raise TypeError(f"{type(self).__name__} does not implement transform")

    def transform_value(self, value: Any) -> Any:
        """Row path of a 1 -> 1 transform: one value in, one value out."""
        raise TypeError(f"{type(self).__name__} is an encoder; use write_value")

    def write(self, column: Any, out: np.ndarray, offset: int) -> None:
        """Batch path of an encoder: write its columns for every row into ``out[:, offset:]``."""
        result = self.transform(column)
        out[:, offset : offset + result.shape[1]] = result

    def write_value(self, value: Any, out: np.ndarray, offset: int) -> None:
        """Row path of an encoder: write its columns for one value into ``out[offset:]``."""
        out[offset] = self.transform_value(value)

    def output_names(self, name: str) -> list[str]:
        """Names of the columns this transform writes when it ends a chain named ``name``."""
        return [name]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- columns ---------------------------------------------------------------------------------


def as_strings(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one contiguous Arrow string array (bools become ``true``/``false``)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
    if not pa.types.is_string(column.type):
        column = column.cast(pa.string())
    return column


def unique_codes(column: pa.Array) -> tuple[list[Any], np.ndarray]:
    """The distinct values of a string column and, per row, the index of its value.

    Null rows get the index ``len(values)``; callers append the null case to their lookup
    table. Mapping each distinct value through the row function and gathering with these codes
    is how encoders stay vectorised over rows and bit-identical to the row path.
    """
    encoded = pc.dictionary_encode(column)
    values = encoded.dictionary.to_pylist()
    codes = pc.fill_null(encoded.indices.cast(pa.int64()), len(values))
    return values, codes.to_numpy(zero_copy_only=False)


def map_unique(column: pa.Array, fn: Callable[[Any], T]) -> tuple[list[T], np.ndarray]:
    """``fn`` applied to each distinct value (and to None, last), plus the per-row codes."""
    values, codes = unique_codes(column)
    return [fn(v) for v in values] + [fn(None)], codes


def missing_values(column: Any) -> np.ndarray:
    """A float64 0/1 vector: 1 where a batch column (numbers or strings) is missing."""
    if isinstance(column, np.ndarray):
        return np.isnan(column).astype(np.float64)
    mask: np.ndarray = pc.is_null(column).to_numpy(zero_copy_only=False)
    return mask.astype(np.float64)


def unseen_error(kind: str, value: Any, known: list[Any]) -> DataValidationError:
    """The error for a category the transform never saw, with policy ``error``."""
    shown = ", ".join(repr(v) for v in known[:10]) + (", ..." if len(known) > 10 else "")
    return DataValidationError(
        f"unseen category {value!r} for {kind} with unseen: error (known: {shown}). Send a "
        "known value, or set unseen: other (or ignore) in keel.yaml and retrain.",
        details={"value": value},
    )
