"""The stored evaluation of a model on its test data, and how it is computed.

:func:`evaluate_predictions` turns labels and predictions (plus the slice, sensitive and search
columns, and optionally the champion's predictions on the same rows) into an
:class:`Evaluation`: metrics with bootstrap intervals overall and per slice, calibration or
residuals, the worst slices, fairness, the champion comparison and every gate's verdict.
``Evaluation.to_json()`` is what the evaluate step stores; its ``metrics`` and ``slices`` keep
the plain shape (``{"roc_auc": 0.93, ...}``) that the registry and ``keel models show`` read.

Example:
    >>> ev = evaluate_predictions("binary", y, proba, config=EvaluateConfig(
    ...     gates=["fairness.sex.demographic_parity_difference <= 0.1"]),
    ...     sensitive={"sex": sex}, classes=["<=50K", ">50K"])
    >>> ev.overall.estimates["roc_auc"].ci_low, ev.gates[0].passed
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.config.evaluate import EvaluateConfig
from keel.evaluate.bootstrap import (
    AUTO,
    Block,
    BootstrapSettings,
    metric_draws,
    percentile_interval,
)
from keel.evaluate.calibration import Calibration, Residuals, calibration_of, residuals_of
from keel.evaluate.comparison import Comparison, compare_models
from keel.evaluate.curves import Curves, curves_of
from keel.evaluate.fairness import FeatureFairness, audit_fairness, group_codes
from keel.evaluate.footprint import Footprint
from keel.evaluate.gates import GateResult, evaluate_gates
from keel.evaluate.importance import PermutationImportance, permutation_importance
from keel.evaluate.slices import SliceFinding, find_worst_slices, row_loss
from keel.evaluate.workshare import Runner, serially

if TYPE_CHECKING:
    from keel.evaluate.explain import Explainable

__all__ = [
    "Estimate",
    "Evaluation",
    "MetricSet",
    "evaluate_predictions",
    "global_explanations",
    "mean_abs_shap",
    "permutation_of",
    "with_importance",
]

FORMAT = "keel-evaluation/2"


@dataclass(frozen=True)
class Estimate:
    """A metric's value and its bootstrap percentile interval (None: undefined or no
    resamples)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class MetricSet:
    """The metrics of one set of rows (the whole test set or a slice)."""

    rows: int
    estimates: Mapping[str, Estimate]

    def values(self) -> dict[str, Any]:
        """``{"rows": n, "roc_auc": 0.93, ...}``: the point values."""
        return {"rows": self.rows} | {k: e.value for k, e in self.estimates.items()}

    def intervals(self) -> dict[str, list[float] | None]:
        return {
            k: None if e.ci_low is None or e.ci_high is None else [e.ci_low, e.ci_high]
            for k, e in self.estimates.items()
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any], intervals: Mapping[str, Any]) -> MetricSet:
        estimates = {}
        for name, value in values.items():
            if name == "rows":
                continue
            ci = intervals.get(name)
            estimates[name] = Estimate(value, *(ci if ci else (None, None)))
        return cls(int(values.get("rows", 0)), estimates)


