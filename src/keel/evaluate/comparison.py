"""Challenger against champion: both models scored on the same test rows, a paired bootstrap
of the difference in one metric (the same resamples for both, so what the rows share cancels).

``delta`` is challenger minus champion, oriented so that positive is better (for a loss such
as ``log_loss`` or ``rmse`` the sign is flipped). With ``require: not_worse`` the challenger is
refused when it is significantly worse than ``min_delta``: p = share of resampled deltas
>= min_delta, refused when p < alpha. With ``require: better`` it must be significantly
better: p = share of resampled deltas <= min_delta, accepted when p < alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from keel.evaluate.bootstrap import Block, BootstrapSettings, metric_draws, percentile_interval
from keel.evaluate.workshare import Runner, serially

__all__ = ["LOWER_IS_BETTER", "Comparison", "compare_models"]

LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})


@dataclass(frozen=True)
class Comparison:
    """The verdict of the paired test (values oriented: positive delta = challenger better)."""

    metric: str
    champion: str
    challenger_value: float | None
    champion_value: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    require: Literal["not_worse", "better"]
    min_delta: float
    alpha: float
    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(**data)


def compare_models(
    task: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    *,
    metric: str,
    champion_ref: str,
    require: Literal["not_worse", "better"] = "not_worse",
    min_delta: float = 0.0,
    alpha: float = 0.05,
    settings: BootstrapSettings = BootstrapSettings(),
    threshold: float = 0.5,
    run: Runner[Block] = serially,
) -> Comparison:
    """Paired bootstrap test of ``metric`` between two models' predictions on the same rows.

    Args:
        task: The model's task (``binary``, ``multiclass``, ``regression`` or a plug-in's).
        y: Encoded labels of the shared test rows.
        challenger: The new model's raw predictions; ``champion`` the current alias holder's.
        metric: A metric both models have (e.g. ``roc_auc``).
        champion_ref: ``NAME@VERSION`` of the champion, for the record.
        require: ``not_worse`` (refuse only when significantly worse) or ``better``.
        min_delta: The margin the oriented difference is tested against.
        alpha: The test's significance level.
        settings: The resamples (the same for both models).
        run: Runs blocks of resamples (:func:`keel.evaluate.bootstrap.metric_draws`).

    Raises:
        ValueError: ``metric`` is not one of the task's metrics (names them).
    """
    from keel.train.tasks import task_for

    spec = task_for(task)
    kind = spec.kind
    # the same resamples of the same rows for both models: the pairing
    order = np.argsort(challenger, kind="stable") if kind == "binary" else np.arange(len(y))
    (mine,) = metric_draws(kind, y, challenger, [None], settings, threshold=threshold,
                           order=order, run=run)  # fmt: skip
    (theirs,) = metric_draws(kind, y, champion, [None], settings, threshold=threshold,
                             order=order, run=run)  # fmt: skip
    if metric not in mine:
        msg = f"metric '{metric}' is not one of this task's metrics ({', '.join(sorted(mine))})"
        raise ValueError(msg)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    ours = spec.metrics(y, challenger).get(metric)
    best = spec.metrics(y, champion).get(metric)
    deltas = sign * (mine[metric] - theirs[metric])
    finite = deltas[np.isfinite(deltas)]
    point = None if ours is None or best is None else sign * (float(ours) - float(best))
    interval = percentile_interval(deltas, 1.0 - 2.0 * alpha)  # one-sided bounds at alpha
    if point is None or len(finite) == 0:
        why = f"{metric} is undefined for one of the models"
        return Comparison(metric, champion_ref, ours, best, point, None, None, None, require,
                          min_delta, alpha, False, why)  # fmt: skip
    if require == "not_worse":
        p = float(np.mean(finite >= min_delta))
        passed = p >= alpha
        verdict = "significantly worse" if not passed else "not significantly worse"
    else:
        p = float(np.mean(finite <= min_delta))
        passed = p < alpha
        verdict = "significantly better" if passed else "not significantly better"
    low, high = interval if interval is not None else (None, None)
    reason = (
        f"challenger {metric} {ours:.4f} vs champion {champion_ref} {best:.4f}: delta "
        f"{point:+.4f} (one-sided {1 - alpha:.0%} bounds {_fmt(low)}..{_fmt(high)}), "
        f"p={p:.3g}: {verdict} than min_delta {min_delta:g}"
    )
    return Comparison(metric, champion_ref, ours, best, point, low, high, p, require, min_delta,
                      alpha, passed, reason)  # fmt: skip


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"
