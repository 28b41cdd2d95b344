"""An independent reader of a LightGBM model for :mod:`keel.evaluate.treeshap`'s tests: the
same arrays built from ``Booster.dump_model()`` by walking each tree in Python, to check
:meth:`TreeShap.parse` (which reads ``model_to_string()`` with NumPy) against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from keel.evaluate.treeshap import TreeShap

_MISSING = {"None": 0, "Zero": 1, "NaN": 2}
_Edge = tuple[int, int, bool, float]  # split node, its feature, goes left, cover ratio
_Leaf = tuple[float, int, list[_Edge]]  # value, output, path


def build(model: Mapping[str, Any]) -> TreeShap | None:
    """From ``Booster.dump_model()``; None for a model the module does not cover."""
    if model.get("average_output") or not model.get("tree_info"):
        return None
    k = int(model["num_tree_per_iteration"])
    features = int(model["max_feature_idx"]) + 1
    nodes: list[tuple[int, float, int, bool]] = []  # feature, threshold, missing, left
    leaves: list[_Leaf] = []
    bias = np.zeros(k)
    for position, tree in enumerate(model["tree_info"]):
        root = tree["tree_structure"]
        if "split_index" not in root:  # a single leaf: its value is all bias
            if "leaf_coeff" in root:
                return None
            bias[position % k] += float(root["leaf_value"])
            continue
        expected = _walk(root, position % k, nodes, leaves)
        if expected is None:
            return None
        bias[position % k] += expected
    if not nodes:
        return None
    return _arrays(features, k, bias, nodes, leaves)


def _arrays(
    features: int,
    k: int,
    bias: np.ndarray,
    nodes: list[tuple[int, float, int, bool]],
    leaves: list[_Leaf],
) -> TreeShap | None:
    """From :func:`_walk`'s lists, as :meth:`TreeShap.parse` makes them from the text."""
    split = list(zip(*nodes, strict=True))
    counts = [len(path) for _, _, path in leaves]
    edges = [edge for _, _, path in leaves for edge in path]
    e_node, _, e_left, e_ratio = (list(c) for c in zip(*edges, strict=True))
    return TreeShap._from_edges(
        features, k, bias,
        np.asarray(split[0], dtype=np.intp), np.asarray(split[1], dtype=np.float64),
        np.asarray(split[2], dtype=np.int8), np.asarray(split[3], dtype=bool),
        np.asarray([v for v, _, _ in leaves], dtype=np.float64),
        np.asarray([o for _, o, _ in leaves], dtype=np.intp),
        np.repeat(np.arange(len(leaves)), counts), np.asarray(e_node, dtype=np.intp),
        np.asarray(e_left, dtype=bool), np.asarray(e_ratio, dtype=np.float64),
    )  # fmt: skip


def _walk(
    root: Mapping[str, Any],
    output: int,
    nodes: list[tuple[int, float, int, bool]],
    leaves: list[_Leaf],
) -> float | None:
    """Append one tree's splits and leaf paths; its expected value (LightGBM's: the leaves
    weighted by count), or None for a split kind not covered."""
    total = float(root["internal_count"])
    expected = 0.0
    stack: list[tuple[Mapping[str, Any], list[_Edge]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if "split_index" not in node:
            if "leaf_coeff" in node:
                return None
            value = float(node["leaf_value"])
            expected += float(node["leaf_count"]) / total * value
            leaves.append((value, output, path))
            continue
        if node["decision_type"] != "<=":
            return None
        index = len(nodes)
        missing = _MISSING[str(node["missing_type"])]
        nodes.append((int(node["split_feature"]), float(node["threshold"]), missing,
                      bool(node["default_left"])))  # fmt: skip
        count = float(node["internal_count"])
        for child, left in ((node["left_child"], True), (node["right_child"], False)):
            cover = float(child["internal_count" if "split_index" in child else "leaf_count"])
            if cover <= 0.0 or count <= 0.0:  # an empty branch: w = 0 has no inverse
                return None
            edge = (index, int(node["split_feature"]), left, cover / count)
            stack.append((child, [*path, edge]))
    return expected
