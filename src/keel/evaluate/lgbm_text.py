"""A LightGBM model's trees as flat NumPy arrays, read from ``Booster.model_to_string()``.

Both of Keel's own tree evaluators read this: :mod:`keel.evaluate.treeshap` (exact TreeSHAP for
a few rows) and :mod:`keel.evaluate.leafmask` (exact predictions for rows that differ from
known rows in a few columns, what permutation importance predicts). Each field is converted
once over every tree (no per-node Python): ~0.03 s for the Adult example's 203 trees.

Split trees' nodes and leaves are numbered globally (tree after tree); a tree with a single
leaf has no split and only adds its value to its output's ``constant``. LightGBM is never
imported here.

Example:
    >>> forest = Forest.of(booster)  # parsed once per booster
    >>> forest.outputs, len(forest.tree_output), forest.split_feature[:3]
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = ["Forest", "built_for", "model_text"]


class _Sized(Protocol):
    @property
    def features(self) -> int: ...


Built = TypeVar("Built", bound=_Sized)

_CACHE: weakref.WeakKeyDictionary[Any, Forest | None] = weakref.WeakKeyDictionary()
_PARSING = threading.Lock()  # two threads asking for one booster's trees: one parses


def built_for(
    cache: weakref.WeakKeyDictionary[Any, Built | None],
    booster: Any,
    features: int,
    build: Callable[[Forest], Built | None],
) -> Built | None:
    """What ``build`` makes of the booster's trees, made once per booster and kept in ``cache``
    (None: a model ``build`` or :class:`Forest` does not cover, or one of another width than
    ``features``)."""
    if booster not in cache:
        forest = Forest.of(booster)
        cache[booster] = build(forest) if forest is not None else None
    built = cache[booster]
    return built if built is not None and built.features == features else None


def model_text(booster: Any) -> str:
    """The booster's model text with the trees its ``predict`` uses (up to ``best_iteration``
    when early stopping set one)."""
    best = int(getattr(booster, "best_iteration", 0) or 0)
    return str(booster.model_to_string(num_iteration=best if best > 0 else None))


@dataclass(frozen=True)
class Forest:
    """The trees of one LightGBM model.

    Attributes:
        features: The model's feature count. outputs: Raw outputs (1, or the class count).
        objective: The ``objective=`` line of the model (``binary sigmoid:1``, ...).
        constant: Per output, the sum of the single-leaf trees' values.
        tree_output: Per split tree, the output it adds to. num_leaves: Its leaf count.
        split_feature, threshold, missing, default_left: Per split node; ``missing`` is
            LightGBM's missing type (0 none, 1 zero, 2 NaN).
        node_parent, node_left: Per split node, its parent (-1 for a root) and whether it is
            its parent's left child.
        internal_count: Per split node, the training rows through it.
        leaf_value, leaf_count, leaf_parent, leaf_left, tree_of_leaf: Per leaf.
    """

    features: int
    outputs: int
    objective: str
    constant: np.ndarray
    tree_output: np.ndarray
    num_leaves: np.ndarray
    split_feature: np.ndarray
    threshold: np.ndarray
    missing: np.ndarray
    default_left: np.ndarray
    node_parent: np.ndarray
    node_left: np.ndarray
    internal_count: np.ndarray
    leaf_value: np.ndarray
    leaf_count: np.ndarray
    leaf_parent: np.ndarray
    leaf_left: np.ndarray
    tree_of_leaf: np.ndarray

    @classmethod
    def of(cls, booster: Any) -> Forest | None:
        """The booster's trees (those its ``predict`` uses), parsed once and kept with it."""
        with _PARSING:
            if booster not in _CACHE:
                _CACHE[booster] = cls.parse(model_text(booster))
            return _CACHE[booster]

    @classmethod
    def parse(cls, text: str) -> Forest | None:
        """The arrays of ``text``; None for what Keel's evaluators do not cover (linear trees,
        categorical splits, random-forest averaging, no split at all)."""
        head, _, body = text.partition("\nTree=")
        lines = head.splitlines()
        header = dict(line.split("=", 1) for line in lines if "=" in line)
        if "average_output" in lines or not body:
            return None
        k = int(header["num_tree_per_iteration"])
        features = int(header["max_feature_idx"]) + 1
        trees = []
        for block in body.split("end of trees", 1)[0].split("\nTree="):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if fields.get("is_linear", "0") != "0" or fields.get("num_cat", "0") != "0":
                return None
            trees.append(fields)
        leaves = np.array([int(t["num_leaves"]) for t in trees])
        constant = np.zeros(k)
        for position in np.flatnonzero(leaves == 1):  # a single leaf: its value is all constant
            constant[position % k] += float(trees[position]["leaf_value"])
        split = [t for t in trees if int(t["num_leaves"]) > 1]
        if not split:
            return None

        def field(name: str, dtype: type) -> np.ndarray:
            return np.array(" ".join(t[name] for t in split).split(), dtype=dtype)

        sizes = leaves[leaves > 1]
        decision = field("decision_type", np.int64)
        leaf_value = field("leaf_value", np.float64)
        node_base = np.repeat(np.r_[0, np.cumsum(sizes - 1)[:-1]], sizes - 1)
        leaf_base = np.repeat(np.r_[0, np.cumsum(sizes)[:-1]], sizes - 1)
        # parents: a child >= 0 is a split node, ~child a leaf (per tree, made global)
        node_parent = np.full(len(decision), -1, dtype=np.intp)
        leaf_parent = np.empty(len(leaf_value), dtype=np.intp)
        node_left = np.zeros(len(decision), dtype=bool)
        leaf_left = np.zeros(len(leaf_value), dtype=bool)
        for name, way in (("left_child", True), ("right_child", False)):
            child = field(name, np.int64)
            parent = np.arange(len(child))
            inner = child >= 0
            node_parent[node_base[inner] + child[inner]] = parent[inner]
            node_left[node_base[inner] + child[inner]] = way
            to = leaf_base[~inner] + ~child[~inner]
            leaf_parent[to], leaf_left[to] = parent[~inner], way
        return cls(
            features=features,
            outputs=k,
            objective=header.get("objective", ""),
            constant=constant,
            tree_output=np.flatnonzero(leaves > 1) % k,
            num_leaves=sizes,
            split_feature=field("split_feature", np.intp),
            threshold=field("threshold", np.float64),
            missing=((decision >> 2) & 3).astype(np.int8),
            default_left=(decision & 2) > 0,
            node_parent=node_parent,
            node_left=node_left,
            internal_count=field("internal_count", np.float64),
            leaf_value=leaf_value,
            leaf_count=field("leaf_count", np.float64),
            leaf_parent=leaf_parent,
            leaf_left=leaf_left,
            tree_of_leaf=np.repeat(np.arange(len(split)), sizes),
        )

    def paths(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every leaf's path as edges, walked upwards, all leaves at once (one array step per
        level): ``(leaf, split node, the way the path goes at it, the training rows of the
        child it goes to)``."""
        e_leaf, e_node, e_left, e_cover = [], [], [], []
        at, left, cover = self.leaf_parent, self.leaf_left, self.leaf_count
        alive = np.arange(len(self.leaf_value))
        while len(alive):
            e_leaf.append(alive)
            e_node.append(at)
            e_left.append(left)
            e_cover.append(cover)
            cover, left, at = self.internal_count[at], self.node_left[at], self.node_parent[at]
            going = at >= 0
            alive, at, left, cover = alive[going], at[going], left[going], cover[going]
        return (np.concatenate(e_leaf), np.concatenate(e_node), np.concatenate(e_left),
                np.concatenate(e_cover))  # fmt: skip
