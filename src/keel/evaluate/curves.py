"""ROC and precision-recall curves of a classifier, thinned to a few hundred points and stored
with the evaluation, so a model card draws them without predicting the test set again.

Each curve is read off one sort of the scores: one point per distinct threshold (ties move
together), then at most :data:`CURVE_POINTS` of them kept evenly along the curve plus its
start, ``(0, 0)`` for ROC and ``(recall 0, precision 1)`` for PR. A binary model gets one curve
per kind (its positive class); a multiclass model one per class (one-vs-rest), for its first
:data:`MAX_CLASSES` classes.

Example:
    >>> curves = curves_of(y, proba, ["<=50K", ">50K"])
    >>> curves.roc[0].label, len(curves.roc[0].x) <= CURVE_POINTS + 1
    ('>50K', True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CURVE_POINTS", "MAX_CLASSES", "Curve", "Curves", "curves_of"]

CURVE_POINTS = 200
MAX_CLASSES = 8


@dataclass(frozen=True)
class Curve:
    """One line: its label (the class it is of) and its points."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Curve:
        return cls(str(data["label"]), tuple(data["x"]), tuple(data["y"]))


@dataclass(frozen=True)
class Curves:
    """ROC (x: false positive rate, y: true positive rate) and precision-recall (x: recall,
    y: precision) curves, one per class shown."""

    roc: tuple[Curve, ...]
    pr: tuple[Curve, ...]

    def to_json(self) -> dict[str, Any]:
        return {"roc": [c.to_json() for c in self.roc], "pr": [c.to_json() for c in self.pr]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Curves:
        return cls(
            tuple(Curve.from_json(c) for c in data.get("roc") or ()),
            tuple(Curve.from_json(c) for c in data.get("pr") or ()),
        )


def curves_of(
    y: np.ndarray, proba: np.ndarray, classes: Sequence[str], *, points: int = CURVE_POINTS
) -> Curves:
    """The curves of binary P(positive) (1-D ``proba``) or multiclass probabilities
    (``(rows, k)``) against encoded labels ``y``."""
    names = list(classes) or ["negative", "positive"]
    p = np.asarray(proba, dtype=np.float64)
    codes = np.asarray(y).astype(np.int64)
    if p.ndim == 1:
        pairs = [(names[-1], codes == 1, p)]
    else:
        pairs = [(str(c), codes == i, p[:, i]) for i, c in enumerate(names[:MAX_CLASSES])]
    roc, pr = [], []
    for label, hit, score in pairs:
        fpr, tpr, recall, precision = _points(hit, score, points)
        roc.append(Curve(label, fpr, tpr))
        pr.append(Curve(label, recall, precision))
    return Curves(tuple(roc), tuple(pr))


def _points(hit: np.ndarray, score: np.ndarray, points: int) -> tuple[tuple[float, ...], ...]:
    """(fpr, tpr, recall, precision) at every distinct threshold, thinned to ``points``."""
    order = np.argsort(-score, kind="stable")
    s, h = score[order], hit[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.array([], int)
    tp, fp = np.cumsum(h)[last], np.cumsum(1 - h)[last]
    positives, negatives = max(h.sum(), 1.0), max(len(h) - h.sum(), 1.0)
    keep = np.unique(np.linspace(0, max(len(last) - 1, 0), points).astype(int))[: len(last)]
    tpr, fpr = tp[keep] / positives, fp[keep] / negatives
    precision = tp[keep] / np.maximum(tp[keep] + fp[keep], 1.0)
    return (
        (0.0, *fpr.tolist()), (0.0, *tpr.tolist()),
        (0.0, *tpr.tolist()), (1.0, *precision.tolist()),
    )  # fmt: skip
