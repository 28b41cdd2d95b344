"""Promotion gates: a dotted path into the stored evaluation, an operator and a bound.

Paths (a bare metric name means ``metrics.NAME``):

- ``metrics.roc_auc`` (the point value), ``metrics.roc_auc.ci_low``, ``metrics.roc_auc.ci_high``
- ``slices.sex=Female.recall`` (``.ci_low``, ``.ci_high``, ``.rows``); a slice smaller than
  ``evaluate.min_slice_size`` is reported but never gates
- ``slices.sex.selection_rate_difference`` (a column's gap across its values)
- ``fairness.sex.demographic_parity_difference``, ``fairness.sex&race.equalized_odds_ratio``
- ``calibration.ece`` / ``.mce`` / ``.brier``; ``residuals.mean`` / ``.std`` / ``.p95`` ...
- ``worst_slices.count``, ``worst_slices.max_effect_size``
- ``latency.p50_ms``, ``latency.p99_ms`` (one row through the online path), ``size.bytes``

An undefined value (a TPR of a group without positives, an AUC of a one-class slice) fails its
gate with the reason; it is never compared as NaN. A path that names nothing fails, listing what
there is.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from keel.config.evaluate import GATE_PATTERN, GATE_ROOTS, parse_gate

if TYPE_CHECKING:
    from keel.evaluate.evaluation import Evaluation

__all__ = ["GATE_PATTERN", "GATE_ROOTS", "GateResult", "evaluate_gates", "parse_gate"]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}  # fmt: skip
_STATS = ("value", "ci_low", "ci_high")


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict.

    Attributes:
        gate: The gate as written (``fairness.sex.demographic_parity_difference <= 0.1``).
        path: The dotted path it reads; ``op`` and ``bound`` what it compares with.
        value: The number found (None: undefined or absent, see ``reason``).
        passed: Whether it allows the alias move.
        reason: Why, in words (the value against the bound, or why it is undefined or not
            gated).
    """

    gate: str
    path: str
    op: str
    bound: float
    value: float | None
    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(**data)


class _Absent(Exception):
    """The path names nothing; the message lists what there is."""


def _choose(table: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in table:
        raise _Absent(f"no {what} '{key}' (there is: {', '.join(map(str, table)) or 'none'})")
    return table[key]


def _estimate(estimates: Mapping[str, Any], rest: str, rows: int) -> tuple[float | None, str]:
    name, _, stat = rest.partition(".") if rest.rsplit(".", 1)[-1] in _STATS else (rest, "", "")
    if name == "rows":
        return float(rows), ""
    estimate = _choose(estimates, name, "metric")
    value = getattr(estimate, stat or "value")
    return value, "" if value is not None else f"{name}{'.' + stat if stat else ''} is undefined"


def _resolve(evaluation: Evaluation, path: str) -> tuple[float | None, str, bool]:
    """(value, why it is None, whether it gates) at ``path``."""
    root, _, rest = path.partition(".") if "." in path else ("metrics", "", path)
    if root == "metrics":
        value, why = _estimate(evaluation.overall.estimates, rest, evaluation.overall.rows)
        return value, why, True
    if root == "slices":
        return _slice(evaluation, rest)
    if root == "fairness":
        feature, _, metric = rest.rpartition(".")
        audit = _choose(evaluation.fairness, feature, "sensitive feature")
        value = _choose(audit.disparities, metric, "fairness metric")
        return value, audit.undefined.get(metric, ""), True
    if root == "calibration":
        if evaluation.calibration is None:
            raise _Absent("no calibration (it is measured for classifiers)")
        found = {k: v for k, v in evaluation.calibration.to_json().items() if k != "bins"}
        return _choose(found, rest, "calibration measure"), "", True
    if root == "residuals":
        if evaluation.residuals is None:
            raise _Absent("no residuals (they are measured for regression models)")
        data = evaluation.residuals.to_json()
        found = {**{k: v for k, v in data.items() if k != "quantiles"}, **data["quantiles"]}
        return _choose(found, rest, "residual summary"), "", True
    if root in ("latency", "size"):
        if evaluation.footprint is None:
            raise _Absent(f"no {root} measured for this evaluation")
        data = evaluation.footprint.to_json()
        return _choose({k: v for k, v in data.items() if k.endswith("ms") == (root == "latency")},
                       rest, f"{root} measure"), "", True  # fmt: skip
    worst = evaluation.worst_slices
    found = {
        "count": float(len(worst)),
        "max_effect_size": max((w.effect_size for w in worst), default=0.0),
    }
    return _choose(found, rest, "worst-slice summary"), "", True


def _slice(evaluation: Evaluation, rest: str) -> tuple[float | None, str, bool]:
    head, _, tail = rest.partition("=")
    if not tail:  # slices.COLUMN.GAP
        column, _, gap = rest.rpartition(".")
        gaps = _choose(evaluation.gaps, column, "slice column")
        return _choose(gaps, gap, "gap"), "", True
    groups = _choose(evaluation.slices, head, "slice column")
    value = next((v for v in sorted(groups, key=len, reverse=True) if tail.startswith(v + ".")),
                 None)  # fmt: skip
    if value is None:
        raise _Absent(f"no slice '{head}={tail}' (values: {', '.join(groups)})")
    metrics = groups[value]
    found, why = _estimate(metrics.estimates, tail[len(value) + 1 :], metrics.rows)
    if metrics.rows < evaluation.min_slice_size:
        why = f"slice {head}={value} has {metrics.rows} rows < min_slice_size " \
              f"{evaluation.min_slice_size}: reported, not gated"  # fmt: skip
        return found, why, False
    return found, why, True


def evaluate_gates(
    evaluation: Evaluation, gates: Sequence[tuple[str, str, float]], texts: Sequence[str] = ()
) -> list[GateResult]:
    """Each gate's value, bound and verdict against a stored evaluation.

    Args:
        evaluation: The evaluation to read.
        gates: ``(path, op, bound)`` triples (:func:`parse_gate`).
        texts: The gates as written (default: rebuilt from the triples).
    """
    results = []
    for i, (path, op, bound) in enumerate(gates):
        text = texts[i] if i < len(texts) else f"{path} {op} {bound:g}"
        try:
            value, why, gated = _resolve(evaluation, path)
        except _Absent as exc:
            results.append(GateResult(text.strip(), path, op, bound, None, False, str(exc)))
            continue
        if not gated:
            results.append(GateResult(text.strip(), path, op, bound, value, True, why))
        elif value is None:
            reason = f"undefined: {why}" if why else "undefined"
            results.append(GateResult(text.strip(), path, op, bound, None, False, reason))
        else:
            passed = bool(OPS[op](float(value), bound))
            word = "meets" if passed else "fails"
            reason = f"{path} = {float(value):.6g} {word} {op} {bound:g}"
            results.append(GateResult(text.strip(), path, op, bound, float(value), passed, reason))
    return results
