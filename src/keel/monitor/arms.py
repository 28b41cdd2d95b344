"""A/B arms from feedback: each arm's realised metric with its interval, and a test between arms.

An arm is a (version, role) pair of the prediction log (an A/B deployment's arms, a canary and
its primary, a shadow). :func:`compare_arms` joins the stored labels to the log once
(:func:`keel.monitor.performance.join_labels`), groups the labelled rows by arm, reads each
arm's metrics with bootstrap intervals, and tests every arm against the baseline (the primary,
else the first arm):

- accuracy-type metrics (accuracy, precision, recall): the two-proportion z-test with a pooled
  proportion, z = (p2 - p1) / sqrt(p (1 - p) (1/n1 + 1/n2)), two-sided;
- ROC AUC, RMSE and MAE: a bootstrap of the difference (arm - baseline), paired (the same
  resample of rows for both) when both arms scored exactly the same predictions (a shadow
  logged beside its primary under the same request ids), else unpaired (each arm resampled on
  its own); the p-value is twice the smaller tail of the differences around 0.

The baseline is the primary arm of the version holding ``registry.alias`` (a deployment's
status: its primary) when it has labels, else that version's arm in another role (an A/B
test's ``2/ab``), else the primary of the lowest version, else the first arm; a note says so
when the baseline is not the alias's version.

``significant`` compares p with ``alpha``; it says nothing of peeking: re-testing as labels
arrive inflates false positives (see methods.md, sequential tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.evaluate.bootstrap import BootstrapSettings, percentile_interval, weighted_auc
from keel.monitor.performance import (
    RESAMPLES,
    Joined,
    MetricInterval,
    bounded_resamples,
    metric_intervals,
    normal_quantile,
)

if TYPE_CHECKING:
    from keel.project import Project

__all__ = [
    "ArmComparison",
    "ArmResult",
    "ArmTest",
    "compare_arms",
    "compare_joined",
    "with_feedback",
]

_PROPORTIONS = {
    "accuracy": ("hit", None),
    "precision": ("hit_positive", "predicted"),
    "recall": ("hit_positive", "actual"),
}


@dataclass(frozen=True)
class ArmResult:
    """One arm: its version and role, labelled rows and realised metrics."""

    version: str
    role: str
    labelled: int
    metrics: dict[str, MetricInterval]

    @property
    def name(self) -> str:
        """``3/primary``."""
        return f"{self.version}/{self.role}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "arm": self.name,
            "version": self.version,
            "role": self.role,
            "labelled": self.labelled,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }


@dataclass(frozen=True)
class ArmTest:
    """One metric of one arm against the baseline: difference, its interval, the test."""

    metric: str
    baseline: str
    arm: str
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    method: str
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "arm": self.arm,
            "difference": _round(self.difference),
            "low": _round(self.low),
            "high": _round(self.high),
            "p_value": _round(self.p_value),
            "method": self.method,
            "significant": self.significant,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class ArmComparison:
    """Every arm's realised metrics and each arm's tests against the baseline."""

    model: str
    task: str
    alpha: float
    confidence: float
    baseline: str | None
    arms: tuple[ArmResult, ...]
    tests: tuple[ArmTest, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "model": self.model,
            "task": self.task,
            "alpha": self.alpha,
            "confidence": self.confidence,
            "baseline": self.baseline,
            "arms": [a.to_dict() for a in self.arms],
            "tests": [t.to_dict() for t in self.tests],
            "notes": list(self.notes),
        }


def compare_arms(
    project: Project,
    name: str,
    *,
    versions: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    alpha: float = 0.05,
    baseline: str | None = None,
) -> ArmComparison:
    """Realised metrics per arm of ``name`` from its feedback, and tests against the baseline.

    Args:
        project: The open project.
        name: The model's name.
        versions: Only these versions' arms (default: every arm with labels).
        since: Predictions at or after this ISO time.
        until: Predictions before this ISO time.
        alpha: The significance level of ``significant``.
        baseline: The version whose primary arm is the baseline (default: the version holding
            ``registry.alias``, the primary the server answers with).
    """
    from keel.monitor.check import parse_time
    from keel.monitor.labels import joined_for
    from keel.monitor.window import LogFilter

    select = LogFilter(since=parse_time(since, "--since"), until=parse_time(until, "--until"))
    spec, joined, _ = joined_for(project, name, select=select)
    return compare_joined(
        name,
        spec.task,
        spec.classes,
        joined,
        versions=versions,
        alpha=alpha,
        min_rows=project.config.monitor.min_rows,
        baseline=_current_primary(project, name) if baseline is None else baseline,
    )


def _current_primary(project: Project, name: str) -> str | None:
    """The version holding ``name@registry.alias``, or None when no version holds it."""
    from keel.errors import NotFoundError

    try:
        found = project.metadata.resolve(f"{name}@{project.config.registry.alias}")
    except NotFoundError:
        return None
    return str(found.version)


def compare_joined(
    model: str,
    task: str,
    classes: tuple[str, ...],
    joined: Joined,
    *,
    versions: list[str] | None = None,
    alpha: float = 0.05,
    min_rows: int = 1,
    settings: BootstrapSettings = BootstrapSettings(resamples=RESAMPLES),
    baseline: str | None = None,
) -> ArmComparison:
    """:func:`compare_arms` on rows already joined to their labels; ``baseline``: the version
    whose primary arm comes first (the baseline) when it has labels."""
    notes: list[str] = []
    # the baseline version's primary arm, else its arm in any role (an A/B test's "2/ab"), else
    # a primary, else the lowest version
    pairs = sorted(
        {(str(v), str(r)) for v, r in zip(joined.version, joined.role, strict=True)},
        key=lambda p: (
            p != (baseline, "primary"), p[0] != baseline, p[1] != "primary", _number(p[0]), p[1]
        ),
    )  # fmt: skip
    if versions is not None:
        pairs = [p for p in pairs if p[0] in versions]
    groups = {p: np.flatnonzero((joined.version == p[0]) & (joined.role == p[1])) for p in pairs}
    small = [f"{v}/{r} ({len(rows)})" for (v, r), rows in groups.items() if len(rows) < min_rows]
    if small:
        notes.append(
            f"arms with fewer than {min_rows} labels (monitor.min_rows) are left out: "
            + ", ".join(small)
        )
    groups = {p: rows for p, rows in groups.items() if len(rows) >= min_rows}
    arms = tuple(
        ArmResult(v, r, len(rows), metric_intervals(task, classes, joined.subset(rows), settings))
        for (v, r), rows in groups.items()
    )
    notes.extend(_baseline_notes(arms, baseline, min_rows, bool(small)))
    tests: list[ArmTest] = []
    if arms:
        base_rows = groups[(arms[0].version, arms[0].role)]
        for arm in arms[1:]:
            rows = groups[(arm.version, arm.role)]
            tests.extend(
                _tests(task, classes, joined, base_rows, rows, arms[0], arm, alpha, settings)
            )
    return ArmComparison(
        model,
        task,
        alpha,
        settings.confidence,
        arms[0].name if arms else None,
        arms,
        tuple(tests),
        tuple(notes),
    )


def _baseline_notes(
    arms: tuple[ArmResult, ...], baseline: str | None, min_rows: int, left_out: bool
) -> list[str]:
    """What the comparison could not do, consistent with what was left out: too few arms,
    or a baseline other than the version the alias holds (and why)."""
    enough = f"{min_rows} labels or more" if left_out else "labels"
    if not arms:
        return [f"fewer than two arms have {enough} (none): nothing to compare, no baseline."]
    notes = []
    if len(arms) < 2:
        notes.append(
            f"fewer than two arms have {enough} (only {arms[0].name}): nothing to compare it "
            "with (feed labels back for each version's predictions"
            + (", or lower monitor.min_rows)." if left_out else ").")
        )
    if baseline is not None and arms[0].version != baseline:
        notes.append(
            f"the baseline is {arms[0].name}: version {baseline} (the one the alias holds) has "
            f"no arm with {enough}."
        )
    return notes


def _number(version: str) -> float:
    try:
        return float(version)
    except ValueError:
        return math.inf


def _tests(
    task: str,
    classes: tuple[str, ...],
    joined: Joined,
    base_rows: np.ndarray,
    rows: np.ndarray,
    base: ArmResult,
    arm: ArmResult,
    alpha: float,
    settings: BootstrapSettings,
) -> list[ArmTest]:
    out = []
    if task != "regression":
        for metric in ("accuracy", "precision", "recall") if task == "binary" else ("accuracy",):
            x1, n1 = _proportion(metric, classes, joined, base_rows)
            x2, n2 = _proportion(metric, classes, joined, rows)
            out.append(_z_test(metric, base.name, arm.name, x1, n1, x2, n2, alpha))
    bootstrap = ["rmse", "mae"] if task == "regression" else []
    if task == "binary" and "roc_auc" in base.metrics and "roc_auc" in arm.metrics:
        bootstrap.append("roc_auc")
    for metric in bootstrap:
        out.append(
            _bootstrap_test(metric, classes, joined, base_rows, rows, base, arm, alpha, settings)
        )
    return out


def _proportion(
    metric: str, classes: tuple[str, ...], joined: Joined, rows: np.ndarray
) -> tuple[int, int]:
    """Successes and trials of an accuracy-type metric on these rows."""
    label, prediction = joined.label[rows], joined.prediction[rows]
    hit = prediction == label
    if metric == "accuracy":
        return int(hit.sum()), len(rows)
    positive = classes[-1]
    if metric == "precision":
        chosen = prediction == positive
    else:
        chosen = label == positive
    return int((hit & chosen).sum()), int(chosen.sum())


def _z_test(
    metric: str, base: str, arm: str, x1: int, n1: int, x2: int, n2: int, alpha: float
) -> ArmTest:
    """Two-proportion z-test (pooled), with a Wald interval of the difference."""
    if n1 == 0 or n2 == 0:
        return ArmTest(metric, base, arm, None, None, None, None, "two-proportion z-test", False)
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    difference = p2 - p1
    if spread == 0:
        p_value = 1.0 if difference == 0 else 0.0
    else:
        p_value = math.erfc(abs(difference / spread) / math.sqrt(2))
    wald = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    z = normal_quantile(1 - alpha / 2)
    return ArmTest(
        metric,
        base,
        arm,
        difference,
        difference - z * wald,
        difference + z * wald,
        p_value,
        "two-proportion z-test",
        p_value <= alpha,
    )


def _bootstrap_test(
    metric: str,
    classes: tuple[str, ...],
    joined: Joined,
    base_rows: np.ndarray,
    rows: np.ndarray,
    base: ArmResult,
    arm: ArmResult,
    alpha: float,
    settings: BootstrapSettings,
) -> ArmTest:
    paired = _pairing(joined, base_rows, rows)
    if paired is not None:
        base_rows, rows = paired
        first = _draws(metric, classes, joined, base_rows, settings)
        second = _draws(metric, classes, joined, rows, settings)  # same seed: same resamples
        method = "paired bootstrap of the difference"
    else:
        first = _draws(metric, classes, joined, base_rows, settings)
        other = BootstrapSettings(settings.resamples, settings.seed + 1, settings.confidence)
        second = _draws(metric, classes, joined, rows, other)
        method = "unpaired bootstrap of the difference"
    value_base, value_arm = base.metrics[metric].value, arm.metrics[metric].value
    difference = None if value_base is None or value_arm is None else value_arm - value_base
    diffs = second - first
    finite = diffs[np.isfinite(diffs)]
    interval = percentile_interval(diffs, settings.confidence)
    if finite.size == 0 or interval is None:
        return ArmTest(metric, base.name, arm.name, difference, None, None, None, method, False)
    tail = min(float(np.mean(finite <= 0)), float(np.mean(finite >= 0)))
    p_value = min(1.0, max(2 * tail, 1 / finite.size))
    return ArmTest(
        metric,
        base.name,
        arm.name,
        difference,
        interval[0],
        interval[1],
        p_value,
        method,
        p_value <= alpha,
    )


def _pairing(
    joined: Joined, base_rows: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both arms' rows in the same prediction order when they labelled exactly the same
    predictions (same request ids and instances), else None."""
    if len(base_rows) != len(rows):
        return None
    keys_base, keys_arm = _prediction_keys(joined, base_rows), _prediction_keys(joined, rows)
    order_base, order_arm = np.argsort(keys_base), np.argsort(keys_arm)
    if not np.array_equal(keys_base[order_base], keys_arm[order_arm]):
        return None
    return base_rows[order_base], rows[order_arm]


