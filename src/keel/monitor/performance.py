"""Realised performance: stored labels joined to the logged predictions, per window.

:func:`join_labels` streams the prediction log once (:mod:`keel.monitor.labelled`, with the
version, role and time filter of a monitoring run; a monitoring run instead feeds a
:class:`LabelJoin` the blocks its drift reader parses, so the log is read once for both) and
joins every block to the live labels
(held as columns, :mod:`keel.monitor.label_table`), by request id and instance or by key columns
(a hash lookup built once, searched per block: no loop over rows); a label given by request id
wins over a key label for the same row. Each joined row keeps its pane (the window
unit of :class:`~keel.monitor.window.WindowSpec`, counted exactly as the drift report counts),
label, prediction, P(positive), version, role and request id. :func:`realised_performance` then
reads each window's metrics off its labelled rows, with percentile bootstrap intervals
(:mod:`keel.evaluate.bootstrap`): accuracy, precision, recall and ROC AUC for a binary
classifier, accuracy for a multiclass one, RMSE and MAE for regression. A window with fewer
labelled rows than ``monitor.min_rows`` says ``not_enough_labels`` and gives no metric.

Nothing is cached: windows are computed from the log and the labels at read time, so a label
that arrives late changes the window its prediction fell in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from keel.evaluate.bootstrap import (
    BootstrapSettings,
    percentile_interval,
    resample_counts,
    weighted_auc,
)
from keel.monitor.eventtime import event_times
from keel.monitor.feedback import LabelSpec
from keel.monitor.label_table import LabelTable
from keel.monitor.labelled import (
    LoggedRows,
    Lookup,
    canonical_value,
    read_logged,
)
from keel.monitor.window import LogFilter, LogRows, WindowSpec
from keel.store.feedback_store import LiveLabel
from keel.validate.arrays import from_numpy, numbers

__all__ = [
    "BOOTSTRAP_ROWS",
    "RESAMPLES",
    "Joined",
    "LabelJoin",
    "MetricInterval",
    "RealisedReport",
    "RealisedWindow",
    "bounded_resamples",
    "join_labels",
    "logged_rows",
    "metric_intervals",
    "normal_quantile",
    "realised_performance",
]

RESAMPLES = 500
BOOTSTRAP_ROWS = 5_000  # labelled rows past which intervals are normal approximations
_CELLS = 4_000_000  # resample counts held at once (resamples x rows): ~50 MB


@dataclass(frozen=True)
class MetricInterval:
    """A metric's value on the labelled rows and its bootstrap interval (None: undefined)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    method: str = "bootstrap"  # or "normal" (past BOOTSTRAP_ROWS labelled rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "value": _round(self.value),
            "low": _round(self.low),
            "high": _round(self.high),
            "method": self.method,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class Joined:
    """Logged rows that have a label, and the rows per pane of everything read."""

    pane: np.ndarray
    label: np.ndarray  # class names (object) or values (float64)
    prediction: np.ndarray
    probability: np.ndarray | None
    version: np.ndarray
    role: np.ndarray
    request_id: np.ndarray
    instance: np.ndarray
    pane_rows: Mapping[int, int]

    @property
    def rows(self) -> int:
        """Labelled rows."""
        return len(self.pane)

    def subset(self, rows: np.ndarray) -> Joined:
        """These labelled rows only (pane counts unchanged)."""
        return Joined(
            self.pane[rows],
            self.label[rows],
            self.prediction[rows],
            None if self.probability is None else self.probability[rows],
            self.version[rows],
            self.role[rows],
            self.request_id[rows],
            self.instance[rows],
            self.pane_rows,
        )