@dataclass(frozen=True)
class Evaluation:
    """A model's evaluation on its test rows; see the module docstring."""

    task: str
    flavor: str
    classes: tuple[str, ...]
    threshold: float | None
    bootstrap: BootstrapSettings
    min_slice_size: int
    overall: MetricSet
    slices: Mapping[str, Mapping[str, MetricSet]] = field(default_factory=dict)
    gaps: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    calibration: Calibration | None = None
    residuals: Residuals | None = None
    worst_slices: tuple[SliceFinding, ...] = ()
    slices_tested: int = 0
    fairness: Mapping[str, FeatureFairness] = field(default_factory=dict)
    comparison: Comparison | None = None
    gates: tuple[GateResult, ...] = ()
    footprint: Footprint | None = None
    importance: Mapping[str, float] = field(default_factory=dict)  # mean |SHAP| per input
    permutation: PermutationImportance | None = None
    curves: Curves | None = None  # ROC and PR, thinned: what a model card draws

    @property
    def promoted(self) -> bool:
        """Whether every gate allows the alias move."""
        return all(g.passed for g in self.gates)

    def to_json(self) -> dict[str, Any]:
        """The stored form (sorted, plain JSON; None for undefined numbers, never NaN)."""
        slices: dict[str, Any] = {}
        for column, groups in self.slices.items():
            slices[column] = {v: m.values() for v, m in groups.items()}
            slices[column]["_gap"] = dict(self.gaps.get(column, {}))
        return {
            "format": FORMAT,
            "dataset": "test",
            "task": self.task,
            "flavor": self.flavor,
            "classes": list(self.classes),
            "threshold": self.threshold,
            "bootstrap": {
                "resamples": self.bootstrap.resamples,
                "seed": self.bootstrap.seed,
                "confidence": self.bootstrap.confidence,
            },
            "min_slice_size": self.min_slice_size,
            "metrics": self.overall.values(),
            "intervals": self.overall.intervals(),
            "slices": slices,
            "slice_intervals": {
                c: {v: m.intervals() for v, m in g.items()} for c, g in self.slices.items()
            },
            "calibration": None if self.calibration is None else self.calibration.to_json(),
            "residuals": None if self.residuals is None else self.residuals.to_json(),
            "worst_slices": [w.to_json() for w in self.worst_slices],
            "slices_tested": self.slices_tested,
            "fairness": {k: f.to_json() for k, f in self.fairness.items()},
            "comparison": None if self.comparison is None else self.comparison.to_json(),
            "gates": [g.to_json() for g in self.gates],
            "footprint": None if self.footprint is None else self.footprint.to_json(),
            "importance": dict(self.importance),
            "permutation_importance": None
            if self.permutation is None
            else self.permutation.to_json(),
            "curves": None if self.curves is None else self.curves.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        """Read a stored evaluation (an older one, without intervals, reads too)."""
        boot = data.get("bootstrap") or {"resamples": 0}
        intervals = data.get("slice_intervals") or {}
        slices = {
            column: {v: MetricSet.from_json(m, intervals.get(column, {}).get(v, {}))
                     for v, m in groups.items() if v != "_gap"}
            for column, groups in (data.get("slices") or {}).items()
        }  # fmt: skip
        gaps = {c: dict(g.get("_gap", {})) for c, g in (data.get("slices") or {}).items()}
        return cls(
            task=data["task"],
            flavor=data.get("flavor", ""),
            classes=tuple(data.get("classes") or ()),
            threshold=data.get("threshold"),
            bootstrap=BootstrapSettings(**boot),
            min_slice_size=int(data.get("min_slice_size", 0)),
            overall=MetricSet.from_json(data["metrics"], data.get("intervals") or {}),
            slices=slices,
            gaps=gaps,
            calibration=Calibration.from_json(c) if (c := data.get("calibration")) else None,
            residuals=Residuals.from_json(r) if (r := data.get("residuals")) else None,
            worst_slices=tuple(SliceFinding.from_json(w) for w in data.get("worst_slices", [])),
            slices_tested=int(data.get("slices_tested", 0)),
            fairness={
                k: FeatureFairness.from_json(f) for k, f in (data.get("fairness") or {}).items()
            },
            comparison=Comparison.from_json(c) if (c := data.get("comparison")) else None,
            gates=tuple(GateResult.from_json(g) for g in data.get("gates", [])),
            footprint=Footprint.from_json(f) if (f := data.get("footprint")) else None,
            importance=dict(data.get("importance") or {}),
            permutation=PermutationImportance.from_json(p)
            if (p := data.get("permutation_importance"))
            else None,
            curves=Curves.from_json(c) if (c := data.get("curves")) else None,
        )


def _metric_sets(
    task: str, kind: str, y: np.ndarray, prediction: np.ndarray,
    subsets: Sequence[np.ndarray | None], settings: BootstrapSettings, threshold: float,
    run: Runner[Block],
) -> list[MetricSet]:  # fmt: skip
    from keel.train.tasks import task_for

    spec = task_for(task)
    draws: list[dict[str, np.ndarray]] = [{} for _ in subsets]
    if settings.resamples > 0 and kind in ("binary", "multiclass", "regression"):
        draws = metric_draws(kind, y, prediction, subsets, settings, threshold=threshold, run=run)
    out = []
    for rows, drawn in zip(subsets, draws, strict=True):
        yy, pp = (y, prediction) if rows is None else (y[rows], prediction[rows])
        point = spec.metrics(yy, pp)
        estimates = {}
        for name, value in point.items():
            if (
                name == "rows"
                or not isinstance(value, int | float | None)
                or isinstance(value, bool)
            ):
                continue
            ci = percentile_interval(drawn[name], settings.confidence) if name in drawn else None
            low, high = ci if ci is not None and value is not None else (None, None)
            estimates[name] = Estimate(None if value is None else float(value), low, high)
        out.append(MetricSet(len(yy), estimates))
    return out


def _slice_sets(
    task: str, kind: str, y: np.ndarray, prediction: np.ndarray,
    columns: Mapping[str, Any], settings: BootstrapSettings, threshold: float,
    run: Runner[Block], min_size: int = 0,
) -> tuple[MetricSet, dict[str, dict[str, MetricSet]], dict[str, dict[str, float]]]:  # fmt: skip
    """Overall and per-slice metrics, and each column's gaps: the spread of a metric over its
    slices of at least ``min_size`` rows (smaller ones are reported but never gate, so a gap
    that a gate reads leaves them out too)."""
    from keel.train.tasks import task_for

    names: list[tuple[str, str]] = []
    subsets: list[np.ndarray | None] = [None]
    for column, values in columns.items():
        codes, labels = group_codes([values])
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(labels) + 1))
        for i, label in enumerate(labels):
            names.append((column, label))
            subsets.append(order[bounds[i] : bounds[i + 1]])
    overall, *sets = _metric_sets(task, kind, y, prediction, subsets, settings, threshold, run)
    slices: dict[str, dict[str, MetricSet]] = {c: {} for c in columns}
    for (column, label), metrics in zip(names, sets, strict=True):
        slices[column][label] = metrics
    gaps: dict[str, dict[str, float]] = {}
    for column, groups in slices.items():
        gaps[column] = {}
        for gap, metric in task_for(task).gaps.items():
            seen = [m.estimates[metric].value for m in groups.values()
                    if metric in m.estimates and m.rows >= min_size]  # fmt: skip
            defined = [v for v in seen if v is not None]
            gaps[column][gap] = float(max(defined) - min(defined)) if defined else 0.0
    return overall, slices, gaps


