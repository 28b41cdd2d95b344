"""Exact path-dependent TreeSHAP for a few rows of a LightGBM model, in NumPy.

LightGBM's ``pred_contrib`` walks every tree recursively for each row (O(leaves x depth²) a
tree, ~1.4 ms a row for the 203-tree Adult model on one thread). For a handful of rows this
module computes the same values from arrays built once per booster, with a closed form that
vectorises over every leaf of every tree at once ("Linear TreeShap", Yu et al. 2022).

For one leaf with value ``v``, let ``j = 1..d`` be the distinct features on its path,
``w_j`` the product of the cover ratios (child count / parent count) of the path's edges on
feature ``j``, and ``s_j`` 1 when the row satisfies all the path's conditions on ``j``, else 0.
The leaf's path-dependent Shapley value for feature ``i`` is::

    phi_i = v * (s_i - w_i) * Integral_0^1 prod_{j != i} ((1 - t) w_j + t s_j) dt

The integrand is a polynomial of degree ``d - 1``, so Gauss-Legendre quadrature with
``ceil(d / 2)`` nodes on [0, 1] is exact (and with more). Leaves are grouped by that node count
``q`` (neighbouring counts merged where a group's fixed cost outweighs its padding) and padded
to ``2q`` features with neutral ones (``w = s = 1``: a factor of 1 and no value), so that each
group is one dense ``(q, 2q, leaves)`` computation. Per row the work is: each split's decision,
each path's satisfaction per feature, the products, one sum per destination. On the Adult
example (203 trees, 6,293 leaves) that is ~0.5 ms of CPU a row against ~1.4 ms for
``pred_contrib``, equal to ~1e-14.

The decisions follow LightGBM's exactly: values within ``1e-35`` of zero are zero (as its
predictor reads a dense row), NaN is 0 unless the split's missing type is NaN, and a missing
value (NaN, or zero for missing type Zero) goes the split's default way. Models this module
does not cover (categorical splits, linear trees, random-forest averaging, arrays past 32 MiB)
get ``None`` from :meth:`TreeShap.of`, and the caller uses ``pred_contrib``. LightGBM is never
imported here: the booster's ``model_to_string()`` is all it reads (:meth:`TreeShap.parse`,
~0.03 s for 203 trees).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.evaluate.lgbm_text import Forest, built_for

__all__ = ["TreeShap"]

_ZERO = 1e-35  # LightGBM's kZeroThreshold: |x| <= it reads as 0
_CALL_NS, _ELEMENT_NS = 30_000.0, 2.0  # a group's fixed cost, and per element (measured)
_MAX_ELEMENTS = 1 << 22  # per-node array elements (32 MiB); Adult's 203 trees: ~150,000
_CACHE: weakref.WeakKeyDictionary[Any, TreeShap | None] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Group:
    """Leaves with at most ``width = 2q`` distinct features on their paths (padded with
    neutral ones: ``w = s = 1``, a factor of 1 and no value). Per-slot arrays are
    ``(width, leaves)``, at ``start`` in a row's flat slot vector; per-node ones are
    ``(q, width, leaves)``."""

    start: int
    width: int
    leaves: int
    weights: np.ndarray  # Gauss-Legendre weights on [0, 1], shape (q, 1, 1)
    step: np.ndarray  # the nodes t, shape (q, 1, 1)
    low: np.ndarray  # (1 - t) w: the factor when the row fails the feature's conditions
    value: np.ndarray  # the leaf values, shape (1, leaves)
    value_w: np.ndarray  # v * w, shape (width, leaves)


@dataclass(frozen=True)
class TreeShap:
    """A booster's trees as arrays: splits, path conditions per slot, leaf groups.

    Attributes:
        features: The model's feature count.
        outputs: Raw outputs (1, or the class count).
        bias: Per output, the sum of the trees' expected values (LightGBM's last column).
    """

    features: int
    outputs: int
    bias: np.ndarray
    split_feature: np.ndarray  # per internal node
    threshold: np.ndarray
    missing_zero: np.ndarray | None  # nodes whose missing type is Zero (None: there are none)
    missing_nan: np.ndarray | None  # ... NaN
    default_left: np.ndarray
    first_node: np.ndarray  # per slot: its first condition's split (padding: a dummy node)
    first_left: np.ndarray  # ... the way it goes
    extra_node: np.ndarray  # the further conditions on a slot's feature: split, way, slot
    extra_left: np.ndarray
    extra_slot: np.ndarray
    groups: tuple[_Group, ...]
    order: np.ndarray  # the slots sorted by where their value goes
    starts: np.ndarray  # where each destination's run starts in that order
    destination: np.ndarray  # index into (outputs * (features + 1)) per run

    @classmethod
    def of(cls, booster: Any, features: int) -> TreeShap | None:
        """The booster's arrays, built once and kept with it; None when its trees use what
        this module does not cover (categorical splits, linear trees, averaged output)."""
        return built_for(_CACHE, booster, features, cls.of_forest)

    @classmethod
    def parse(cls, text: str) -> TreeShap | None:
        """From ``Booster.model_to_string()`` (:class:`~keel.evaluate.lgbm_text.Forest`: one
        NumPy conversion per field over every tree, ~10x less CPU than ``dump_model()`` and a
        walk): the booster's arrays; None for a model this module does not cover."""
        forest = Forest.parse(text)
        return None if forest is None else cls.of_forest(forest)

    @classmethod
    def of_forest(cls, forest: Forest) -> TreeShap | None:
        """The arrays of parsed trees (None: an empty branch, which has no cover ratio)."""
        internal, leaf_count = forest.internal_count, forest.leaf_count
        if (internal <= 0).any() or (leaf_count <= 0).any():
            return None  # an empty branch: w = 0 has no inverse
        bias = forest.constant.copy()
        roots = np.flatnonzero(forest.node_parent < 0)  # in tree order
        output = forest.tree_output[forest.tree_of_leaf]
        np.add.at(
            bias, output, leaf_count / internal[roots][forest.tree_of_leaf] * forest.leaf_value
        )
        e_leaf, e_node, e_left, e_cover = forest.paths()
        return cls._from_edges(
            forest.features, forest.outputs, bias, forest.split_feature, forest.threshold,
            forest.missing, forest.default_left, forest.leaf_value, output,
            e_leaf, e_node, e_left, e_cover / internal[e_node],
        )  # fmt: skip

    @classmethod
    def _from_edges(
        cls,
        features: int,
        k: int,
        bias: np.ndarray,
        split_feature: np.ndarray,
        threshold: np.ndarray,
        missing: np.ndarray,
        default_left: np.ndarray,
        leaf_value: np.ndarray,
        leaf_output: np.ndarray,
        e_leaf: np.ndarray,
        e_node: np.ndarray,
        e_left: np.ndarray,
        e_ratio: np.ndarray,
    ) -> TreeShap | None:
        """The arrays from every leaf's path as edges (leaf, split node, the way it goes, cover
        ratio), vectorised over all edges: per (leaf, feature) the product of its ratios, its
        first condition (the others go to ``extra_*``) and its slot in its leaf's group."""
        pair_key = e_leaf * features + split_feature[e_node]
        by_pair = np.argsort(pair_key, kind="stable")
        keys = pair_key[by_pair]
        head = np.r_[True, keys[1:] != keys[:-1]]
        firsts = np.flatnonzero(head)
        weight = np.multiply.reduceat(e_ratio[by_pair], firsts)  # w per (leaf, feature)
        pair_leaf, pair_feature = keys[firsts] // features, keys[firsts] % features
        pair_node, pair_left = e_node[by_pair][firsts], e_left[by_pair][firsts]
        distinct = np.bincount(pair_leaf, minlength=len(leaf_value))
        leaf_first = np.r_[0, np.cumsum(distinct)[:-1]]
        pair_j = np.arange(len(firsts)) - leaf_first[pair_leaf]  # its rank in the leaf
        q_of = (distinct + 1) // 2
        by_q = {int(q): np.flatnonzero(q_of == q).tolist() for q in np.unique(q_of)}
        merged = _merged(by_q)
        if sum(2 * q * q * len(members) for q, members in merged) > _MAX_ELEMENTS:
            return None  # a model this large: pred_contrib, in bounded memory
        dummy, trash = len(threshold), k * (features + 1)  # padding: always satisfied, no value
        group_start = np.zeros(len(leaf_value), dtype=np.intp)
        group_count = np.ones(len(leaf_value), dtype=np.intp)
        position = np.zeros(len(leaf_value), dtype=np.intp)
        group_of = np.zeros(len(leaf_value), dtype=np.intp)
        for index, (_, members) in enumerate(merged):
            group_of[members] = index
        groups: list[_Group] = []
        target: list[np.ndarray] = []
        first: list[np.ndarray] = []
        start = 0
        for index, (q, members) in enumerate(merged):
            chosen = np.asarray(members, dtype=np.intp)
            width, count = 2 * q, len(chosen)
            group_start[chosen], group_count[chosen] = start, count
            position[chosen] = np.arange(count)
            t, gl = np.polynomial.legendre.leggauss(q)
            t, gl = (t + 1.0) / 2.0, gl / 2.0
            mine = np.flatnonzero(group_of[pair_leaf] == index)
            j_, at = pair_j[mine], position[pair_leaf[mine]]
            w = np.ones((width, count))
            slot = np.full((width, count), trash, dtype=np.intp)
            node = np.full((2, width, count), dummy, dtype=np.intp)  # first split, its way
            node[1] = 1
            w[j_, at] = weight[mine]
            slot[j_, at] = leaf_output[pair_leaf[mine]] * (features + 1) + pair_feature[mine]
            node[0, j_, at], node[1, j_, at] = pair_node[mine], pair_left[mine]
            values = leaf_value[chosen][None, :]
            low = (1.0 - t)[:, None, None] * w
            groups.append(
                _Group(start, width, count, gl[:, None, None], t[:, None, None], low, values,
                       values * w)
            )  # fmt: skip
            target.append(slot.ravel())
            first.append(node.reshape(2, -1))
            start += width * count
        # the further conditions on a (leaf, feature): all must hold with its first
        more = by_pair[~head]
        pair_of = (np.cumsum(head) - 1)[~head]
        leaf_of = pair_leaf[pair_of]
        extra_slot = (group_start[leaf_of] + pair_j[pair_of] * group_count[leaf_of]
                      + position[leaf_of])  # fmt: skip
        slots, heads = np.concatenate(target), np.concatenate(first, axis=1)
        order = np.argsort(slots, kind="stable")
        runs = np.flatnonzero(np.r_[True, np.diff(slots[order]) != 0])
        ends = slots[order][runs]  # each run's destination; the padding's (trash) is last
        return cls(
            features=features,
            outputs=k,
            bias=bias,
            split_feature=split_feature.astype(np.intp),
            threshold=threshold.astype(np.float64),
            missing_zero=(missing == 1) if (missing == 1).any() else None,
            missing_nan=(missing == 2) if (missing == 2).any() else None,
            default_left=default_left.astype(bool),
            first_node=heads[0],
            first_left=heads[1].astype(bool),
            extra_node=e_node[more].astype(np.intp),
            extra_left=e_left[more].astype(bool),
            extra_slot=extra_slot.astype(np.intp),
            groups=tuple(groups),
            order=order,
            starts=runs,  # the padding, if any, is the last run: summed and dropped
            destination=ends[ends != trash],
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Contributions per feature plus the bias, shape ``(rows, outputs, features + 1)``,
        as LightGBM's ``pred_contrib`` (to rounding).

        Rows are computed one at a time, each vectorised over all leaves: one row's arrays
        (~1 MB for 200 trees) stay in cache, and stacking rows measured slower per row (on
        Adult: 4 rows 2.6 ms of CPU one by one, 3.7 ms together, 5.8 ms for ``pred_contrib``).
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.features)
        out = np.empty((len(x), self.outputs, self.features + 1))
        for i, row in enumerate(x):  # a few rows: the caller sends many to pred_contrib
            out[i] = self._row(row)
        return out

    def _row(self, x: np.ndarray) -> np.ndarray:
        nan = np.isnan(x)
        value = np.where(nan | (np.abs(x) <= _ZERO), 0.0, x)[self.split_feature]
        left = np.ones(len(self.threshold) + 1, dtype=bool)  # the last: padding's dummy split
        np.less_equal(value, self.threshold, out=left[:-1])
        if self.missing_zero is not None or self.missing_nan is not None:  # the default way
            missing = np.zeros(len(value), dtype=bool)
            if self.missing_zero is not None:
                missing |= self.missing_zero & (value == 0.0)
            if self.missing_nan is not None:
                missing |= self.missing_nan & nan[self.split_feature]
            left[:-1] = np.where(missing, self.default_left, left[:-1])
        satisfied = (left[self.first_node] == self.first_left).astype(np.float64)
        if len(self.extra_node):  # a feature split on more than once: all must hold
            satisfied[self.extra_slot[left[self.extra_node] != self.extra_left]] = 0.0
        phi = np.empty_like(satisfied)
        for g in self.groups:
            end = g.start + g.width * g.leaves
            s = satisfied[g.start : end].reshape(g.width, g.leaves)
            term = g.low + s * g.step  # (q, width, leaves)
            product = term.prod(axis=1, keepdims=True)
            product *= g.weights
            integral = np.divide(product, term, out=term).sum(axis=0)
            part = phi[g.start : end].reshape(g.width, g.leaves)
            np.multiply(s * g.value - g.value_w, integral, out=part)
        flat = np.zeros(self.outputs * (self.features + 1))
        summed = np.add.reduceat(phi[self.order], self.starts)
        flat[self.destination] = summed[: len(self.destination)]
        out = flat.reshape(self.outputs, self.features + 1)
        out[:, -1] += self.bias
        return out


def _merged(by_q: Mapping[int, list[int]]) -> list[tuple[int, list[int]]]:
    """Leaves grouped by node count, neighbouring counts merged where a group's fixed cost
    outweighs the larger arrays (exact either way: more nodes integrate lower degrees), by
    dynamic programming over the sorted counts."""
    qs = sorted(by_q)
    best: list[tuple[float, list[tuple[int, int]]]] = [(0.0, [])]  # cost, runs of qs[i:j]
    for j in range(1, len(qs) + 1):
        options = []
        for i in range(j):
            leaves = sum(len(by_q[q]) for q in qs[i:j])
            cost = _CALL_NS + _ELEMENT_NS * leaves * 2 * qs[j - 1] ** 2
            options.append((best[i][0] + cost, [*best[i][1], (i, j)]))
        best.append(min(options, key=lambda option: option[0]))
    return [(qs[j - 1], [m for q in qs[i:j] for m in by_q[q]]) for i, j in best[-1][1]]
