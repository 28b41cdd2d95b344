"""Distribution shift as effect sizes on count vectors and quantiles, gated by sample size.

Three distances, all computed from statistics (never from raw rows of the reference):

- **PSI** on the reference's frozen bins: ``sum((q - p) * ln(q / p))`` with empty bins floored at
  1e-4 on both sides (Evidently's convention). Thresholds 0.1 / 0.25 by credit-scoring convention.
- **Jensen-Shannon distance in base 2** (range [0, 1]) on the same bins; no floor needed.
- **Wasserstein-1 divided by the reference standard deviation** from the two quantile functions on
  a rank grid (``W1 = integral |F_r^-1(u) - F_c^-1(u)| du``); 0.1 means a shift of a tenth of a
  reference standard deviation. Numeric columns only.

Raw p-values flag everything at large n, so a column is flagged only when an effect size passes
its threshold *and* PSI is above its own no-drift noise level, ``(1/N + 1/M) * chi2_{B-1}`` at
the 99th percentile (Yurdakul 2018). Below :func:`min_window` rows the noise alone can reach the
warning threshold, and the caller says so instead of flagging.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from keel.validate.sketches import column_quantiles

__all__ = [
    "EPSILON",
    "NOISE_QUANTILE",
    "Thresholds",
    "describe",
    "jensen_shannon",
    "min_window",
    "psi",
    "psi_noise",
    "quantile_grid",
    "shift_anomalies",
    "shift_metrics",
    "shift_severity",
    "thresholds",
    "wasserstein",
]

EPSILON = 1e-4
NOISE_QUANTILE = 0.99
_Z99 = 2.3263478740408408  # standard normal quantile at NOISE_QUANTILE
_RANKS = np.linspace(0.01, 0.99, 99)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Warning and error levels for the three distances (JS in base 2, W1 in reference stds)."""

    psi_warn: float = 0.1
    psi_error: float = 0.25
    js_warn: float = 0.1
    js_error: float = 0.2
    wasserstein_warn: float = 0.1
    wasserstein_error: float = 0.5


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population Stability Index of two count vectors over the same bins.

    Args:
        reference: Reference counts per bin.
        current: Current counts over the same bins.

    Returns:
        PSI (natural log); 0 when the proportions are equal.

    Example:
        >>> round(psi(np.array([50.0, 50.0]), np.array([60.0, 40.0])), 4)
        0.0405
    """
    p = reference / max(reference.sum(), 1)
    q = current / max(current.sum(), 1)
    p = np.where(p == 0, EPSILON, p)
    q = np.where(q == 0, EPSILON, q)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (0 identical, 1 disjoint) of two count vectors."""
    p = reference / max(reference.sum(), 1)
    q = current / max(current.sum(), 1)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(math.sqrt(max(0.5 * float(kl_p.sum() + kl_q.sum()), 0.0)))


def wasserstein(reference: np.ndarray, current: np.ndarray, scale: float) -> float:
    """Wasserstein-1 from two quantile functions on the same uniform rank grid, over ``scale``.

    Args:
        reference: Reference quantiles at evenly spaced ranks.
        current: Current quantiles at the same ranks.
        scale: The reference standard deviation; 0 gives ``inf`` unless the quantiles agree.
    """
    distance = float(np.mean(np.abs(np.asarray(current) - np.asarray(reference))))
    if scale > 0:
        return distance / scale
    return 0.0 if distance == 0 else math.inf


def psi_noise(reference_rows: int, current_rows: int, bins: int) -> float:
    """PSI that sampling noise alone reaches with 1% chance when nothing drifted."""
    if reference_rows <= 0 or current_rows <= 0:
        return math.inf
    factor = 1 / reference_rows + 1 / current_rows
    return float(factor * _chi2_quantile(bins))


def min_window(reference_rows: int, bins: int, threshold: float) -> int | None:
    """Fewest current rows whose PSI noise stays under ``threshold``; None if none does."""
    per_row = threshold / _chi2_quantile(bins) - 1 / reference_rows
    return None if per_row <= 0 else math.ceil(1 / per_row)