def evaluate_predictions(
    task: str,
    y: np.ndarray,
    prediction: np.ndarray,
    *,
    config: EvaluateConfig | None = None,
    classes: Sequence[str] = (),
    flavor: str = "",
    slices: Mapping[str, Any] | None = None,
    sensitive: Mapping[str, Any] | None = None,
    search: Mapping[str, Any] | None = None,
    champion: tuple[str, np.ndarray] | None = None,
    footprint: Footprint | None = None,
    run: Runner[Block] = serially,
) -> Evaluation:
    """Evaluate a model's test predictions and judge its gates.

    Args:
        task: The model's task (``binary``, ``multiclass``, ``regression`` or a plug-in's).
        y: Encoded labels (see ``keel.train.target``).
        prediction: The model's raw predictions (P(positive), class probabilities, values).
        config: keel.yaml's ``evaluate:`` section (default: its defaults).
        classes: Class names by code.
        flavor: The model's flavor, for the record.
        slices: Column -> values per row for the per-slice metrics (``evaluate.slices``).
        sensitive: Column -> values per row for the fairness audit (``data.sensitive``).
        search: Column -> values per row the worst-slice finder may slice on.
        champion: ``(NAME@VERSION, its raw predictions on the same rows)`` for
            ``challenger_vs_champion``; None when no version holds the alias yet.
        footprint: The model's size and single-row latency (``size.*``, ``latency.*`` gates).
        run: Runs the blocks of bootstrap resamples (default here, one after the other;
            ``Workshare.map`` shares them with other threads).

    Raises:
        ValueError: ``challenger_vs_champion.metric`` is not one of the task's metrics.
    """
    from keel.train.tasks import task_for

    cfg = config or EvaluateConfig()
    spec = task_for(task)
    kind = spec.kind
    threshold = float(getattr(spec, "threshold", 0.5)) if kind == "binary" else None
    boot = cfg.bootstrap
    settings = BootstrapSettings(boot.resamples, boot.seed, boot.confidence, AUTO)
    overall, per_slice, gaps = _slice_sets(
        task, kind, y, prediction, slices or {}, settings, threshold or 0.5, run,
        min_size=cfg.min_slice_size,
    )  # fmt: skip
    calibration = calibration_of(y, prediction) if kind != "regression" else None
    curves = curves_of(y, prediction, classes) if kind != "regression" else None
    residuals = residuals_of(y, prediction) if kind == "regression" else None
    worst: list[SliceFinding] = []
    tested = 0
    finder = cfg.slice_finder
    if finder.enabled and search:
        worst, tested = find_worst_slices(
            search, row_loss(kind, y, prediction), min_size=cfg.min_slice_size,
            bins=finder.bins, crossings=finder.crossings, min_effect=finder.min_effect,
            alpha=finder.alpha, top=finder.top,
        )  # fmt: skip
    fairness = {}
    if sensitive and kind != "regression":
        decided = (prediction >= (threshold or 0.5)).astype(np.int64) if kind == "binary" \
            else np.argmax(prediction, axis=1)  # fmt: skip
        fairness = audit_fairness(
            sensitive, y, decided, classes=classes,
            intersectional=cfg.fairness.intersectional,
            min_group_size=cfg.fairness.min_group_size,
        )  # fmt: skip
    evaluation = Evaluation(
        task, flavor, tuple(classes), threshold, settings, cfg.min_slice_size, overall,
        per_slice, gaps, calibration, residuals, tuple(worst), tested, fairness,
        footprint=footprint, curves=curves,
    )  # fmt: skip
    gates = evaluate_gates(evaluation, cfg.parsed_gates(), cfg.gates)
    comparison = _compare(task, y, prediction, cfg, champion, settings, threshold or 0.5, run)
    if comparison is not None:
        gates.append(_comparison_gate(comparison))
    return Evaluation(**{**evaluation.__dict__, "comparison": comparison, "gates": tuple(gates)})


