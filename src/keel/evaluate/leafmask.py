"""Exact LightGBM predictions for known rows with one group of columns taken from other rows.

Permutation importance (:mod:`keel.evaluate.importance`) predicts tens of thousands of rows
that are test rows with one input column's features swapped in from another test row. LightGBM
walks every tree for each of them (~9 µs a row on one thread for the Adult example's 203
trees). This module predicts them from bitmasks instead, sharing all the work the rows have in
common.

Per feature, the model's thresholds on it cut its values into bins within which every split on
that feature decides the same way (plus one bin for zero and one for NaN, which LightGBM's
missing-value rules may send another way). For each bin and each tree that splits on the
feature, a bitmask holds the tree's leaves whose path conditions on the feature hold there
(QuickScorer's idea, Lucchese et al. 2015, with one mask per bin). A row reaches, in each tree,
the one leaf whose bit survives the AND of its features' masks. For the known rows, the AND over
every column group but one is computed once (prefix and suffix over the groups); a row with
group ``g`` from a donor row is then one AND per tree that uses ``g``, the leaf's value, and the
sum over the trees. Same leaves, same sum, in LightGBM's output transform (sigmoid, softmax or
identity): the predictions equal ``Booster.predict``'s to rounding (~1e-15).

Models this does not cover get ``None`` from :meth:`LeafMasks.of` (categorical splits, linear
trees, averaged output, more than 64 leaves a tree, an objective whose transform is not one of
those three, tables past ``MAX_BYTES``); the caller then predicts with LightGBM.

Example:
    >>> masks = LeafMasks.of(booster, x.shape[1])
    >>> known = masks.known_rows(x_sample, [np.array([0]), np.array([1, 2])])
    >>> known.swapped(1, rows=np.array([0, 5]), donors=np.array([7, 3]))  # group 1 from rows 7, 3
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.evaluate.lgbm_text import Forest, built_for

__all__ = ["MAX_BYTES", "KnownRows", "LeafMasks"]

MAX_BYTES = 64 << 20  # the tables, and the known rows' masks, each at most this (else LightGBM)
_ZERO = 1e-35  # LightGBM's kZeroThreshold: |x| <= it reads as 0
_CHUNK = 8192  # swapped rows per step (bounds the temporaries: ~13 MB at 203 trees)
_CACHE: weakref.WeakKeyDictionary[Any, LeafMasks | None] = weakref.WeakKeyDictionary()
_IDENTITY = {"regression", "regression_l2", "l2", "mse", "regression_l1", "l1", "mae", "huber",
             "fair", "quantile", "mape"}  # fmt: skip


@dataclass(frozen=True)
class _Feature:
    """One feature's bins and masks: ``edges`` its sorted thresholds, ``trees`` the trees that
    split on it, ``table[i, bin]`` the leaves of ``trees[i]`` reachable from that bin."""

    index: int
    edges: np.ndarray
    trees: np.ndarray
    table: np.ndarray

    def bins(self, values: np.ndarray) -> np.ndarray:
        """Each value's bin: ``len(edges) + 1`` regular ones, then zero, then NaN."""
        out = np.searchsorted(self.edges, values, side="left")
        out[np.abs(values) <= _ZERO] = len(self.edges) + 1
        out[np.isnan(values)] = len(self.edges) + 2
        return out


