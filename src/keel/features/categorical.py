"""Categorical transforms: one-hot, ordinal, hashing, out-of-fold target encoding, crosses.

Batch columns are PyArrow string arrays (null is missing); row values are ``str`` or None.
Every encoder maps a value through one Python function; the batch path calls it once per
*distinct* value of the column and gathers with NumPy (:func:`~keel.features.transform.map_unique`),
so batch and row agree bit for bit by construction and the batch path never loops over rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import ConfigError
from keel.features.numeric import MISSING_TOKEN, ranked_categories
from keel.features.transform import Transform, map_unique, unique_codes, unseen_error

__all__ = ["Cross", "Hashing", "OneHot", "Ordinal", "TargetEncode"]

UNSEEN_POLICIES = ("auto", "other", "ignore", "error")


def _scatter_ones(out: np.ndarray, offset: int, positions: list[int], codes: np.ndarray) -> None:
    """Set ``out[row, offset + position]`` to 1.0 for each row (rows at -1 stay as they are)."""
    per_row = np.asarray(positions, dtype=np.int64)[codes]
    flat = np.arange(len(codes), dtype=np.int64) * out.shape[1] + (offset + per_row)
    if min(positions) < 0:
        flat = flat[per_row >= 0]
    out.reshape(-1)[flat] = 1.0  # a view: out is C-contiguous


class OneHot(Transform):
    """One column per kept category (most frequent first), plus an optional ``__other__`` column.

    Args:
        max_categories: Most frequent categories kept; rarer ones share the other column.
        unseen: Where a value outside the kept categories goes. ``auto``: the other column if
            rare categories were folded into one, else nowhere (all zeros). ``other``: always
            an other column. ``ignore``: never an other column (all zeros). ``error``: rare
            training values go to the other column; a value never seen in training is an error.

    Missing values (None) are all zeros; impute first to give them a category.
    """

    kind = "one_hot"
    consumes = ("category",)

    def __init__(self, *, max_categories: int = 50, unseen: str = "auto") -> None:
        self.max_categories = max_categories
        self.unseen = unseen

    def output_kind(self, consumed: str) -> str:
        return "matrix"

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        if self.unseen not in UNSEEN_POLICIES:
            raise ConfigError(
                f"one_hot: unseen '{self.unseen}' is not one of {', '.join(UNSEEN_POLICIES)}.",
                field="unseen",
            )
        ranked = ranked_categories(column)
        self.categories_ = ranked[: self.max_categories]
        folded = ranked[self.max_categories :]
        self.other_ = self.unseen == "other" or (self.unseen != "ignore" and bool(folded))
        self.folded_ = folded if self.unseen == "error" else []

    def _compile(self) -> None:
        self._lookup = {value: i for i, value in enumerate(self.categories_)}
        self._other = len(self.categories_) if self.other_ else -1
        self._folded = set(self.folded_)

    def position(self, value: Any) -> int:
        """The column offset for a value, or -1 for none."""
        if value is None:
            return -1
        found = self._lookup.get(value)
        if found is not None:
            return found
        if self.unseen == "error" and value not in self._folded:
            raise unseen_error(self.kind, value, self.categories_)
        return self._other

    def transform(self, column: Any) -> Any:
        out = np.zeros((len(column), len(self.categories_) + int(self.other_)), dtype=np.float64)
        self.write(column, out, 0)
        return out

    def write(self, column: Any, out: np.ndarray, offset: int) -> None:
        self.check_fitted()
        positions, codes = map_unique(column, self.position)
        _scatter_ones(out, offset, positions, codes)

    def write_value(self, value: Any, out: np.ndarray, offset: int) -> None:
        found = self.position(value)
        if found >= 0:
            out[offset + found] = 1.0

    def output_names(self, name: str) -> list[str]:
        names = [f"{name}={value}" for value in self.categories_]
        return [*names, f"{name}=__other__"] if self.other_ else names


class Ordinal(Transform):
    """The index of the value among the sorted training categories, as one number.

    Args:
        unknown_value: Output for a value never seen in training. Missing stays NaN.
    """

    kind = "ordinal"
    consumes = ("category",)

    def __init__(self, *, unknown_value: float = -1.0) -> None:
        self.unknown_value = unknown_value

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        self.categories_ = sorted(pc.unique(column.drop_null()).to_pylist())

    def _compile(self) -> None:
        self._lookup = {value: float(i) for i, value in enumerate(self.categories_)}
        self._unknown = float(self.unknown_value)

    def transform_value(self, value: Any) -> Any:
        if value is None:
            return np.nan
        return self._lookup.get(value, self._unknown)

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        table, codes = map_unique(column, self.transform_value)
        return np.asarray(table, dtype=np.float64)[codes]


class Hashing(Transform):
    """The hashing trick: a 1.0 in column ``murmurhash3_32(utf-8 value) mod n_features``.

    MurmurHash3 (as scikit-learn's FeatureHasher uses) is stable across processes and
    machines, unlike Python's salted ``hash()``. Missing values are all zeros.

    Args:
        n_features: Number of hash columns.
        seed: Hash seed.
    """

    kind = "hash"
    consumes = ("category",)

    def __init__(self, *, n_features: int = 32, seed: int = 0) -> None:
        self.n_features = n_features
        self.seed = seed

    def output_kind(self, consumed: str) -> str:
        return "matrix"

    def bucket(self, value: Any) -> int:
        """The column for a value, or -1 for missing."""
        if value is None:
            return -1
        key = value.encode("utf-8", "surrogatepass")
        return _murmur(key, self.seed) % self.n_features

    def transform(self, column: Any) -> Any:
        out = np.zeros((len(column), self.n_features), dtype=np.float64)
        self.write(column, out, 0)
        return out

    def write(self, column: Any, out: np.ndarray, offset: int) -> None:
        self.check_fitted()
        positions, codes = map_unique(column, self.bucket)
        _scatter_ones(out, offset, positions, codes)

    def write_value(self, value: Any, out: np.ndarray, offset: int) -> None:
        found = self.bucket(value)
        if found >= 0:
            out[offset + found] = 1.0

    def output_names(self, name: str) -> list[str]:
        return [f"{name}:hash{i}" for i in range(self.n_features)]


class TargetEncode(Transform):
    """The smoothed mean of the target per category, fitted out-of-fold for training rows.

    ``encoding = (sum_y + smoothing * prior) / (count + smoothing)``. ``transform`` (new data,
    serving) uses the statistics of all training rows. The training matrix must not use them:
    a row's own label would leak into its feature. :meth:`transform_oof` encodes each training
    row with statistics from the other folds only; the pipeline's ``fit`` and
    ``transform_training`` use it. Missing and unseen values get the prior (the target mean).

    Args:
        smoothing: Weight of the prior, in rows.
        folds: Number of folds for the out-of-fold encodings.
        seed: Seed of the fold assignment.
    """

    kind = "target_encode"
    consumes = ("category",)
    needs_target = True

    def __init__(self, *, smoothing: float = 20.0, folds: int = 5, seed: int = 0) -> None:
        self.smoothing = smoothing
        self.folds = folds
        self.seed = seed

    def _target(self, column: Any, y: np.ndarray | None) -> np.ndarray:
        if y is None:
            raise ConfigError(
                "target_encode needs the target: fit the pipeline with fit(table, y).", field="y"
            )
        target = np.asarray(y, dtype=np.float64)
        if target.ndim != 1 or len(target) != len(column):
            raise ConfigError(
                f"target_encode: y has shape {target.shape}; expected ({len(column)},).",
                field="y",
            )
        return target

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        target = self._target(column, y)
        values, codes = unique_codes(column)
        self.prior_ = float(target.mean()) if len(target) else 0.0
        encodings = self._encode(codes, target, len(values), self.prior_)
        self.categories_ = values
        self.encodings_ = encodings[: len(values)].tolist()

    def _encode(self, codes: np.ndarray, y: np.ndarray, k: int, prior: float) -> np.ndarray:
        sums = np.bincount(codes, weights=y, minlength=k + 1)
        counts = np.bincount(codes, minlength=k + 1)
        return (sums + self.smoothing * prior) / (counts + self.smoothing)

    def _compile(self) -> None:
        self._lookup = dict(zip(self.categories_, self.encodings_, strict=True))

    def transform_value(self, value: Any) -> Any:
        return self._lookup.get(value, self.prior_)

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        table, codes = map_unique(column, self.transform_value)
        return np.asarray(table, dtype=np.float64)[codes]

    def fold_ids(self, n: int) -> np.ndarray:
        """The fold of each of ``n`` training rows (a seeded permutation, balanced)."""
        return np.random.default_rng(self.seed).permutation(n) % max(self.folds, 2)

    def transform_oof(self, column: Any, y: np.ndarray | None) -> np.ndarray:
        """Out-of-fold encodings of the training rows: each row from the other folds' rows."""
        target = self._target(column, y)
        values, codes = unique_codes(column)
        k, n = len(values), len(codes)
        fold = self.fold_ids(n)
        total_sums = np.bincount(codes, weights=target, minlength=k + 1)
        total_counts = np.bincount(codes, minlength=k + 1)
        out = np.empty(n, dtype=np.float64)
        for f in range(max(self.folds, 2)):
            inside = fold == f
            rest = n - int(inside.sum())
            prior = (float(target.sum()) - float(target[inside].sum())) / rest if rest else 0.0
            sums = total_sums - np.bincount(codes[inside], weights=target[inside], minlength=k + 1)
            counts = total_counts - np.bincount(codes[inside], minlength=k + 1)
            encodings = (sums + self.smoothing * prior) / (counts + self.smoothing)
            encodings[k] = prior
            out[inside] = encodings[codes[inside]]
        return out


class Cross(Transform):
    """Crosses several string columns into one category, ``a|b``; follow it with an encoder.

    Missing parts become ``__missing__``. The cross is a category: end the chain with
    ``hash`` (usual for large crosses), ``one_hot`` or ``target_encode``.

    Args:
        separator: Joins the parts.
    """

    kind = "cross"
    consumes = ("categories",)

    def __init__(self, *, separator: str = "|") -> None:
        self.separator = separator

    def output_kind(self, consumed: str) -> str:
        return "category"

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        parts = [pc.fill_null(part, MISSING_TOKEN) for part in column]
        joined = pc.binary_join_element_wise(*parts, self.separator)
        return joined.cast(pa.string())

    def transform_value(self, value: Any) -> Any:
        return self.separator.join(MISSING_TOKEN if v is None else v for v in value)


def _murmur(key: str, seed: int) -> int:
    """MurmurHash3 (32-bit, positive) of ``key``, scikit-learn's hashing-trick function."""
    # imported on first use: `import sklearn` costs most of a second at startup, and every
    # CLI command and the server import this module
    from sklearn.utils import murmurhash3_32

    return int(murmurhash3_32(key, seed=seed, positive=True))
