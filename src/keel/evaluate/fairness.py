"""Fairness by sensitive feature, singly and intersectionally, as Fairlearn defines it.

Per group: selection rate P[h=1|A=a], true positive rate P[h=1|A=a,Y=1] and false positive
rate P[h=1|A=a,Y=0], at the model's decision threshold. Across groups (Fairlearn's
``between_groups``): demographic parity difference (max - min selection rate) and ratio
(min / max), equal opportunity difference and ratio (on TPR), equalized odds difference (the
larger of the TPR and FPR differences) and ratio (the smaller of the two ratios). The numbers
equal ``fairlearn.metrics`` on the same predictions; two things differ on purpose:

- a group with fewer than ``min_group_size`` rows is listed with its rates but left out of the
  differences, with the reason;
- a group without positives (negatives) has an undefined TPR (FPR), reported as None with the
  reason and left out of that rate's difference (Fairlearn counts it as 0).

Multiclass models are audited one-vs-rest per class; the feature's numbers are the worst class.
One pass of ``np.bincount`` per feature: no DataFrame, no per-group Python metric calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DISPARITIES",
    "FeatureFairness",
    "GroupRates",
    "audit_fairness",
    "group_codes",
]

DISPARITIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "equal_opportunity_ratio",
)
_GREATER_IS_WORSE = {name: name.endswith("difference") for name in DISPARITIES}
NULL = "<null>"


@dataclass(frozen=True)
class GroupRates:
    """One group's size and rates; None where a rate is undefined (``undefined`` says why).

    ``excluded`` is why the group is left out of the differences (None: it counts).
    """

    group: str
    rows: int
    positives: int
    selection_rate: float
    tpr: float | None
    fpr: float | None
    excluded: str | None = None
    undefined: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "rows": self.rows,
            "positives": self.positives,
            "selection_rate": self.selection_rate,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "excluded": self.excluded,
            "undefined": dict(self.undefined),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroupRates:
        return cls(**{**data, "undefined": dict(data.get("undefined") or {})})


@dataclass(frozen=True)
class FeatureFairness:
    """The audit of one sensitive feature (``sex``) or intersection (``sex&race``).

    Attributes:
        feature: The feature's name; an intersection joins names with ``&``.
        groups: Every group seen, largest first, excluded ones included (with the reason).
        disparities: Each of :data:`DISPARITIES`; None when undefined (see ``undefined``).
        undefined: Disparity name -> why it has no value.
        per_class: Multiclass: the one-vs-rest audit per class (``disparities`` is the worst).
    """

    feature: str
    groups: tuple[GroupRates, ...]
    disparities: Mapping[str, float | None]
    undefined: Mapping[str, str] = field(default_factory=dict)
    per_class: Mapping[str, FeatureFairness] = field(default_factory=dict)

    @property
    def excluded(self) -> list[GroupRates]:
        """Groups left out of the differences (too small)."""
        return [g for g in self.groups if g.excluded is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "groups": [g.to_json() for g in self.groups],
            **dict(self.disparities),
            "undefined": dict(self.undefined),
            "excluded": [{"group": g.group, "rows": g.rows, "reason": g.excluded}
                         for g in self.excluded],
            "per_class": {c: f.to_json() for c, f in self.per_class.items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureFairness:
        return cls(
            feature=data["feature"],
            groups=tuple(GroupRates.from_json(g) for g in data["groups"]),
            disparities={name: data.get(name) for name in DISPARITIES},
            undefined=dict(data.get("undefined") or {}),
            per_class={c: cls.from_json(f) for c, f in (data.get("per_class") or {}).items()},
        )


def group_codes(columns: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """Each row's group code and the group names (``Female`` or ``Female&White``), from one or
    more columns (arrays, Arrow or pandas); None and NaN are the group ``<null>``."""
    import pandas as pd

    codes = np.zeros(len(columns[0]), dtype=np.int64)
    names: list[str] = [""]
    for values in columns:
        found, uniques = pd.factorize(np.asarray(values, dtype=object), sort=True)
        labels = [str(u) for u in uniques]
        if (found < 0).any():
            found = np.where(found < 0, len(labels), found)
            labels.append(NULL)
        codes = codes * len(labels) + found
        names = [f"{a}&{b}" if a else b for a in names for b in labels]
    present, compact = np.unique(codes, return_inverse=True)
    return compact.astype(np.int64), [names[i] for i in present]


def _rates(
    codes: np.ndarray, names: list[str], y: np.ndarray, predicted: np.ndarray, min_size: int
) -> list[GroupRates]:
    k = len(names)
    rows = np.bincount(codes, minlength=k)
    positives = np.bincount(codes, weights=y, minlength=k)
    chosen = np.bincount(codes, weights=predicted, minlength=k)
    hits = np.bincount(codes, weights=predicted * y, minlength=k)
    out = []
    for g in np.argsort(-rows, kind="stable"):
        n, pos, sel, tp = int(rows[g]), positives[g], chosen[g], hits[g]
        undefined = {}
        if pos == 0:
            undefined["tpr"] = "no positive labels in the group"
        if pos == n:
            undefined["fpr"] = "no negative labels in the group"
        small = f"{n} rows < min_group_size {min_size}" if n < min_size else None
        out.append(
            GroupRates(
                group=names[g],
                rows=n,
                positives=int(pos),
                selection_rate=float(sel / n),
                tpr=None if pos == 0 else float(tp / pos),
                fpr=None if pos == n else float((sel - tp) / (n - pos)),
                excluded=small,
                undefined=undefined,
            )
        )
    return out


def _spread(groups: list[GroupRates], rate: str) -> tuple[float | str, float | str]:
    """(max - min, min / max) of a rate over the counted groups; a reason where undefined."""
    values = [getattr(g, rate) for g in groups if g.excluded is None]
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    if len(defined) == 0:
        reason = f"no group of at least min_group_size rows has a defined {rate}"
        return reason, reason
    high, low = float(defined.max()), float(defined.min())
    if high == 0:
        return 0.0, f"every counted group's {rate} is 0, so min/max is undefined"
    return high - low, low / high


def _disparities(groups: list[GroupRates]) -> tuple[dict[str, float | None], dict[str, str]]:
    spreads = {rate: _spread(groups, rate) for rate in ("selection_rate", "tpr", "fpr")}
    values: dict[str, float | None] = {}
    undefined: dict[str, str] = {}
    wanted = {
        "demographic_parity": ("selection_rate",),
        "equalized_odds": ("tpr", "fpr"),
        "equal_opportunity": ("tpr",),
    }
    for stem, rates in wanted.items():
        for index, suffix, pick in ((0, "difference", max), (1, "ratio", min)):
            name = f"{stem}_{suffix}"
            found = [spreads[r][index] for r in rates]
            reasons = [f for f in found if isinstance(f, str)]
            if reasons:
                values[name], undefined[name] = None, reasons[0]
            else:
                values[name] = float(pick(f for f in found if not isinstance(f, str)))
    return values, undefined


def _audit(
    name: str, codes: np.ndarray, names: list[str], y: np.ndarray, predicted: np.ndarray,
    min_size: int,
) -> FeatureFairness:  # fmt: skip
    groups = _rates(codes, names, y, predicted, min_size)
    values, undefined = _disparities(groups)
    return FeatureFairness(name, tuple(groups), values, undefined)


def _worst(name: str, per_class: dict[str, FeatureFairness]) -> FeatureFairness:
    values: dict[str, float | None] = {}
    undefined: dict[str, str] = {}
    for metric in DISPARITIES:
        seen = {c: f.disparities[metric] for c, f in per_class.items()}
        defined = [v for v in seen.values() if v is not None]
        if not defined:
            values[metric] = None
            undefined[metric] = "undefined for every class"
            continue
        values[metric] = max(defined) if _GREATER_IS_WORSE[metric] else min(defined)
    first = next(iter(per_class.values()))
    return FeatureFairness(name, first.groups, values, undefined, per_class)


def audit_fairness(
    features: Mapping[str, np.ndarray],
    y: np.ndarray,
    predicted: np.ndarray,
    *,
    classes: Sequence[str] = (),
    intersectional: bool = True,
    min_group_size: int = 30,
) -> dict[str, FeatureFairness]:
    """Fairness of decisions ``predicted`` against labels ``y`` per sensitive feature.

    Args:
        features: Sensitive feature name -> its value per row.
        y: Encoded labels: 0/1 (binary) or class codes (multiclass).
        predicted: The model's decisions in the same coding (0/1 at the threshold, or argmax).
        classes: Class names by code; three or more means one-vs-rest per class.
        intersectional: Also audit every combination of all the features (``sex&race``).
        min_group_size: Groups with fewer rows are listed but left out of the differences.

    Returns:
        Feature (or ``a&b`` intersection) -> its :class:`FeatureFairness`.
    """
    wanted: list[tuple[str, list[np.ndarray]]] = [(n, [v]) for n, v in features.items()]
    if intersectional and len(features) > 1:
        wanted.append(("&".join(features), list(features.values())))
    multiclass = len(classes) > 2
    out: dict[str, FeatureFairness] = {}
    for name, columns in wanted:
        codes, names = group_codes(columns)
        if not multiclass:
            yb, pb = y.astype(np.float64), predicted.astype(np.float64)
            out[name] = _audit(name, codes, names, yb, pb, min_group_size)
            continue
        per_class = {
            str(label): _audit(name, codes, names, (y == c).astype(np.float64),
                               (predicted == c).astype(np.float64), min_group_size)
            for c, label in enumerate(classes)
        }  # fmt: skip
        out[name] = _worst(name, per_class)
    return out