@dataclass(frozen=True)
class LeafMasks:
    """A model's leaf masks per feature and bin, and what turns leaves into predictions."""

    features: int
    outputs: int
    dtype: type
    columns: tuple[_Feature, ...]
    leaf_value: np.ndarray  # (trees, most leaves), padded with 0
    tree_output: np.ndarray
    constant: np.ndarray
    transform: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def of(cls, booster: Any, features: int) -> LeafMasks | None:
        """The booster's masks, built once and kept with it (~0.05 s for 203 trees); None for
        a model this module does not cover."""
        return built_for(_CACHE, booster, features, cls.build)

    @classmethod
    def build(cls, forest: Forest) -> LeafMasks | None:
        """The masks of ``forest``; None where the model is not covered (see the module)."""
        transform = _transform(forest.objective, forest.outputs)
        most = int(forest.num_leaves.max())
        if transform is None or most > 64:
            return None
        dtype: type = np.uint32 if most <= 32 else np.uint64
        leaf_base = np.r_[0, np.cumsum(forest.num_leaves)[:-1]]
        local = np.arange(len(forest.leaf_value)) - leaf_base[forest.tree_of_leaf]
        bit = np.left_shift(np.ones(len(local), dtype=dtype), local.astype(dtype))
        full: np.ndarray = np.zeros(len(forest.num_leaves), dtype=dtype)
        np.add.at(full, forest.tree_of_leaf, bit)  # distinct bits: the sum is the OR
        e_leaf, e_node, e_left, _ = forest.paths()
        e_feature = forest.split_feature[e_node]
        by_feature = np.argsort(e_feature, kind="stable")
        cuts = np.flatnonzero(np.diff(e_feature[by_feature])) + 1
        columns, size = [], 0
        for edges_of in np.split(by_feature, cuts):
            column = _column(forest, e_leaf[edges_of], e_node[edges_of], e_left[edges_of],
                             bit, full)  # fmt: skip
            size += column.table.nbytes
            if size > MAX_BYTES:
                return None
            columns.append(column)
        values = np.zeros((len(forest.num_leaves), most))
        values[forest.tree_of_leaf, local] = forest.leaf_value
        return cls(forest.features, forest.outputs, dtype, tuple(columns), values,
                   forest.tree_output, forest.constant, transform)  # fmt: skip

    def known_rows(self, x: np.ndarray, groups: Sequence[np.ndarray]) -> KnownRows | None:
        """Prepare rows ``x`` (transformed, ``(n, features)``) for swaps of the feature
        ``groups`` (disjoint index arrays; features in no group stay the row's own); None when
        the groups overlap or the masks would pass ``MAX_BYTES``."""
        x = np.asarray(x, dtype=np.float64)
        n, trees = len(x), len(self.leaf_value)
        owner = np.full(self.features, len(groups), dtype=np.intp)  # the last: no group
        for g, members in enumerate(groups):
            if (owner[members] != len(groups)).any():
                return None  # a feature in two groups: the prefix/suffix ANDs do not apply
            owner[members] = g
        uses = np.zeros((len(groups) + 1, trees), dtype=bool)
        for column in self.columns:
            uses[owner[column.index], column.trees] = True
        cells = 2 * n * int(uses[:-1].sum()) * np.dtype(self.dtype).itemsize + 8 * n * trees
        if cells > MAX_BYTES:
            return None
        on = [np.flatnonzero(u) for u in uses]  # the trees each group's features reach
        place = np.full((len(groups) + 1, trees), -1, dtype=np.intp)
        for g, trees_g in enumerate(on):
            place[g, trees_g] = np.arange(len(trees_g))
        # tree-major (trees, rows): the gathers and scatters below move whole rows
        own: list[np.ndarray] = [~np.zeros((len(trees_g), n), dtype=self.dtype) for trees_g in on]
        for column in self.columns:  # each group's AND over its features, on its trees
            g = owner[column.index]
            own[g][place[g, column.trees]] &= column.table.take(column.bins(x[:, column.index]), 1)
        every: np.ndarray = ~np.zeros((trees, n), dtype=self.dtype)
        every[on[-1]] = own[-1]  # features in no group: always the row's own
        after = []  # per group, the AND of the later groups (and no group's), on its trees
        for g in range(len(groups) - 1, -1, -1):
            after.append(every[on[g]])
            every[on[g]] &= own[g]
        after.reverse()
        if not (every.all() and not (every & (every - 1)).any()):
            return None  # not one leaf per tree: a model this module misread; LightGBM decides
        reached = self._values(every.T, np.arange(trees))
        before: np.ndarray = ~np.zeros((trees, n), dtype=self.dtype)
        swaps = []
        for g in range(len(groups)):
            others = before[on[g]] & after[g]
            after[g] = after[g][:0]  # freed as it goes: the peak stays near two copies
            before[on[g]] &= own[g]
            outside = np.ones(trees, dtype=bool)
            outside[on[g]] = False
            swaps.append(_Swap(np.ascontiguousarray(others.T), np.ascontiguousarray(own[g].T),
                               on[g], self.by_output(reached[:, outside], outside)))  # fmt: skip
        return KnownRows(self, reached, tuple(swaps))

    def _values(self, mask: np.ndarray, trees: np.ndarray) -> np.ndarray:
        """The leaf value per row of ``trees`` for masks ``(rows, len(trees))`` with one bit
        set per tree (its position read off the float exponent: exact for powers of two)."""
        exact = np.float32 if self.dtype is np.uint32 else np.float64
        leaf = np.frexp(mask.astype(exact))[1]
        leaf += (trees * self.leaf_value.shape[1] - 1).astype(leaf.dtype)
        return np.asarray(self.leaf_value.ravel().take(leaf))

    def by_output(self, values: np.ndarray, trees: np.ndarray | slice) -> np.ndarray:
        """Per row, the sum of leaf values ``(rows, len(trees))`` per output, in tree order
        (equal leaves give equal sums)."""
        if self.outputs == 1:
            return np.asarray(values.sum(axis=1)[:, None])
        output = self.tree_output[trees]
        return np.column_stack([values[:, output == o].sum(axis=1) for o in range(self.outputs)])