def join_labels(
    log_dir: Path,
    spec: LabelSpec,
    labels: Sequence[LiveLabel] | LabelTable,
    *,
    select: LogFilter = LogFilter(),
    window: WindowSpec = WindowSpec("all"),
    time_column: str | None = None,
    time_unit: str | None = None,
) -> Joined:
    """Stream the log once and join every selected row to its live label (if any).

    ``labels``: a :class:`~keel.monitor.label_table.LabelTable` (columns, what
    :func:`~keel.monitor.label_table.read_label_table` streams from the database), or label rows.

    ``time_column``: panes by that input's event time (``monitor.time_column``); a row whose
    event time cannot be parsed is in no pane and joins nothing; its numbers are unix times in
    ``time_unit`` (None: seconds)."""
    join = LabelJoin(spec, labels)
    keys = dict(join.keys)
    if time_column is not None:
        keys.setdefault(time_column, pa.string())
    for block in read_logged(
        log_dir,
        spec.model,
        select=select,
        keys=keys or None,
        prediction_type=join.prediction_type,
        binary=join.binary,
    ):
        times, timed = block.time, None
        if time_column is not None:
            times = event_times(block.keys.column(time_column), time_unit)
            timed = np.isfinite(times)
        join.add(block, window.pane_of(times, block.first_row), timed)
    return join.joined()


class LabelJoin:
    """Live labels joined to logged rows block by block, as they are read.

    :func:`join_labels` feeds it the label reader's blocks; a monitoring run feeds it the very
    blocks it counts drift from (:meth:`add_rows`, :func:`keel.monitor.report.monitor_log`), so
    the log is read once for drift and labels.
    """

    def __init__(self, spec: LabelSpec, labels: Sequence[LiveLabel] | LabelTable) -> None:
        self.spec = spec
        self.binary = spec.task == "binary"
        self.regression = spec.task == "regression"
        self.prediction_type = pa.float64() if self.regression else pa.string()
        self.table = labels if isinstance(labels, LabelTable) else LabelTable.of(labels, spec)
        self.by_key = self.table.by_key if spec.key else None
        self.keys: dict[str, pa.DataType] = dict(spec.key) if self.by_key is not None else {}
        self.parts: list[_Part] = []
        self.pane_rows: dict[int, int] = {}

    def add(self, block: LoggedRows, panes: np.ndarray, timed: np.ndarray | None = None) -> None:
        """One block of logged rows, each row's pane, and which rows have a time (None: all;
        the others are in no pane and join nothing)."""
        unique, counts = np.unique(panes if timed is None else panes[timed], return_counts=True)
        for pane, count in zip(unique.tolist(), counts.tolist(), strict=True):
            self.pane_rows[pane] = self.pane_rows.get(pane, 0) + count
        position, label = _matches(block, self.table.by_id, self.by_key, self.spec.key)
        if timed is not None:
            kept = timed[position]
            position, label = position[kept], label[kept]
        if position.size:
            self.parts.append(_Part(position, label, block, panes[position]))

    def add_rows(self, block: LogRows, panes: np.ndarray) -> None:
        """A drift reader's block (read with ``meta``) and each row's pane."""
        self.add(logged_rows(block, self.keys, self.prediction_type), panes)

    def joined(self) -> Joined:
        """Everything added so far, joined."""
        return _gather(self.parts, self.table, self.binary, self.regression, self.pane_rows)


def logged_rows(
    block: LogRows, keys: Mapping[str, pa.DataType], prediction_type: pa.DataType
) -> LoggedRows:
    """What the label join needs of a drift reader's block: request ids and instances,
    version, role, prediction, P(positive) and the key columns in their declared types."""
    if block.meta is None or block.instance is None:
        raise ValueError("the block was read without meta: read_log(meta=True)")
    prediction = block.prediction.combine_chunks()
    if prediction.type != prediction_type:
        prediction = prediction.cast(prediction_type, safe=False)
    return LoggedRows(
        first_row=0,
        request_id=block.meta["request_id"].combine_chunks(),
        instance=block.instance,
        time=block.time,
        version=block.meta["model_version"].combine_chunks(),
        role=block.meta["role"].combine_chunks(),
        prediction=prediction,
        probability=block.probability,
        keys=pa.table({name: _typed(block.inputs.column(name), t) for name, t in keys.items()}),
    )


def _typed(column: pa.ChunkedArray, data_type: pa.DataType) -> pa.Array:
    """A key column in its declared type; values read as text (mixed JSON types) canonical as
    the label reader's orjson path reads them (``"42"`` as 42.0, a non-number as null)."""
    values = column.combine_chunks()
    if values.type == data_type:
        return values
    holder = np.empty(len(values), dtype=object)
    holder[:] = [canonical_value(v, data_type) for v in values.to_pylist()]
    return pa.array(holder, type=data_type)