def with_importance(
    evaluation: Evaluation,
    parts: Explainable,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    prediction: np.ndarray | None = None,
) -> Evaluation:
    """The evaluation with global importance added (:func:`global_explanations`)."""
    shap, permutation = global_explanations(parts, x, y, seed=seed, prediction=prediction)
    return Evaluation(**{**evaluation.__dict__, "importance": shap, "permutation": permutation})


def global_explanations(
    parts: Explainable,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    prediction: np.ndarray | None = None,
    concurrent: bool = False,
) -> tuple[dict[str, float], PermutationImportance | None]:
    """Mean |SHAP| (tree flavors: exact and cheap; a model-agnostic estimate costs tens of
    milliseconds a row, too much for the step) and permutation importance (every flavor) on
    the transformed test rows ``x`` and their labels ``y``.

    Args:
        prediction: The model's predictions on ``x``: the mean |SHAP| rows are stratified by
            it, and permutation importance reuses it for the unshuffled rows.
        concurrent: Run the two in two threads, LightGBM on one core each (for beside other
            work: the threads release the GIL, and one-thread calls never wait on OpenMP
            threads that another process has pushed off a core).
    """
    threads = 1 if concurrent else 0

    def permutation() -> PermutationImportance | None:
        return permutation_of(parts, x, y, seed=seed, prediction=prediction, threads=threads)

    if not concurrent:
        return mean_abs_shap(parts, x, prediction), permutation()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-importance") as pool:
        permuted = pool.submit(permutation)
        shap = mean_abs_shap(parts, x, prediction, threads=threads)
        return shap, permuted.result()


def permutation_of(
    parts: Explainable,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    prediction: np.ndarray | None = None,
    threads: int = 0,
) -> PermutationImportance | None:
    """Permutation importance on the transformed test rows (:mod:`keel.evaluate.importance`,
    its default rows and repeats); None without rows or where the headline metric is undefined
    (one class only). ``prediction`` (the model's on ``x``) is optional: a LightGBM model's
    sample is predicted from leaf masks anyway."""
    if not len(x):
        return None
    found = permutation_importance(parts, x, y, seed=seed, prediction=prediction,
                                   threads=threads)  # fmt: skip
    return found if np.isfinite(found.baseline) else None