@dataclass(frozen=True)
class _Swap:
    """One group's part of the known rows: the AND of the other groups' masks and the group's
    own, on the trees it reaches, and the other trees' sum per output."""

    others: np.ndarray  # (rows, trees of the group)
    own: np.ndarray
    trees: np.ndarray
    outside: np.ndarray  # (rows, outputs)


@dataclass(frozen=True)
class KnownRows:
    """Rows prepared by :meth:`LeafMasks.known_rows`: each row's leaf values, and per group
    what a swap of it needs (:class:`_Swap`)."""

    masks: LeafMasks
    reached: np.ndarray  # (rows, trees) leaf values
    swaps: tuple[_Swap, ...]

    def predict(self) -> np.ndarray:
        """The known rows' own predictions (as ``Booster.predict``)."""
        return self.masks.transform(self.masks.by_output(self.reached, slice(None))
                                    + self.masks.constant)  # fmt: skip

    def baseline(self, group: int) -> np.ndarray:
        """The known rows' own predictions summed as :meth:`swapped` sums (the group's trees
        apart): what a swapped row that changed nothing would get, to the last bit."""
        swap = self.swaps[group]
        inside = self.masks.by_output(self.reached[:, swap.trees], swap.trees)
        return self.masks.transform(swap.outside + inside + self.masks.constant)

    def swapped(self, group: int, rows: np.ndarray, donors: np.ndarray) -> np.ndarray:
        """Predictions for ``rows`` with ``group``'s features taken from ``donors`` (both
        index arrays into the known rows, of equal length)."""
        swap = self.swaps[group]
        out = []
        for start in range(0, max(len(rows), 1), _CHUNK):
            r, d = rows[start : start + _CHUNK], donors[start : start + _CHUNK]
            inside = self.masks._values(swap.others[r] & swap.own[d], swap.trees)
            raw = swap.outside[r] + self.masks.by_output(inside, swap.trees)
            out.append(self.masks.transform(raw + self.masks.constant))
        return np.concatenate(out)


def _column(forest: Forest, leaf: np.ndarray, node: np.ndarray, left: np.ndarray,
            bit: np.ndarray, full: np.ndarray) -> _Feature:  # fmt: skip
    """One feature's masks from the path edges on it: ``(leaf, node, way)``."""
    feature = int(forest.split_feature[node[0]])
    edges = np.unique(forest.threshold[node])
    at = np.searchsorted(edges, forest.threshold[node])  # each node's threshold
    regular = np.arange(len(edges) + 1)[:, None]
    zero_left = np.where(forest.missing[node] == 1, forest.default_left[node],
                         forest.threshold[node] >= 0.0)  # fmt: skip
    nan_left = np.where(forest.missing[node] >= 1, forest.default_left[node],
                        forest.threshold[node] >= 0.0)  # fmt: skip
    goes_left = np.vstack([regular <= at[None, :], zero_left, nan_left])  # (bins, edges)
    holds = goes_left == left[None, :]
    order = np.argsort(leaf, kind="stable")  # a leaf's conditions on the feature together
    leaf, holds = leaf[order], holds[:, order]
    starts = np.flatnonzero(np.r_[True, leaf[1:] != leaf[:-1]])
    fits = np.logical_and.reduceat(holds, starts, axis=1)  # (bins, leaves with a condition)
    leaves = leaf[starts]
    tree = forest.tree_of_leaf[leaves]
    trees, position = np.unique(tree, return_inverse=True)
    table = np.tile(full[trees], (len(fits), 1))
    cleared = np.where(fits, 0, bit[leaves][None, :]).astype(table.dtype)
    for_tree = np.flatnonzero(np.r_[True, position[1:] != position[:-1]])  # leaves in tree order
    table -= np.add.reduceat(cleared, for_tree, axis=1)  # distinct bits: minus is AND NOT
    return _Feature(feature, edges, trees, np.ascontiguousarray(table.T))


def _transform(objective: str, outputs: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """LightGBM's output transform for ``objective`` (its model line), None if not covered."""
    name, *options = objective.split()
    if name in ("binary", "cross_entropy", "xentropy") and outputs == 1:
        scale = 1.0
        for option in options:
            if option.startswith("sigmoid:"):
                scale = float(option.split(":", 1)[1])
        return lambda raw: np.asarray(1.0 / (1.0 + np.exp(-scale * raw[:, 0])))
    if name in ("multiclass", "softmax") and outputs > 1:

        def softmax(raw: np.ndarray) -> np.ndarray:
            shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
            return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))

        return softmax
    if name in _IDENTITY and outputs == 1:
        return lambda raw: np.asarray(raw[:, 0])
    return None