def _prediction_keys(joined: Joined, rows: np.ndarray) -> np.ndarray:
    ids = np.char.add(joined.request_id[rows].astype(str), "\x1f")
    return np.char.add(ids, joined.instance[rows].astype(str))


def _draws(
    metric: str,
    classes: tuple[str, ...],
    joined: Joined,
    rows: np.ndarray,
    settings: BootstrapSettings,
) -> np.ndarray:
    """The metric on every resample of these rows (NaN where undefined)."""
    subset = joined.subset(rows)
    out = []
    if metric == "roc_auc":
        assert subset.probability is not None
        truth = (subset.label == classes[-1]).astype(np.int64)
        for counts in bounded_resamples(len(rows), settings):
            out.append(weighted_auc(counts, subset.probability, truth))
    else:
        error = subset.prediction.astype(np.float64) - subset.label.astype(np.float64)
        part = error**2 if metric == "rmse" else np.abs(error)
        for counts in bounded_resamples(len(rows), settings):
            mean = (counts @ part) / len(rows)
            out.append(np.sqrt(mean) if metric == "rmse" else mean)
    return np.concatenate(out) if out else np.zeros(0)


def with_feedback(project: Project, shown: dict[str, Any]) -> dict[str, Any]:
    """A deployment's status (``Rollouts.status``) with, for an A/B or shadow deployment, each
    arm's realised metrics from feedback since it began, their intervals and the tests against
    the primary, under ``feedback`` (a ``note`` instead when nothing is labelled yet)."""
    if shown["kind"] not in ("ab", "shadow"):
        return shown
    from keel.errors import KeelError

    # the primary answers the traffic the arms do not take (and every shadowed request)
    primary = shown["spec"]["primary"]
    arms = {str(a["version"]) for a in shown["arms"]} | {str(primary)}
    versions = sorted(arms)
    try:
        compared = compare_arms(
            project,
            shown["name"],
            versions=versions,
            since=shown["created_at"],
            until=shown.get("ended_at"),
            baseline=None if primary is None else str(primary),
        )
    except KeelError as exc:  # nothing logged yet, or no labels: say so, never fail the status
        return {**shown, "feedback": {"note": exc.message}}
    return {**shown, "feedback": compared.to_dict()}
