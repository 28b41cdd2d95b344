"""Drift per feature from counts on the training bins: effect sizes, p-values, BH decisions.

The training statistics froze each numeric column's decile edges and each categorical column's
category list; current data is counted into the same bins (:mod:`keel.monitor.counts`), so every
measure comes from two count vectors and the training data is never re-read:

- **PSI** (natural log, empty bins floored at 1e-4 as Evidently does), **Jensen-Shannon
  distance** (base 2, in [0, 1]) on those bins; **Wasserstein-1** over the reference standard
  deviation for numeric columns, integrated between the reference percentiles (the 1% tails
  are left out).
- A **test of homogeneity** on the same bins: Pearson chi-square for numeric columns, the G-test
  for categorical ones, with its p-value and Cramér's V (:mod:`keel.monitor.significance`).
- **Benjamini-Hochberg** across the features of a window: a feature drifts only when its
  adjusted p-value is at most ``fdr`` *and* its effect (PSI by default; per feature in
  keel.yaml) reaches ``alert`` (``warn``: moderate). At large n every p-value goes to 0, so the
  effect size decides; on small windows noise passes the effect thresholds, so the test does.
- With fewer rows than ``min_rows`` every verdict is ``not_enough_data``: never drift or stable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from keel.errors import DataValidationError
from keel.monitor.counts import (
    Binning,
    PaneCounts,
    binning_of,
    booleans,
    count_panes,
    strings,
)
from keel.monitor.significance import benjamini_hochberg, contingency_test
from keel.validate.shift import EPSILON, jensen_shannon, psi

if TYPE_CHECKING:
    from keel.data.reader import CsvFile
    from keel.validate.coerce import Coercer

__all__ = [
    "EPSILON",
    "ColumnDrift",
    "Limits",
    "Verdict",
    "column_drift",
    "compute_drift",
    "decide",
    "not_comparable",
    "prepare_columns",
    "psi",
    "wasserstein_fine",
]

BATCH_ROWS = 1 << 18  # rows read from a file at a time
Verdict = Literal["stable", "moderate", "drift", "not_enough_data", "not_comparable"]
Metric = Literal["psi", "js", "wasserstein"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Which effect decides a feature's verdict and its levels; ``ignore`` skips the feature."""

    metric: Metric = "psi"
    warn: float = 0.1
    alert: float = 0.25
    ignore: bool = False


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One feature (or the output) in one window."""

    column: str
    kind: str
    rows: int
    psi: float
    js: float
    wasserstein: float | None
    test: str | None
    statistic: float | None
    p_value: float | None
    cramers_v: float | None
    limits: Limits
    p_adjusted: float | None = None
    verdict: Verdict = "not_enough_data"
    invalid: int = 0
    reason: str | None = None  # why a column is not_comparable (``hashed``)

    @property
    def effect(self) -> float | None:
        """The value of the deciding metric."""
        return {"psi": self.psi, "js": self.js, "wasserstein": self.wasserstein}[self.limits.metric]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded."""
        return {
            "column": self.column,
            "kind": self.kind,
            "psi": _round(self.psi),
            "js": _round(self.js),
            "wasserstein": _round(self.wasserstein),
            "test": self.test,
            "statistic": _round(self.statistic),
            "p_value": _p(self.p_value),
            "p_adjusted": _p(self.p_adjusted),
            "cramers_v": _round(self.cramers_v),
            "metric": self.limits.metric,
            "warn": self.limits.warn,
            "alert": self.limits.alert,
            "verdict": self.verdict,
            "invalid": self.invalid,
            "reason": self.reason,
        }


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _p(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def wasserstein_fine(binning: Binning, counts: np.ndarray) -> float | None:
    """W1 over the reference std, between the reference percentiles, from fine-grid counts."""
    if binning.fine is None or binning.fine_cdf is None or binning.fine.size < 2:
        return None
    total = counts.sum()
    if total <= 0:
        return None
    current = np.cumsum(counts)[:-1] / total  # P(X <= edge_i): bins are (e_{i-1}, e_i]
    gap = np.abs(binning.fine_cdf - current)
    distance = float(np.sum((gap[:-1] + gap[1:]) / 2 * np.diff(binning.fine)))
    if binning.std > 0:
        return distance / binning.std
    return 0.0 if distance == 0 else None


def not_comparable(column: str, reason: str, limits: Limits, rows: int = 0) -> ColumnDrift:
    """A column whose logged values cannot be compared with training (e.g. ``hashed``: the
    log holds keyed hashes of numbers): no effect, no test, verdict ``not_comparable``."""
    nan = math.nan
    return ColumnDrift(
        column, "numeric", rows, nan, nan, None, None, None, None, None, limits,
        verdict="not_comparable", reason=reason,
    )  # fmt: skip


def column_drift(
    binning: Binning,
    reference: np.ndarray,
    current: np.ndarray,
    fine: np.ndarray | None,
    limits: Limits,
    invalid: int = 0,
) -> ColumnDrift:
    """Effect sizes and the test of one column (verdict left to :func:`decide`)."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    result = contingency_test(ref, cur, "chi2" if binning.kind == "numeric" else "g")
    empty = not cur.sum() > 0  # no value: no distribution to compare (not PSI 9 from smoothing)
    return ColumnDrift(
        column=binning.column,
        kind=binning.kind,
        rows=int(cur.sum()),
        psi=math.nan if empty else psi(ref, cur),
        js=math.nan if empty else jensen_shannon(ref, cur),
        wasserstein=None if fine is None else wasserstein_fine(binning, fine),
        test=None if result is None else result.test,
        statistic=None if result is None else result.statistic,
        p_value=None if result is None else result.p_value,
        cramers_v=None if result is None else result.cramers_v,
        limits=limits,
        invalid=invalid,
    )


def decide(
    columns: list[ColumnDrift], rows: int, *, min_rows: int, fdr: float
) -> list[ColumnDrift]:
    """BH-adjusted p-values across ``columns`` and each one's verdict."""
    from dataclasses import replace

    if rows < min_rows:
        return [replace(c, verdict="not_enough_data") for c in columns]
    p = np.array([math.nan if c.p_value is None else c.p_value for c in columns])
    adjusted, significant = benjamini_hochberg(p, fdr)
    decided = []
    for column, p_adj, reject in zip(columns, adjusted.tolist(), significant.tolist(), strict=True):
        effect = column.effect
        verdict: Verdict = "stable"
        if reject and effect is not None:
            if effect >= column.limits.alert:
                verdict = "drift"
            elif effect >= column.limits.warn:
                verdict = "moderate"
        p_value = None if math.isnan(p_adj) else float(p_adj)
        decided.append(replace(column, p_adjusted=p_value, verdict=verdict))
    return decided


@dataclass(frozen=True)
class PreparedColumns:
    """The model's inputs that monitoring compares, with their binnings and limits."""

    binnings: dict[str, Binning]
    limits: dict[str, Limits]
    coercer: Coercer | None = field(default=None)


def prepare_columns(
    reference: Mapping[str, Any],
    columns: list[str],
    limits: Mapping[str, Limits] | None = None,
    default: Limits = Limits(),
    coercer: Coercer | None = None,
) -> PreparedColumns:
    """Binnings of the ``columns`` the reference describes (ignored features left out)."""
    chosen = dict(limits or {})
    names = [c for c in columns if c in reference["columns"] and not chosen.get(c, default).ignore]
    return PreparedColumns(
        binnings={n: binning_of(n, reference["columns"][n]) for n in names},
        limits={n: chosen.get(n, default) for n in names},
        coercer=None if coercer is None else coercer.subset(names),
    )


def coerced_columns(
    table: pa.Table, prepared: PreparedColumns, *, typed: bool = False
) -> tuple[dict[str, pa.ChunkedArray], dict[str, np.ndarray]]:
    """The inputs as serving reads them (booleans in the training spelling), and per column
    the rows whose value did not convert.

    ``typed``: the columns already hold the declared types (the log's JSON was read with
    them), so only the boolean spelling is applied: the coercion rules' kernels would import
    pandas, a second of start-up for nothing to convert.
    """
    import pyarrow.compute as pc

    names = list(prepared.binnings)
    table = table.select(names)
    invalid: dict[str, np.ndarray] = {}
    if prepared.coercer is None or typed:
        columns = {n: _as_kind(table.column(n), prepared.binnings[n]) for n in names}
        if prepared.coercer is not None:
            for rule in prepared.coercer.rules:
                if rule.type == "bool" and pa.types.is_boolean(table.column(rule.name).type):
                    columns[rule.name] = _spelled(table.column(rule.name), rule)
        return columns, invalid
    coerced = prepared.coercer.table(table)
    out = {}
    for rule, column in zip(prepared.coercer.rules, coerced.table.columns, strict=True):
        raw = table.column(rule.name)
        bad = booleans(pc.and_(pc.is_valid(raw), pc.is_null(column)))
        if bad.any():
            invalid[rule.name] = bad
        if rule.type == "bool":
            column = _spelled(column, rule)
        elif prepared.binnings[rule.name].kind == "numeric" and rule.type == "string":
            column = _as_numbers(column, rule.name)
        out[rule.name] = column
    return out, invalid


def _spelled(column: pa.ChunkedArray, rule: Any) -> pa.ChunkedArray:
    """Booleans as the training data spelled them (the reference counted those spellings)."""
    import pyarrow.compute as pc

    spelled = strings([rule.false_values[0], rule.true_values[0]])
    return pc.take(spelled, pc.cast(column, pa.int8()))


def _as_kind(column: pa.ChunkedArray, binning: Binning) -> pa.ChunkedArray:
    if binning.kind == "numeric":
        return _as_numbers(column, binning.column)
    if pa.types.is_boolean(column.type):
        return column.cast(pa.string())  # "true"/"false", as training statistics spell them
    return column


def _as_numbers(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    try:
        return column.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        msg = f"column '{name}' cannot be read as numeric like the training data ({exc})."
        raise DataValidationError(msg, field=name) from exc


def compute_drift(
    reference: dict[str, Any],
    current: pa.Table | CsvFile | str | Path,
    *,
    columns: list[str],
    warn: float = 0.1,
    alert: float = 0.25,
    min_rows: int = 100,
    fdr: float = 0.05,
    limits: Mapping[str, Limits] | None = None,
    coercer: Coercer | None = None,
) -> dict[str, Any]:
    """Drift per column of a table or file (read in batches) against training statistics.

    Args:
        reference: Training statistics (with frozen bins).
        current: The data to compare (a table, or a Parquet or CSV file read in batches:
            bounded memory whatever its size).
        columns: Columns to check (the model's inputs).
        warn: PSI at or above which a significant column is ``moderate``.
        alert: PSI at or above which a significant column has ``drift``.
        min_rows: Below this many rows every verdict is ``not_enough_data``.
        fdr: Benjamini-Hochberg false discovery rate across columns.
        limits: Per-column metric and levels (override ``warn``/``alert``).
        coercer: The model's coercion rules: values are read as serving reads them, and values
            that do not convert are counted per column (``invalid``).

    Returns:
        ``{"rows", "reference_rows", "verdict", "drifted_columns", "missing_columns",
        "thresholds", "columns": [ColumnDrift.to_dict(), ...]}``, columns by PSI, largest first.

    Raises:
        DataValidationError: The data has rows but lacks some of ``columns`` (lists what was
            expected and what was found).
    """
    # the data layer's readers are imported for files only: the log needs none of them
    from keel.data.files import open_data, retyped
    from keel.data.reader import CsvFile

    opened = current if isinstance(current, pa.Table | CsvFile) else open_data(Path(current))
    names = list(pq_names(opened))
    missing = [c for c in columns if c not in names]
    if missing and names:
        raise DataValidationError(
            f"{'none' if len(missing) == len(columns) else 'only some'} of the model's input "
            f"columns are in the data: missing {missing}; found {names[:20]}. Expected "
            f"{columns}. Check the file's delimiter and header, or pass the right file.",
            field=missing[0],
        )
    prepared = prepare_columns(
        reference, [c for c in columns if c in names], limits, Limits("psi", warn, alert), coercer
    )
    counts = retyped(opened, lambda: _count_file(opened, prepared))
    drifts = [
        column_drift(
            prepared.binnings[n],
            np.asarray(reference["columns"][n]["counts"]),
            counts.columns.get(n, np.zeros(prepared.binnings[n].bins)),
            counts.fine.get(n),
            prepared.limits[n],
            counts.invalid.get(n, 0),
        )
        for n in prepared.binnings
    ]
    decided = decide(drifts, counts.rows, min_rows=min_rows, fdr=fdr)
    return summary(decided, counts.rows, min_rows) | {
        "reference_rows": reference["rows"],
        "missing_columns": missing,
        "thresholds": {"warn": warn, "alert": alert, "min_rows": min_rows, "fdr": fdr},
    }


def summary(columns: list[ColumnDrift], rows: int, min_rows: int) -> dict[str, Any]:
    """``rows``, ``verdict``, ``drifted_columns`` and ``columns`` (by PSI, largest first)."""
    ordered = sorted(columns, key=lambda c: -c.psi)
    drifted = [c.column for c in ordered if c.verdict == "drift"]
    verdict: Verdict = "drift" if drifted else "stable"
    if rows < min_rows:
        verdict = "not_enough_data"
    return {
        "rows": rows,
        "verdict": verdict,
        "drifted_columns": drifted,
        "columns": [c.to_dict() for c in ordered],
    }


def pq_names(opened: pa.Table | Path | CsvFile) -> list[str]:
    """Column names of an opened table, Parquet file or CSV."""
    if isinstance(opened, Path):
        import pyarrow.parquet as pq

        return list(pq.read_schema(opened).names)
    return list(opened.schema.names)


def _count_file(opened: pa.Table | Path | CsvFile, prepared: PreparedColumns) -> PaneCounts:
    panes: dict[int, PaneCounts] = {}
    for table in _tables(opened, list(prepared.binnings)):
        columns, invalid = coerced_columns(table, prepared)
        zeros = np.zeros(table.num_rows, dtype=np.int64)
        count_panes(
            panes, zeros, columns, prepared.binnings, times=zeros.astype(float), invalid=invalid
        )
    return panes.get(0, PaneCounts())


def _tables(opened: pa.Table | Path | CsvFile, names: list[str]) -> Iterator[pa.Table]:
    from keel.data.files import read_batches

    for table in read_batches(opened, names or None, BATCH_ROWS):
        if table.num_rows:
            yield table