def _chi2_quantile(bins: int) -> float:
    """The 99th percentile of chi-square with ``bins - 1`` degrees of freedom (Wilson-Hilferty)."""
    k = max(bins - 1, 1)
    return float(k * (1 - 2 / (9 * k) + _Z99 * math.sqrt(2 / (9 * k))) ** 3)


def quantile_grid(column: dict[str, Any], ranks: np.ndarray = _RANKS) -> np.ndarray | None:
    """Quantiles of a numeric column's statistics at ``ranks`` (KLL sketch or stored quantiles).

    Returns None when the column has no finite values.
    """
    values = np.asarray(column_quantiles(column, ranks), dtype=np.float64)
    return values if np.isfinite(values).all() else None


def shift_metrics(reference: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """PSI, JS and (numeric) normalised W1 between two columns' statistics on the same bins.

    Args:
        reference: The reference column's statistics (its bins are frozen).
        current: The current column's statistics computed with ``reference=`` those bins.

    Returns:
        ``{"psi", "js", "wasserstein" (or None), "bins", "noise"}``.
    """
    ref_counts = np.asarray(reference["counts"], dtype=np.float64)
    cur_counts = np.asarray(current["counts"], dtype=np.float64)
    metrics: dict[str, Any] = {
        "psi": round(psi(ref_counts, cur_counts), 6),
        "js": round(jensen_shannon(ref_counts, cur_counts), 6),
        "wasserstein": None,
        "bins": len(ref_counts),
        "noise": round(psi_noise(int(ref_counts.sum()), int(cur_counts.sum()), len(ref_counts)), 6),
    }
    if reference.get("kind") == "numeric" and current.get("kind") == "numeric":
        ref_q, cur_q = quantile_grid(reference), quantile_grid(current)
        if ref_q is not None and cur_q is not None:
            value = wasserstein(ref_q, cur_q, float(reference.get("std") or 0.0))
            metrics["wasserstein"] = round(value, 6) if math.isfinite(value) else None
    return metrics


def shift_severity(
    metrics: dict[str, Any], limits: Thresholds
) -> Literal["error", "warning"] | None:
    """``error``, ``warning`` or None: an effect over its threshold and PSI above the noise."""
    if metrics["psi"] <= metrics["noise"]:
        return None
    pairs = [
        (metrics["psi"], limits.psi_warn, limits.psi_error),
        (metrics["js"], limits.js_warn, limits.js_error),
    ]
    if metrics["wasserstein"] is not None:
        pairs.append((metrics["wasserstein"], limits.wasserstein_warn, limits.wasserstein_error))
    if any(value >= error for value, _, error in pairs):
        return "error"
    if any(value >= warn for value, warn, _ in pairs):
        return "warning"
    return None


def thresholds(column: Any) -> Thresholds:
    """The thresholds a schema column sets (``psi_warn``, ``psi_alert``, ...), else defaults."""
    base = Thresholds()
    if column is None:
        return base

    def pick(*names: str, default: float) -> float:
        for attr in names:
            value = getattr(column, attr, None)
            if isinstance(value, int | float):
                return float(value)
        return default

    return Thresholds(
        psi_warn=pick("psi_warn", default=base.psi_warn),
        psi_error=pick("psi_error", "psi_alert", default=base.psi_error),
        js_warn=pick("js_warn", default=base.js_warn),
        js_error=pick("js_error", "js_alert", default=base.js_error),
        wasserstein_warn=pick("wasserstein_warn", default=base.wasserstein_warn),
        wasserstein_error=pick(
            "wasserstein_error", "wasserstein_alert", default=base.wasserstein_error
        ),
    )


def shift_anomalies(
    current: dict[str, Any],
    reference: dict[str, Any],
    schema: Any,
    target: str | None,
    name: str,
    notes: list[str],
    metrics_out: dict[str, dict[str, Any]] | None = None,
    nulls_reported: frozenset[str] = frozenset(),
) -> list[Any]:
    """``distribution_shift`` per column on the frozen bins; ``label_shift`` for a class target.

    A numeric target with many values (regression) is reported as ``distribution_shift``:
    label shift, a change of the class priors, is a classification notion.

    Columns whose role is timestamp, entity or pii are skipped (their values move by nature);
    an ignored column (keel.yaml's data.drop: the model never reads it) is measured for the
    report's charts but not reported; one constant in the reference (the model cannot have
    learned from it) is at most a warning. With fewer rows than :func:`min_window` nothing is
    flagged and a note says so.

    Args:
        current: Statistics of the data, computed on the reference's bins.
        reference: The reference statistics.
        schema: The :class:`~keel.validate.schema.Schema` (roles and thresholds).
        target: The label column, reported as ``label_shift``.
        name: How to call the data in messages.
        notes: Receives a sentence when the data is too small to judge.
        metrics_out: Receives each compared column's metrics.
        nulls_reported: Columns already flagged for their null fraction: their shift is
            measured on the present values only, so one null spike is not reported twice.

    Returns:
        The anomalies.
    """
    from keel.validate.anomalies import UNCHECKED_ROLES, Anomaly, severity_of
    from keel.validate.labels import is_classes, label_shift

    found: list[Any] = []
    small: list[str] = []
    for col_name, cur in current["columns"].items():
        ref = reference["columns"].get(col_name)
        column = schema.columns.get(col_name)
        if ref is None or column is None or column.role in UNCHECKED_ROLES:
            continue
        same_kind = (ref.get("kind") == "numeric") == (cur.get("kind") == "numeric")
        if not same_kind or len(ref["counts"]) != len(cur["counts"]) or not sum(ref["counts"]):
            continue
        if col_name in nulls_reported:
            ref, cur = _present(ref), _present(cur)
            if not sum(cur["counts"]) or not sum(ref["counts"]):
                continue
        metrics = shift_metrics(ref, cur)
        limits = thresholds(column)
        window = min_window(int(reference["rows"]), metrics["bins"], limits.psi_warn)
        metrics["min_rows"] = window
        if metrics_out is not None:
            metrics_out[col_name] = metrics
        if column.role == "ignored":
            continue  # measured for the report, but the model never reads it
        if window is None or int(current["rows"]) < window:
            small.append(col_name)
            continue
        level = shift_severity(metrics, limits)
        if level is None:
            continue
        capped = int(ref.get("distinct", 2) or 0) <= 1
        if capped:
            level = "warning"
        if col_name == target and is_classes(ref):
            found.append(label_shift(col_name, ref, cur, metrics, level, name))
            continue
        if level == "error":
            level = severity_of(schema, "distribution_shift", level, col_name)
        fix = (  # the way on when the shift is expected (a later period, another population)
            "; if expected, give distribution_shift the severity warning in schema.yaml "
            "(severities: {distribution_shift: warning})"
            if level == "error"
            else ""
        )
        found.append(
            Anomaly(
                col_name,
                "distribution_shift",
                level,
                f"{name}: column '{col_name}' shifted from the reference: {describe(metrics)}"
                f"{' (constant in the reference: a warning only)' if capped else ''}{fix}.",
                {"metrics": metrics, "thresholds": asdict(limits)},
            )
        )
    if small:
        notes.append(
            f"{name}: {current['rows']} rows are too few to judge distribution shift of "
            f"{len(small)} columns ({', '.join(small[:5])}{', ...' if len(small) > 5 else ''}): "
            "sampling noise alone could pass the warning threshold. Validate a larger window."
        )
    return found


def _present(column: dict[str, Any]) -> dict[str, Any]:
    return {**column, "counts": list(column["counts"])[:-1]}  # the last bin counts nulls


def describe(metrics: dict[str, Any]) -> str:
    """``PSI 0.31, JS 0.21 (base 2), W1 0.68 reference std`` for messages."""
    text = f"PSI {metrics['psi']:.3f}, JS {metrics['js']:.3f} (base 2)"
    if metrics.get("wasserstein") is not None:
        text += f", W1 {metrics['wasserstein']:.3f} reference std"
    return text
