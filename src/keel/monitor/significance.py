"""Two-sample tests on binned counts, and Benjamini-Hochberg control across features.

Both tests compare a reference count vector with a current one over the same bins as a 2 x B
contingency table (the reference is a sample too, so this is a test of homogeneity, not a
goodness-of-fit against fixed proportions): Pearson's chi-square for numeric columns binned at
the reference deciles, the G-test (likelihood ratio) for categorical columns, where rare
categories make Pearson's statistic unstable. Bins empty on both sides are dropped; the degrees
of freedom are the remaining bins minus one. Cramér's V (``sqrt(chi2 / n)`` for two rows) is the
effect size beside the p-value: at large n every p-value goes to 0, an effect size does not.

The chi-square survival function is the regularised upper incomplete gamma function, computed
here (series / Lentz continued fraction, as in Numerical Recipes 6.2) so that monitoring does not
import SciPy; it agrees with ``scipy.stats.chi2.sf`` to ~1e-12 (tests/monitor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["TestResult", "benjamini_hochberg", "chi2_sf", "chi2_sf_array", "contingency_test"]

_EPS = 1e-15
_MAX_TERMS = 500


@dataclass(frozen=True, slots=True)
class TestResult:
    """A two-sample test on binned counts: statistic, degrees of freedom, p-value, Cramér's V."""

    test: Literal["chi2", "g"]
    statistic: float
    dof: int
    p_value: float
    cramers_v: float


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square with ``dof`` degrees of freedom (1 for x <= 0)."""
    if dof <= 0 or not math.isfinite(x):
        return 1.0 if dof <= 0 or x < 0 else 0.0
    if x <= 1e-300:  # P(X >= x) is 1 to double precision (and x / 2 would underflow)
        return 1.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x)."""
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:  # the series for P converges fast here
        term = total = 1.0 / a
        ap = a
        for _ in range(_MAX_TERMS):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300  # the continued fraction for Q, by the modified Lentz method
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi2_sf_array(x: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """:func:`chi2_sf` of each element (``x`` and integer ``dof`` of one shape), vectorised:
    the same series and continued fraction, every element stepped until it converges."""
    xs = np.asarray(x, dtype=np.float64)
    ks = np.asarray(dof)
    out = np.where((ks <= 0) | (xs < 0), 1.0, 0.0)
    live = (ks > 0) & np.isfinite(xs)
    out[live & (xs <= 1e-300)] = 1.0
    live &= xs > 1e-300
    if not live.any():
        return out
    a = ks[live] / 2.0
    z = xs[live] / 2.0
    lgamma = {value: math.lgamma(value) for value in np.unique(a).tolist()}
    log_prefix = -z + a * np.log(z) - np.array([lgamma[v] for v in a.tolist()])
    series = z < a + 1.0
    q = np.empty(a.shape)
    q[series] = _series_q(a[series], z[series], log_prefix[series])
    fraction = ~series
    q[fraction] = _fraction_q(a[fraction], z[fraction], log_prefix[fraction])
    out[live] = q
    return out


def _series_q(a: np.ndarray, x: np.ndarray, log_prefix: np.ndarray) -> np.ndarray:
    """1 - P(a, x) by its series, where it converges fast (x < a + 1)."""
    term = 1.0 / a
    total = term.copy()
    ap = a.copy()
    active = np.ones(a.shape, dtype=bool)
    for _ in range(_MAX_TERMS):
        if not active.any():
            break
        ap = np.where(active, ap + 1.0, ap)
        term = np.where(active, term * (x / ap), term)
        total = np.where(active, total + term, total)
        active &= ~(np.abs(term) < np.abs(total) * _EPS)
    q: np.ndarray = np.maximum(0.0, 1.0 - total * np.exp(log_prefix))
    return q


def _fraction_q(a: np.ndarray, x: np.ndarray, log_prefix: np.ndarray) -> np.ndarray:
    """Q(a, x) by the modified Lentz continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = np.full(a.shape, 1.0 / tiny)
    d = 1.0 / b
    h = d.copy()
    active = np.ones(a.shape, dtype=bool)
    for i in range(1, _MAX_TERMS):
        if not active.any():
            break
        an = -i * (i - a)  # converged elements step on too (kept as they were): no warnings
        with np.errstate(all="ignore"):
            d_new, c_new = _lentz_step(an, b + 2.0, d, c, tiny)
        delta = d_new * c_new
        b = np.where(active, b + 2.0, b)
        c = np.where(active, c_new, c)
        d = np.where(active, d_new, d)
        h = np.where(active, h * delta, h)
        active &= ~(np.abs(delta - 1.0) < _EPS)
    q: np.ndarray = np.minimum(1.0, np.exp(log_prefix) * h)
    return q


def _lentz_step(
    an: np.ndarray, b: np.ndarray, d: np.ndarray, c: np.ndarray, tiny: float
) -> tuple[np.ndarray, np.ndarray]:
    d = an * d + b
    d = np.where(np.abs(d) < tiny, tiny, d)
    c = b + an / c
    c = np.where(np.abs(c) < tiny, tiny, c)
    return 1.0 / d, c


def contingency_test(
    reference: np.ndarray, current: np.ndarray, test: Literal["chi2", "g"]
) -> TestResult | None:
    """Pearson chi-square or G-test of homogeneity between two count vectors.

    Returns None when either side is empty or fewer than two bins hold any count (nothing to
    compare).
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    n_ref, n_cur = float(ref.sum()), float(cur.sum())
    if n_ref <= 0 or n_cur <= 0 or ref.size < 2:
        return None
    total = n_ref + n_cur
    observed = np.stack([ref, cur])
    expected = np.outer([n_ref / total, n_cur / total], ref + cur)
    if test == "chi2":
        statistic = float(((observed - expected) ** 2 / expected).sum())
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(observed > 0, observed * np.log(observed / expected), 0.0)
        statistic = max(0.0, float(2.0 * terms.sum()))
    dof = int(ref.size - 1)
    return TestResult(
        test=test,
        statistic=statistic,
        dof=dof,
        p_value=chi2_sf(statistic, dof),
        cramers_v=math.sqrt(min(statistic / total, 1.0)),
    )


def benjamini_hochberg(p_values: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values and rejections at false discovery rate ``q`` (BH 1995).

    ``p_adj(i) = min_{j >= i} min(1, m p(j) / j)`` over the sorted p-values; rejecting where
    ``p_adj <= q`` is the step-up procedure. NaN p-values (no test) are left out of ``m`` and
    never rejected.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m:
        order = valid[np.argsort(p[valid], kind="stable")]
        ranked = p[order] * m / np.arange(1, m + 1)
        adjusted[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return adjusted, ~np.isnan(adjusted) & (adjusted <= q)
