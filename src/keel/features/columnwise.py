"""Filling a few request rows' features a column at a time, bit for bit as the row path does.

:meth:`~keel.features.pipeline.FeaturePipeline.transform_rows` (and the server's batches) hand
their coerced rows here from a handful of rows up: number chains that impute and/or standardize
become one NumPy pass, one-hot chains look each distinct value up once, and any other chain is
filled row by row with its own row path. The pipeline sorts its fitted chains once
(:meth:`Fused.of`) when it is fitted or loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.features.categorical import OneHot
from keel.features.chain import Chain
from keel.features.numeric import Impute, Standardize

__all__ = ["Affine", "Fused", "fill"]


@dataclass(frozen=True)
class Affine:
    """Number chains of ``impute`` (no indicator) and/or ``standardize``, side by side."""

    names: list[str]
    columns: np.ndarray  # output column of each
    imputes: bool
    imputed: np.ndarray  # whether each imputes
    fills: np.ndarray
    means: np.ndarray
    scales: np.ndarray


@dataclass(frozen=True)
class Fused:
    """How :meth:`~keel.features.pipeline.FeaturePipeline.transform_rows` fills a few rows a
    column at a time."""

    affine: Affine | None
    onehot: list[tuple[str, Impute | None, OneHot, int]]  # input, impute, encoder, offset
    other: list[Chain]

    @classmethod
    def of(cls, chains: list[Chain], kinds: Mapping[str, str]) -> Fused:
        """Sort fitted, placed chains into the three ways of filling them (``kinds``: input
        column -> number, category or datetime)."""
        affine: list[tuple[str, int, Impute | None, Standardize | None]] = []
        onehot: list[tuple[str, Impute | None, OneHot, int]] = []
        other: list[Chain] = []
        for chain in chains:
            name = chain.columns[0]
            kind = kinds.get(name, "") if len(chain.columns) == 1 else ""
            steps = list(chain.steps)
            impute = steps[0] if steps and type(steps[0]) is Impute else None
            if isinstance(impute, Impute):  # (always, when set: for the type checker)
                steps.pop(0)
                if impute.indicator:
                    other.append(chain)
                    continue
            last = steps[0] if len(steps) == 1 else None
            if kind == "number" and len(steps) <= 1 and (last is None or type(last) is Standardize):
                scale = last if isinstance(last, Standardize) else None
                affine.append((name, chain.offset, impute, scale))
                continue
            if kind == "category" and type(last) is OneHot and isinstance(last, OneHot):
                onehot.append((name, impute, last, chain.offset))
                continue
            other.append(chain)
        if not affine:
            return cls(None, onehot, other)
        fills = [np.nan if i is None else float(i.fill_) for _, _, i, _ in affine]
        return cls(
            Affine(
                names=[name for name, _, _, _ in affine],
                columns=np.array([offset for _, offset, _, _ in affine], dtype=np.intp),
                imputes=any(i is not None for _, _, i, _ in affine),
                imputed=np.array([i is not None for _, _, i, _ in affine]),
                fills=np.array(fills, dtype=np.float64),
                means=np.array([0.0 if s is None else s.mean_ for *_, s in affine]),
                scales=np.array([1.0 if s is None else s.scale_ for *_, s in affine]),
            ),
            onehot,
            other,
        )


def fill(fused: Fused, values: list[dict[str, Any]], n_features: int) -> np.ndarray:
    """The rows' features, a column at a time: the same numbers the row path writes.

    Number chains that impute and/or standardize are one NumPy pass over all of them
    (IEEE arithmetic, the row path's operations in the same order); one-hot chains map each
    distinct value once and set every row's 1.0 in one scatter; any other chain is filled
    row by row with its row path.
    """
    n = len(values)
    # one spare last column: where index -1 (no one-hot column for a value) writes
    out = np.zeros((n, n_features + 1), dtype=np.float64)
    affine = fused.affine
    if affine is not None:
        names = affine.names
        x = np.array([[v[name] for name in names] for v in values], dtype=np.float64)
        with np.errstate(all="ignore"):  # overflow gives inf, as Python floats do
            if affine.imputes:
                x = np.where(np.isnan(x) & affine.imputed, affine.fills, x)
            x = (x - affine.means) / affine.scales
        x[np.isnan(x)] = np.nan  # one NaN bit pattern, as the row path writes
        out[:, affine.columns] = x
    if fused.onehot:
        columns = []
        for name, impute, encoder, offset in fused.onehot:
            keys = [v[name] for v in values]
            at: dict[Any, int] = {}
            for key in set(keys):  # once per distinct value
                found = encoder.position(key if impute is None else impute.transform_value(key))
                at[key] = offset + found if found >= 0 else -1
            columns.append([at[key] for key in keys])
        out[np.arange(n), np.array(columns, dtype=np.intp)] = 1.0
    for chain in fused.other:
        for value, row in zip(values, out, strict=True):
            chain.fill(value, row)
    return np.ascontiguousarray(out[:, :-1])
