"""Drift of every window at once: effect sizes, tests and BH decisions as array operations.

A monitoring report judges each feature in each window (:mod:`keel.monitor.drift` defines the
measures on one count vector). Here the windows' counts of a feature are one ``(windows, bins)``
matrix, so PSI, Jensen-Shannon, Wasserstein-1, the test of homogeneity (chi-square or G) with
its p-value (:func:`keel.monitor.significance.chi2_sf_array`) and Cramér's V come out for all
windows in a handful of NumPy operations, and Benjamini-Hochberg runs across the features of
every window at once (a row-wise sort). The values equal the per-window functions' to 1e-12
(tests/monitor/test_windowed.py keeps that per-window reference and compares on Adult).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keel.monitor.counts import Binning
from keel.monitor.drift import ColumnDrift, Limits
from keel.monitor.significance import chi2_sf_array
from keel.validate.shift import EPSILON

__all__ = ["ColumnCounts", "judge_columns"]


def _shares(counts: np.ndarray) -> np.ndarray:
    """Each row over its total (a total of 0 divides by 1, as :func:`keel.validate.shift.psi`)."""
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shares: np.ndarray = counts / totals
    return shares


def _psi(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    p = reference / max(reference.sum(), 1)
    q = _shares(current)
    p = np.where(p == 0, EPSILON, p)[None, :]
    q = np.where(q == 0, EPSILON, q)
    psi: np.ndarray = np.sum((q - p) * np.log(q / p), axis=1)
    return psi


def _js(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    p = (reference / max(reference.sum(), 1))[None, :]
    q = _shares(current)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    js: np.ndarray = np.sqrt(np.maximum(0.5 * (kl_p.sum(axis=1) + kl_q.sum(axis=1)), 0.0))
    return js


def _wasserstein(binning: Binning, fine: np.ndarray | None) -> list[float | None]:
    """W1 over the reference std per window (None where a window has no value)."""
    if fine is None or binning.fine is None or binning.fine_cdf is None or binning.fine.size < 2:
        return [None] * (0 if fine is None else len(fine))
    totals = fine.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        current = np.cumsum(fine, axis=1)[:, :-1] / totals[:, None]
    gap = np.abs(binning.fine_cdf[None, :] - current)
    distance = np.sum((gap[:, :-1] + gap[:, 1:]) / 2 * np.diff(binning.fine)[None, :], axis=1)
    out: list[float | None] = []
    for total, value in zip(totals.tolist(), distance.tolist(), strict=True):
        if total <= 0:
            out.append(None)
        elif binning.std > 0:
            out.append(value / binning.std)
        else:
            out.append(0.0 if value == 0 else None)
    return out


def _tests(
    reference: np.ndarray, current: np.ndarray, test: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Statistic, degrees of freedom, Cramér's V per window and whether the test applies
    (bins empty on both sides dropped, as :func:`keel.monitor.significance.contingency_test`)."""
    ref = np.broadcast_to(reference[None, :], current.shape)
    pooled = ref + current
    keep = pooled > 0
    n_ref = float(reference.sum())
    n_cur = current.sum(axis=1)
    dof = keep.sum(axis=1) - 1
    usable = (n_ref > 0) & (n_cur > 0) & (dof >= 1)
    total = n_ref + n_cur
    safe = np.where(usable, total, 1.0)[:, None]
    expected_ref = n_ref / safe * pooled
    expected_cur = n_cur[:, None] / safe * pooled
    with np.errstate(divide="ignore", invalid="ignore"):
        if test == "chi2":
            terms = np.where(keep, (ref - expected_ref) ** 2 / expected_ref, 0.0)
            terms += np.where(keep, (current - expected_cur) ** 2 / expected_cur, 0.0)
            statistic = terms.sum(axis=1)
        else:
            terms = np.where(keep & (ref > 0), ref * np.log(ref / expected_ref), 0.0)
            terms += np.where(keep & (current > 0), current * np.log(current / expected_cur), 0.0)
            statistic = np.maximum(0.0, 2.0 * terms.sum(axis=1))
    statistic = np.where(usable, statistic, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        cramers_v = np.sqrt(np.minimum(statistic / np.where(usable, total, 1.0), 1.0))
    return statistic, dof, cramers_v, usable


@dataclass(frozen=True)
class ColumnCounts:
    """One column's counts in every window: ``current`` is (windows, bins), ``fine`` (windows,
    fine bins) for numeric columns, ``invalid`` the values per window that did not convert."""

    binning: Binning
    reference: np.ndarray
    current: np.ndarray
    fine: np.ndarray | None
    limits: Limits
    invalid: Sequence[int] | None = None


@dataclass(frozen=True)
class _Measured:
    """A column's effects and test statistic per window (p-values come in one batch)."""

    rows: np.ndarray
    psi: np.ndarray
    js: np.ndarray
    wasserstein: list[float | None]
    statistic: np.ndarray
    dof: np.ndarray
    cramers_v: np.ndarray
    tested: np.ndarray


def _measure(column: ColumnCounts, windows: int) -> _Measured:
    ref = np.asarray(column.reference, dtype=np.float64)
    cur = np.asarray(column.current, dtype=np.float64).reshape(windows, ref.size)
    rows = cur.sum(axis=1)
    empty = ~(rows > 0)
    test = "chi2" if column.binning.kind == "numeric" else "g"
    statistic, dof, cramers_v, tested = _tests(ref, cur, test)
    fine = None if column.fine is None else np.asarray(column.fine, dtype=np.float64)
    w1 = _wasserstein(column.binning, fine) or [None] * windows
    return _Measured(
        rows=rows,
        psi=np.where(empty, np.nan, _psi(ref, cur)),
        js=np.where(empty, np.nan, _js(ref, cur)),
        wasserstein=w1,
        statistic=statistic,
        dof=dof,
        cramers_v=cramers_v,
        tested=tested,
    )


def judge_columns(
    columns: Sequence[ColumnCounts], rows: Sequence[int], *, min_rows: int, fdr: float
) -> list[list[ColumnDrift]]:
    """Every column in every window, decided: per window (``rows`` each) the columns of
    :func:`keel.monitor.drift.column_drift` with :func:`keel.monitor.drift.decide`'s BH
    p-values and verdicts, in the order of ``columns``."""
    windows = len(rows)
    measured = [_measure(column, windows) for column in columns]
    if not measured:
        return [[] for _ in range(windows)]
    statistic = np.stack([m.statistic for m in measured], axis=1)  # (windows, columns)
    tested = np.stack([m.tested for m in measured], axis=1)
    dof = np.stack([m.dof for m in measured], axis=1)
    p = chi2_sf_array(np.where(tested, statistic, 0.0), np.where(tested, dof, 1))
    p = np.where(tested, p, np.nan)
    enough = np.asarray(rows, dtype=np.int64)[:, None] >= min_rows
    adjusted = np.where(enough, _adjusted(p), np.nan)
    significant = enough & ~np.isnan(adjusted) & (adjusted <= fdr)
    verdicts = np.empty(statistic.shape, dtype=object)
    for f, (column, m) in enumerate(zip(columns, measured, strict=True)):
        effect = _effect(column.limits, m)
        alert = significant[:, f] & (effect >= column.limits.alert)
        warn = significant[:, f] & ~alert & (effect >= column.limits.warn)
        verdicts[:, f] = np.where(alert, "drift", np.where(warn, "moderate", "stable"))
    verdicts[~enough[:, 0], :] = "not_enough_data"
    built = [
        _drifts(column, m, p[:, f], adjusted[:, f], verdicts[:, f])
        for f, (column, m) in enumerate(zip(columns, measured, strict=True))
    ]
    return [list(window) for window in zip(*built, strict=True)]


def _effect(limits: Limits, measured: _Measured) -> np.ndarray:
    """The deciding metric per window (NaN where there is none: never drift)."""
    if limits.metric == "psi":
        return measured.psi
    if limits.metric == "js":
        return measured.js
    return np.array([np.nan if v is None else v for v in measured.wasserstein], dtype=np.float64)


def _drifts(
    column: ColumnCounts,
    m: _Measured,
    p_value: np.ndarray,
    adjusted: np.ndarray,
    verdicts: np.ndarray,
) -> list[ColumnDrift]:
    """The column in each window (values as Python numbers, read off once per column)."""
    name, kind = column.binning.column, column.binning.kind
    test = "chi2" if kind == "numeric" else "g"
    windows = len(m.rows)
    invalid = [0] * windows if column.invalid is None else [int(i) for i in column.invalid]
    out = []
    for rows, psi, js, w1, tested, statistic, p, v, p_adj, verdict, bad in zip(
        m.rows.tolist(), m.psi.tolist(), m.js.tolist(), m.wasserstein, m.tested.tolist(),
        m.statistic.tolist(), p_value.tolist(), m.cramers_v.tolist(), adjusted.tolist(),
        verdicts.tolist(), invalid, strict=True,
    ):  # fmt: skip
        out.append(
            ColumnDrift(
                column=name,
                kind=kind,
                rows=int(rows),
                psi=psi,
                js=js,
                wasserstein=w1,
                test=test if tested else None,
                statistic=statistic if tested else None,
                p_value=p if tested else None,
                cramers_v=v if tested else None,
                limits=column.limits,
                p_adjusted=None if math.isnan(p_adj) else p_adj,
                verdict=verdict,
                invalid=bad,
            )
        )
    return out


def _adjusted(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values of each row (NaN: no test, left out of ``m``), as
    :func:`keel.monitor.significance.benjamini_hochberg` per row."""
    features = p.shape[1]
    adjusted = np.full(p.shape, np.nan)
    if not features:
        return adjusted
    m = np.sum(~np.isnan(p), axis=1)
    order = np.argsort(p, axis=1, kind="stable")  # NaN last
    ranked_p = np.take_along_axis(p, order, axis=1)
    rank = np.arange(1, features + 1)[None, :]
    ranked = ranked_p * m[:, None] / rank
    ranked = np.where(rank <= m[:, None], ranked, np.inf)
    running = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    values = np.where(rank <= m[:, None], np.minimum(running, 1.0), np.nan)
    np.put_along_axis(adjusted, order, values, axis=1)
    return adjusted