def _matches(
    block: LoggedRows, by_id: Lookup, by_key: Lookup | None, key: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the block that have a label, and that label's index (id labels win)."""
    position, label = by_id.find([block.request_id, from_numpy(block.instance.astype(np.int64))])
    if by_key is not None and block.keys.num_columns:
        more, more_labels = by_key.find([block.keys.column(n) for n in key])
        fresh = ~np.isin(more, position)  # a row labelled by request id keeps that label
        position = np.concatenate([position, more[fresh]])
        label = np.concatenate([label, more_labels[fresh]])
        order = np.argsort(position, kind="stable")
        position, label = position[order], label[order]
    return position, label


@dataclass(frozen=True)
class _Part:
    """A block's labelled rows: their positions, label indices and panes."""

    rows: np.ndarray
    labels: np.ndarray
    block: LoggedRows
    panes: np.ndarray


def _gather(
    parts: list[_Part],
    table: LabelTable,
    binary: bool,
    regression: bool,
    pane_rows: dict[int, int],
) -> Joined:
    def column(pick: Any, dtype: Any) -> np.ndarray:
        if not parts:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([np.asarray(pick(part), dtype=dtype) for part in parts])

    def text(array: pa.Array, rows: np.ndarray) -> np.ndarray:
        # one Python string per distinct value (a version, a role, a class), not one per row
        encoded = array.take(from_numpy(rows)).dictionary_encode()
        names = np.empty(len(encoded.dictionary) + 1, dtype=object)
        names[:-1] = encoded.dictionary.to_pylist()
        codes = numbers(encoded.indices, nulls="nan")
        return names[np.where(np.isfinite(codes), codes, -1).astype(np.int64)]

    labels = column(lambda part: part.labels, np.int64)
    if regression:
        prediction = column(
            lambda part: numbers(part.block.prediction.take(from_numpy(part.rows)), nulls="nan"),
            np.float64,
        )
    else:
        prediction = column(lambda part: text(part.block.prediction, part.rows), object)
    probability = None
    if binary:
        probability = column(lambda part: _probability(part.block, part.rows), np.float64)
    joined = Joined(
        pane=column(lambda part: part.panes, np.int64),
        label=table.take(labels),
        prediction=prediction,
        probability=probability,
        version=column(lambda part: text(part.block.version, part.rows), object),
        role=column(lambda part: text(part.block.role, part.rows), object),
        request_id=column(lambda part: text(part.block.request_id, part.rows), object),
        instance=column(lambda part: part.block.instance[part.rows], np.int64),
        pane_rows=pane_rows,
    )
    if regression:  # a label or prediction that is not a number joins nothing
        usable = np.isfinite(joined.label) & np.isfinite(joined.prediction)
        if not usable.all():
            return joined.subset(np.flatnonzero(usable))
    return joined


def _probability(block: LoggedRows, rows: np.ndarray) -> np.ndarray:
    if block.probability is None:
        return np.full(len(rows), np.nan)
    return np.asarray(block.probability[rows], dtype=np.float64)


def metric_intervals(
    task: str,
    classes: Sequence[str],
    joined: Joined,
    settings: BootstrapSettings = BootstrapSettings(resamples=RESAMPLES),
) -> dict[str, MetricInterval]:
    """The task's metrics on these labelled rows with percentile bootstrap intervals; past
    :data:`BOOTSTRAP_ROWS` rows, where the sampling distribution is close to normal and the
    bootstrap costs seconds, with normal-approximation intervals instead (Wilson for the
    proportions, Hanley-McNeil for ROC AUC, the delta method for RMSE and MAE)."""
    n = joined.rows
    if n == 0:
        return {}
    parts, read = _plan(task, classes, joined)
    draws: dict[str, list[np.ndarray]] = {}
    score = joined.probability if task == "binary" else None
    truth = None
    if score is not None:
        truth = (joined.label == classes[-1]).astype(np.int64)
        usable = bool(np.isfinite(score).all()) and 0 < int(truth.sum()) < n
        score = score if usable else None
    if n > BOOTSTRAP_ROWS:
        return _normal_intervals(task, parts, read, score, truth, settings.confidence)
    for counts in bounded_resamples(n, settings):
        for name, value in read((counts @ parts).astype(np.float64)).items():
            draws.setdefault(name, []).append(value)
        if score is not None and truth is not None:
            draws.setdefault("roc_auc", []).append(weighted_auc(counts, score, truth))
    point = read(parts.sum(axis=0, dtype=np.float64)[None, :])
    if score is not None and truth is not None:
        point["roc_auc"] = weighted_auc(np.ones((1, n), np.float32), score, truth)
    out = {}
    for name, value in point.items():
        finite = float(value[0]) if np.isfinite(value[0]) else None
        interval = percentile_interval(np.concatenate(draws[name]), settings.confidence)
        low, high = interval if interval is not None else (None, None)
        out[name] = MetricInterval(finite, low, high)
    return out


def _normal_intervals(
    task: str,
    parts: np.ndarray,
    read: Any,
    score: np.ndarray | None,
    truth: np.ndarray | None,
    confidence: float,
) -> dict[str, MetricInterval]:
    z = normal_quantile(0.5 + confidence / 2)
    sums = parts.sum(axis=0, dtype=np.float64)
    point = {name: float(v[0]) for name, v in read(sums[None, :]).items()}
    n = len(parts)
    out: dict[str, MetricInterval] = {}
    if task == "regression":
        squared, absolute = parts[:, 1].astype(np.float64), parts[:, 2].astype(np.float64)
        mse, spread = float(squared.mean()), z * float(squared.std(ddof=1)) / math.sqrt(n)
        out["rmse"] = MetricInterval(
            point["rmse"], math.sqrt(max(mse - spread, 0.0)), math.sqrt(mse + spread), "normal"
        )
        half = z * float(absolute.std(ddof=1)) / math.sqrt(n)
        out["mae"] = MetricInterval(
            point["mae"], point["mae"] - half, point["mae"] + half, "normal"
        )
        return out
    trials = {"accuracy": sums[0]}
    if task == "binary":
        trials |= {"precision": sums[3], "recall": sums[2]}
    for name, value in point.items():
        out[name] = _wilson(value, float(trials[name]), z)
    if score is not None and truth is not None:
        auc = float(weighted_auc(np.ones((1, n), np.float32), score, truth)[0])
        out["roc_auc"] = _hanley_mcneil(auc, int(truth.sum()), n - int(truth.sum()), z)
    return out


def _wilson(p: float, m: float, z: float) -> MetricInterval:
    """Wilson's score interval of a proportion ``p`` of ``m`` trials."""
    if m <= 0 or not math.isfinite(p):
        return MetricInterval(None, None, None, "normal")
    scale = 1 + z * z / m
    center = (p + z * z / (2 * m)) / scale
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / scale
    return MetricInterval(p, max(center - half, 0.0), min(center + half, 1.0), "normal")


def _hanley_mcneil(auc: float, positives: int, negatives: int, z: float) -> MetricInterval:
    """ROC AUC with Hanley and McNeil's (1982) standard error."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    half = z * math.sqrt(max(variance, 0.0))
    return MetricInterval(auc, max(auc - half, 0.0), min(auc + half, 1.0), "normal")


def normal_quantile(q: float) -> float:
    """The standard normal quantile (bisection on erfc: no SciPy)."""
    low, high = -10.0, 10.0
    for _ in range(80):
        mid = (low + high) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def bounded_resamples(n: int, settings: BootstrapSettings) -> Any:
    """:func:`resample_counts` in chunks small enough that one holds about 4M counts."""
    chunk = max(1, min(settings.chunk, _CELLS // max(n, 1)))
    return resample_counts(
        n, BootstrapSettings(settings.resamples, settings.seed, settings.confidence, chunk)
    )


def _plan(task: str, classes: Sequence[str], joined: Joined) -> tuple[np.ndarray, Any]:
    """Per-row components whose (count-weighted) sums give the metrics, and how to read them."""
    if task == "regression":
        error = joined.prediction.astype(np.float64) - joined.label.astype(np.float64)
        parts = np.column_stack([np.ones_like(error), error**2, np.abs(error)])

        def regression(s: np.ndarray) -> dict[str, np.ndarray]:
            return {"rmse": np.sqrt(s[:, 1] / s[:, 0]), "mae": s[:, 2] / s[:, 0]}

        return parts, regression
    hit = (joined.prediction == joined.label).astype(np.float64)
    if task != "binary":
        parts = np.column_stack([np.ones_like(hit), hit]).astype(np.float32)

        def multiclass(s: np.ndarray) -> dict[str, np.ndarray]:
            return {"accuracy": s[:, 1] / s[:, 0]}

        return parts, multiclass
    positive = classes[-1]
    truth = (joined.label == positive).astype(np.float64)
    predicted = (joined.prediction == positive).astype(np.float64)
    parts = np.column_stack([np.ones_like(hit), hit, truth, predicted, truth * predicted])

    def binary(s: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "accuracy": s[:, 1] / s[:, 0],
                "precision": np.where(s[:, 3] > 0, s[:, 4] / s[:, 3], np.nan),
                "recall": np.where(s[:, 2] > 0, s[:, 4] / s[:, 2], np.nan),
            }

    return parts.astype(np.float32), binary


@dataclass(frozen=True)
class RealisedWindow:
    """One window's realised performance: logged rows, labelled rows, metrics."""

    start: str
    end: str
    rows: int
    labelled: int
    status: Literal["ok", "not_enough_labels"]
    metrics: Mapping[str, MetricInterval] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "start": self.start,
            "end": self.end,
            "rows": self.rows,
            "labelled": self.labelled,
            "status": self.status,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }


@dataclass(frozen=True)
class RealisedReport:
    """Realised performance of a model's logged predictions, overall and per window."""

    model: str
    task: str
    labels: int
    min_rows: int
    confidence: float
    overall: RealisedWindow
    windows: tuple[RealisedWindow, ...]

    def window(self, start: str) -> RealisedWindow | None:
        """The window that starts at ``start`` (as the drift report names it)."""
        return next((w for w in self.windows if w.start == start), None)

    def summary(self) -> dict[str, Any]:
        """JSON-ready, the whole selection only (windows are listed with the drift report's)."""
        return {
            "model": self.model,
            "task": self.task,
            "labels": self.labels,
            "min_rows": self.min_rows,
            "confidence": self.confidence,
            **self.overall.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with every window."""
        return {**self.summary(), "windows": [w.to_dict() for w in self.windows]}


def realised_performance(
    joined: Joined,
    spec: LabelSpec,
    window: WindowSpec,
    *,
    labels: int,
    min_rows: int,
    settings: BootstrapSettings = BootstrapSettings(resamples=RESAMPLES),
) -> RealisedReport:
    """Each window's (and the whole selection's) metrics from the joined rows."""
    windows = []
    for first, panes in _windows(joined.pane_rows, window):
        rows = sum(joined.pane_rows.get(p, 0) for p in panes)
        inside = np.flatnonzero(np.isin(joined.pane, panes))
        start, end = window.bounds(first)
        windows.append(_realised(spec, joined.subset(inside), start, end, rows, min_rows, settings))
    total = sum(joined.pane_rows.values())
    overall = _realised(spec, joined, "", "", total, min_rows, settings)
    return RealisedReport(
        spec.model, spec.task, labels, min_rows, settings.confidence, overall, tuple(windows)
    )


def _realised(
    spec: LabelSpec,
    joined: Joined,
    start: str,
    end: str,
    rows: int,
    min_rows: int,
    settings: BootstrapSettings,
) -> RealisedWindow:
    if joined.rows < min_rows:
        return RealisedWindow(start, end, rows, joined.rows, "not_enough_labels")
    metrics = metric_intervals(spec.task, spec.classes, joined, settings)
    return RealisedWindow(start, end, rows, joined.rows, "ok", metrics)


def _windows(pane_rows: Mapping[int, int], spec: WindowSpec) -> list[tuple[int, np.ndarray]]:
    """Each window's first pane and its panes, as the drift report lists them (empty ones
    left out)."""
    if not pane_rows or spec.kind == "all":
        return []
    keys = sorted(pane_rows)
    span = spec.panes
    if span == 1:
        starts = keys
    else:
        last = max(keys[0], keys[-1] - span + 1)
        starts = sorted({k - j for k in keys for j in range(span) if keys[0] <= k - j <= last})
    out = []
    for start in starts:
        panes = np.arange(start, start + span, dtype=np.int64)
        if any(pane_rows.get(int(p), 0) for p in panes):
            out.append((start, panes))
    return out