def mean_abs_shap(
    parts: Explainable, x: np.ndarray, prediction: np.ndarray | None, *, threads: int = 0
) -> dict[str, float]:
    """Global importance as :func:`keel.evaluate.explain.global_importance` (mean |SHAP| per
    input column on its 300 stratified rows, largest first), for a LightGBM model by
    :mod:`keel.evaluate.treeshap` (the same exact values to ~1e-14; on the Adult example's
    203 trees 0.03 s to build its arrays from the model text and 0.15 s for the rows, against
    0.39 s of CPU for ``pred_contrib`` on one thread); other models through ``global_importance``.
    """
    tasks, finish = mean_abs_shap_tasks(parts, x, prediction, threads=threads)
    return finish(serially(tasks))


SHAP_BLOCK = 25  # TreeSHAP rows per task (~12 ms of CPU on the Adult example)


def mean_abs_shap_tasks(
    parts: Explainable, x: np.ndarray, prediction: np.ndarray | None, *, threads: int = 0
) -> tuple[list[Callable[[], Any]], Callable[[list[Any]], dict[str, float]]]:
    """:func:`mean_abs_shap` as tasks that any thread may run (TreeSHAP rows in blocks of
    ``SHAP_BLOCK``) and the function that makes the importance of their results."""
    from keel.evaluate.explain import (
        IMPORTANCE_ROWS,
        _importance_rows,
        fold_matrix,
        global_importance,
    )
    from keel.evaluate.treeshap import TreeShap

    booster = getattr(parts.model, "booster_", None)
    shap = None
    if parts.flavor == "lightgbm" and booster is not None and len(x):
        shap = TreeShap.of(booster, x.shape[1])
    if shap is None:  # another flavor, or a split kind TreeSHAP does not cover: pred_contrib

        def whole() -> dict[str, float]:
            return global_importance(parts, x, prediction=prediction, threads=threads)

        return [whole], lambda results: dict(results[0])
    rows = x[_importance_rows(len(x), IMPORTANCE_ROWS, prediction)]
    tasks: list[Callable[[], Any]] = [
        partial(shap, rows[i : i + SHAP_BLOCK]) for i in range(0, len(rows), SHAP_BLOCK)
    ]

    def finish(results: list[Any]) -> dict[str, float]:
        columns, fold = fold_matrix(parts.pipeline)
        raw = np.concatenate(results)
        mean = np.abs(raw[:, :, :-1] @ fold).mean(axis=0).sum(axis=0)  # as Explanation's
        return dict(sorted(zip(columns, mean.tolist(), strict=True), key=lambda item: -item[1]))

    return tasks, finish


def _compare(
    task: str, y: np.ndarray, prediction: np.ndarray, cfg: EvaluateConfig,
    champion: tuple[str, np.ndarray] | None, settings: BootstrapSettings, threshold: float,
    run: Runner[Block],
) -> Comparison | None:  # fmt: skip
    wanted = cfg.challenger_vs_champion
    if wanted is None:
        return None
    if champion is None:
        return Comparison(wanted.metric, "", None, None, None, None, None, None, wanted.require,
                          wanted.min_delta, wanted.alpha, True,
                          "no champion yet: nothing to compare with")  # fmt: skip
    if settings.resamples < 100:
        settings = BootstrapSettings(1000, settings.seed, settings.confidence, AUTO)
    ref, theirs = champion
    return compare_models(
        task, y, prediction, theirs, metric=wanted.metric, champion_ref=ref,
        require=wanted.require, min_delta=wanted.min_delta, alpha=wanted.alpha,
        settings=settings, threshold=threshold, run=run,
    )  # fmt: skip


def _comparison_gate(comparison: Comparison) -> GateResult:
    op = ">=" if comparison.require == "not_worse" else ">"
    return GateResult(
        gate=f"challenger_vs_champion {comparison.metric} delta {op} {comparison.min_delta:g} "
        f"({comparison.require}, paired bootstrap, alpha {comparison.alpha:g})",
        path=f"comparison.{comparison.metric}.delta",
        op=op,
        bound=comparison.min_delta,
        value=comparison.delta,
        passed=comparison.passed,
        reason=comparison.reason,
    )
