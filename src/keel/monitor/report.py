"""A monitoring report: the prediction log of one model, per window, against its training.

:func:`monitor_log` streams the log once (:mod:`keel.monitor.window`), counts every block into
its panes on the training bins (:mod:`keel.monitor.counts`), then merges each window's panes
and reads off every window's per-feature drift with BH decisions at once (array operations,
:mod:`keel.monitor.windowed`), the drift of the model's output against the training target,
and for a binary classifier the CBPE estimate of accuracy and ROC AUC
(:mod:`keel.monitor.cbpe`). With labels, the same blocks feed the label join (one read of the
log, :class:`keel.monitor.performance.LabelJoin`). The model is described by its package's manifest
and training statistics only (:func:`load_reference`): the model itself is never loaded, so
monitoring imports neither LightGBM nor scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from keel.errors import ConfigError, DataValidationError
from keel.monitor.cbpe import Calibration, Estimate, estimate_performance
from keel.monitor.counts import Binning, PaneCounts, binning_of, count_panes
from keel.monitor.drift import (
    ColumnDrift,
    Limits,
    PreparedColumns,
    coerced_columns,
    not_comparable,
    prepare_columns,
)
from keel.monitor.eventtime import at_event_time
from keel.monitor.sketches import stored_counts
from keel.monitor.window import LogFilter, LogRows, WindowSpec, read_log, window_span
from keel.monitor.windowed import ColumnCounts, judge_columns

if TYPE_CHECKING:
    from keel.config.monitor import MonitorConfig
    from keel.monitor.performance import LabelJoin, RealisedReport
    from keel.store.artifacts import ArtifactStore

__all__ = [
    "ModelReference",
    "MonitorReport",
    "MonitorSettings",
    "WindowReport",
    "load_reference",
    "monitor_log",
    "settings_of",
]

_JSON_TYPES = {"int": pa.float64(), "float": pa.float64(), "bool": pa.bool_()}


@dataclass(frozen=True)
class MonitorSettings:
    """Minimum rows, FDR, the per-feature rules and the windows of a monitoring run."""

    min_rows: int = 100
    fdr: float = 0.05
    default: Limits = field(default_factory=Limits)
    features: Mapping[str, Limits] = field(default_factory=dict)
    prediction: Limits = field(default_factory=Limits)
    window: WindowSpec = field(default_factory=lambda: WindowSpec("all"))
    time_column: str | None = None  # windows by this input's event time (monitor.time_column)
    time_unit: str | None = None  # its numbers' unit (schema.yaml's unit:; None: seconds)


def settings_of(config: MonitorConfig, window: WindowSpec) -> MonitorSettings:
    """Settings from keel.yaml's ``monitor:`` section, with ``window`` chosen by the caller."""
    default = Limits("psi", config.psi.warn, config.psi.alert)

    def limits(rule: Any) -> Limits:
        if rule is None:
            return default
        warn, alert = rule.levels()
        if rule.metric == "psi" and rule.warn is None and rule.alert is None:
            warn, alert = default.warn, default.alert
        return Limits(rule.metric, warn, alert, rule.ignore)

    return MonitorSettings(
        min_rows=config.min_rows,
        fdr=config.fdr,
        default=default,
        features={name: limits(rule) for name, rule in config.features.items()},
        prediction=limits(config.prediction),
        window=window,
        time_column=config.time_column,
    )


@dataclass(frozen=True)
class ModelReference:
    """What monitoring needs of a registered model: its inputs, task and training statistics."""

    name: str
    version: str
    task: str
    classes: tuple[str, ...]
    inputs: Mapping[str, str]
    statistics: Mapping[str, Any]
    coercer: Any
    target: str | None = None
    calibration: Calibration | None = None
    # inputs the log cannot compare with training, and why (``hashed``: keel.monitor.hashed)
    not_comparable: Mapping[str, str] = field(default_factory=dict)


def load_reference(
    store: ArtifactStore, sha256: str, *, version: str, target: str | None
) -> ModelReference:
    """A package's manifest and training statistics (hashes verified), never its model."""
    from keel.features.pipeline import FeaturePipeline

    manifest = orjson.loads(store.get(sha256))
    spec = manifest["files"]["statistics.json"]
    statistics = orjson.loads(store.get(spec["sha256"]))
    pipeline = FeaturePipeline.from_state(manifest["features"])
    return ModelReference(
        name=str(manifest["name"]),
        version=version,
        task=str(manifest.get("task", "binary")),
        classes=tuple(str(c) for c in manifest.get("classes", [])),
        inputs=dict(pipeline.inputs),
        statistics=statistics,
        coercer=pipeline.coercer(),
        target=target if target in statistics["columns"] else None,
    )


@dataclass(frozen=True)
class WindowReport:
    """One window: its rows, drift per feature, output drift and estimated performance."""

    start: str
    end: str
    first: float | None
    last: float | None
    rows: int
    verdict: str
    columns: tuple[ColumnDrift, ...]
    prediction: ColumnDrift | None
    performance: Estimate | None

    @property
    def drifted(self) -> list[str]:
        """Features whose verdict is drift, largest PSI first."""
        return [c.column for c in self.columns if c.verdict == "drift"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "start": self.start,
            "end": self.end,
            "first_request": self.first,
            "last_request": self.last,
            "rows": self.rows,
            "verdict": self.verdict,
            "drifted_columns": self.drifted,
            "columns": [c.to_dict() for c in self.columns],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "performance": None if self.performance is None else self.performance.to_dict(),
        }


@dataclass(frozen=True)
class MonitorReport:
    """The whole run: every window, and the selection merged into one (``overall``)."""

    model: str
    version: str
    versions: tuple[str, ...]
    role: str | None
    window: str
    source: str
    reference_rows: int
    missing_columns: tuple[str, ...]
    settings: MonitorSettings
    overall: WindowReport
    windows: tuple[WindowReport, ...]
    calibrated: bool
    notes: tuple[str, ...] = ()
    realised: RealisedReport | None = None  # labels joined to predictions (keel feedback)

    @property
    def latest(self) -> str:
        """The verdict of the most recent window (what keel monitor's exit code follows)."""
        return self.windows[-1].verdict if self.windows else self.overall.verdict

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the overall window's fields at the top, then ``windows``."""
        overall = self.overall.to_dict()
        return {
            "model": self.model,
            "version": self.version,
            "versions": list(self.versions),
            "role": self.role,
            "source": self.source,
            "window": self.window,
            "rows": overall["rows"],
            "reference_rows": self.reference_rows,
            "verdict": overall["verdict"],
            "latest_verdict": self.latest,
            "drifted_columns": overall["drifted_columns"],
            "missing_columns": list(self.missing_columns),
            "thresholds": {
                "warn": self.settings.default.warn,
                "alert": self.settings.default.alert,
                "min_rows": self.settings.min_rows,
                "fdr": self.settings.fdr,
            },
            "columns": overall["columns"],
            "prediction": overall["prediction"],
            "performance": overall["performance"]
            and {**overall["performance"], "method": "cbpe", "calibrated": self.calibrated},
            "realised": None if self.realised is None else self.realised.summary(),
            "windows": [_with_realised(w.to_dict(), self.realised) for w in self.windows],
            "notes": list(self.notes),
            "dialect": None,
            "bad_lines": [],
        }


def _with_realised(window: dict[str, Any], realised: RealisedReport | None) -> dict[str, Any]:
    """A window's JSON with its realised performance beside CBPE's estimate."""
    found = None if realised is None else realised.window(window["start"])
    window["realised"] = None if found is None else found.to_dict()
    return window


def monitor_log(
    reference: ModelReference,
    directory: Path,
    *,
    select: LogFilter = LogFilter(),
    settings: MonitorSettings = MonitorSettings(),
    join: LabelJoin | None = None,
) -> MonitorReport:
    """Drift and estimated performance of the logged predictions, per window.

    Args:
        reference: The model (:func:`load_reference`).
        directory: The prediction log's root.
        select: Which version, role and time range to read.
        settings: Thresholds, FDR, minimum rows and windows.
        join: Labels to join to the same rows as they are read (the log is read once for
            drift and realised performance); it also reads the compacted parts whose stored
            sketches stood in for their rows, for their request ids only.

    Raises:
        DataValidationError: The log has rows but none of the model's input columns (it was
            written for another model): names the expected columns.
    """
    prepared = prepare_columns(
        reference.statistics,
        list(reference.inputs),
        settings.features,
        settings.default,
        reference.coercer,
    )
    output = _output_binning(reference)
    binary = reference.task == "binary"
    types = {name: _JSON_TYPES.get(kind, pa.string()) for name, kind in reference.inputs.items()}
    prediction_type = pa.float64() if reference.task == "regression" else pa.string()
    timed = settings.time_column
    if timed is not None and timed not in types:
        types[timed] = pa.string()  # read as text (numbers too, by the orjson path)
    # compacted parts whose stored sketches fit are merged, not read (keel.monitor.sketches);
    # sketches count request hours, so event-time windows read the rows instead
    stored = stored_counts(
        reference, directory, select, WindowSpec("rows") if timed else settings.window
    )
    panes, present, versions = stored.panes, stored.present, stored.versions
    first_row = unparsed = read = 0
    for logged in read_log(
        directory,
        reference.name,
        types,
        select=select,
        prediction_type=prediction_type,
        binary=binary,
        skip=stored.parts,
        meta=join is not None,
    ):
        present |= logged.present
        versions.update(logged.versions)
        read += logged.rows
        block: LogRows | None = logged
        if timed is not None:
            block, missed = at_event_time(logged, timed, settings.time_unit)
            unparsed += missed
        if block is not None:
            pane = settings.window.pane_of(block.time, first_row)
            _count(panes, block, prepared, output, reference, pane)
            if join is not None:
                join.add_rows(block, pane)
            first_row += block.rows
    if join is not None and stored.parts:
        _join_sketched(join, directory, reference.name, select, settings.window, stored.parts)
    rows = sum(p.rows for p in panes.values())
    notes: list[str] = []
    if timed is not None and read and timed not in present:
        msg = (
            f"monitor.time_column: the logged inputs of {reference.name} have no column "
            f"{timed!r}; windows are cut by it, so clients must send it with each row (the "
            "server logs every input it receives), or remove monitor.time_column to window by "
            "request time."
        )
        raise ConfigError(msg, field="monitor.time_column")
    if timed is not None and read:
        notes.append(
            f"windows by {timed} (event time): read from the logged rows, since the stored "
            "sketches count request hours."
        )
    if unparsed:
        notes.append(
            f"{unparsed} of {read} logged rows have no {timed} the event time can be read from "
            "(null or not a date/time): they are in no window."
        )
    missing = tuple(c for c in reference.inputs if c not in present) if rows else ()
    if rows and len(missing) == len(reference.inputs):
        msg = (
            f"the prediction log of {reference.name} holds {rows} rows but none of the model's "
            f"input columns ({', '.join(reference.inputs)}): it was written for another model "
            "or by another writer. Check the model name, or pass the data with --input."
        )
        raise DataValidationError(msg, field=next(iter(reference.inputs)))
    if missing:
        notes.append(
            f"the log lacks {len(missing)} of the model's inputs ({', '.join(missing)}): they "
            "are left out, never called stable."
        )
    if not rows:
        arm = select.role not in (None, "primary") and select.version not in (None, "all")
        notes.append(
            f"no logged predictions of {reference.name} match the selection"
            + (
                f" (version {select.version}, role {select.role}: an arm's predictions are "
                "logged under its own version; --version all, or --version N)."
                if arm
                else "."
            )
        )
    if rows and reference.task == "multiclass":
        notes.append(
            "no estimated performance: CBPE estimates a binary classifier's accuracy and ROC AUC "
            + (
                "only; realised accuracy comes from the feedback labels."
                if join is not None
                else f"only; send labels (keel feedback {reference.name}) for realised accuracy."
            )
        )
    keep = [c for c in prepared.binnings if c not in missing]
    merged = PaneCounts()
    for counts in panes.values():
        merged.add(counts)
    # every window and the whole selection judged at once (keel.monitor.windowed)
    *judged, overall = judge_windows(
        reference, prepared, keep, output, settings, [*_windows(panes, settings.window),
                                                      (None, merged)]
    )  # fmt: skip
    windows = tuple(judged)
    notes += _small_windows(windows, overall, settings.min_rows)
    invalid = {n: c for n, c in merged.invalid.items() if c}
    if invalid:
        notes.append(
            "values that do not convert to the model's types were left out: "
            + ", ".join(f"{n} ({c})" for n, c in invalid.items())
        )
    return MonitorReport(
        model=reference.name,
        version=reference.version,
        versions=tuple(sorted(versions)),
        role=select.role,
        window=settings.window.describe() + (f" by {timed}" if timed else ""),
        source=f"prediction log ({directory / reference.name})",
        reference_rows=int(reference.statistics["rows"]),
        missing_columns=missing,
        settings=settings,
        overall=overall,
        windows=windows,
        calibrated=reference.calibration is not None,
        notes=tuple(notes),
    )


def _output_binning(reference: ModelReference) -> Binning | None:
    if reference.target is None:
        return None
    return binning_of(reference.target, reference.statistics["columns"][reference.target])


def _count(
    panes: dict[int, PaneCounts],
    block: LogRows,
    prepared: PreparedColumns,
    output: Binning | None,
    reference: ModelReference,
    pane: np.ndarray,
) -> None:
    table = block.inputs.select([c for c in prepared.binnings if c in block.present])
    sub = replace(
        prepared,
        binnings={n: prepared.binnings[n] for n in table.column_names},
        coercer=None if prepared.coercer is None else prepared.coercer.subset(table.column_names),
    )
    columns, invalid = coerced_columns(table, sub, typed=block.typed)
    predictions = _predictions(block.prediction, output)
    count_panes(
        panes,
        pane,
        columns,
        prepared.binnings,
        times=block.time,
        invalid=invalid,
        output=None if output is None or predictions is None else (output, predictions),
        scores=block.probability,
        calibrate=reference.calibration,
    )


def _join_sketched(
    join: LabelJoin,
    directory: Path,
    model: str,
    select: LogFilter,
    window: WindowSpec,
    parts: frozenset[Any],
) -> None:
    """Labels joined to the compacted parts whose stored sketches gave their drift: read once,
    without their inputs unless labels join by key columns (time windows only: no row
    numbers)."""
    from keel.monitor.labelled import read_logged

    for block in read_logged(directory, model, select=select, keys=join.keys or None,
                             prediction_type=join.prediction_type, binary=join.binary,
                             only=parts):  # fmt: skip
        join.add(block, window.pane_of(block.time, 0))


def _predictions(predictions: pa.ChunkedArray, output: Binning | None) -> pa.ChunkedArray | None:
    """The predictions in the target's kind; None when they cannot be read as it."""
    if output is None:
        return None
    if output.kind != "numeric":
        return predictions.cast(pa.string())
    try:
        return predictions.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


#: Windows named, at most, in the note on windows below monitor.min_rows.
SMALL_SHOWN = 5


def _small_windows(
    windows: tuple[WindowReport, ...], overall: WindowReport, min_rows: int
) -> list[str]:
    """A note naming the windows below ``monitor.min_rows`` (the whole log as ``all``): their
    shift is not judged, so no rule on feature or output shift can fire on them."""
    small = [w for w in windows if w.verdict == "not_enough_data"]
    if not windows and overall.rows and overall.verdict == "not_enough_data":
        small = [overall]  # the whole log as one window
    if not small:
        return []
    fix = "wait for more rows, widen --window, or lower monitor.min_rows"
    if not windows:
        return [
            f"the whole log (window all) holds {overall.rows} rows, fewer than monitor.min_rows "
            f"({min_rows}): not enough data to judge it (not_enough_data), so rules on feature "
            f"or output shift do not fire; {fix}."
        ]
    named = [f"{window_span(w.start, w.end)} ({w.rows} rows)" for w in small[:SMALL_SHOWN]]
    more = f" and {len(small) - SMALL_SHOWN} more" if len(small) > SMALL_SHOWN else ""
    return [
        f"{len(small)} of {len(windows)} window{'s' * (len(windows) != 1)} "
        f"{'holds' if len(small) == 1 else 'hold'} fewer than monitor.min_rows ({min_rows}) "
        f"rows: {', '.join(named)}{more}; not enough data to judge them (not_enough_data), so "
        f"rules on feature or output shift do not fire on them; {fix}."
    ]


def _windows(panes: Mapping[int, PaneCounts], spec: WindowSpec) -> list[tuple[int, PaneCounts]]:
    """Each window's first pane and merged counts; empty windows left out."""
    if not panes or spec.kind == "all":
        return []
    keys = sorted(panes)
    span = spec.panes
    if span == 1:
        starts = keys
    else:  # every step from the first pane while a full window fits, skipping empty windows
        last = max(keys[0], keys[-1] - span + 1)
        starts = sorted({k - j for k in keys for j in range(span) if keys[0] <= k - j <= last})
    out = []
    for start in starts:
        merged = PaneCounts()
        for key in range(start, start + span):
            if key in panes:
                merged.add(panes[key])
        if merged.rows:
            out.append((start, merged))
    return out


def judge_windows(
    reference: ModelReference,
    prepared: PreparedColumns,
    keep: list[str],
    output: Binning | None,
    settings: MonitorSettings,
    entries: Sequence[tuple[int | None, PaneCounts]],
) -> list[WindowReport]:
    """Each window (its first pane, None for the whole selection, and its counts) judged:
    every feature's drift in every window as array operations, BH across each window's
    features, the output's drift and the CBPE estimate."""
    stats = reference.statistics["columns"]
    rows = [counts.rows for _, counts in entries]
    features = [
        ColumnCounts(
            prepared.binnings[name],
            np.asarray(stats[name]["counts"]),
            _stack([c.columns.get(name) for _, c in entries], prepared.binnings[name].bins),
            _fine(prepared.binnings[name], [c.fine.get(name) for _, c in entries]),
            prepared.limits[name],
            [c.invalid.get(name, 0) for _, c in entries],
        )
        for name in keep
    ]
    decided = judge_columns(features, rows, min_rows=settings.min_rows, fdr=settings.fdr)
    predictions: list[ColumnDrift | None] = [None] * len(entries)
    if output is not None:
        scored = [w for w, (_, c) in enumerate(entries) if c.output is not None]
        counts = ColumnCounts(
            output,
            np.asarray(stats[output.column]["counts"]),
            _stack([entries[w][1].output for w in scored], output.bins),
            None,
            settings.prediction,
        )
        outputs = judge_columns([counts], [rows[w] for w in scored],
                                min_rows=settings.min_rows, fdr=settings.fdr)  # fmt: skip
        for w, found in zip(scored, outputs, strict=True):
            predictions[w] = found[0]
    return [
        _report(reference, settings, first, counts, columns, prediction)
        for (first, counts), columns, prediction in zip(entries, decided, predictions, strict=True)
    ]


def _stack(counts: Sequence[np.ndarray | None], bins: int) -> np.ndarray:
    """Windows' count vectors as one (windows, bins) matrix (a missing one counts nothing)."""
    matrix = np.zeros((len(counts), bins), dtype=np.float64)  # exact for counts < 2**53
    for w, found in enumerate(counts):
        if found is not None:
            matrix[w] = found
    return matrix


def _fine(binning: Binning, counts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    if binning.fine is None:
        return None
    return _stack(counts, binning.fine.size + 1)


def _report(
    reference: ModelReference,
    settings: MonitorSettings,
    first_pane: int | None,
    counts: PaneCounts,
    columns: list[ColumnDrift],
    prediction: ColumnDrift | None,
) -> WindowReport:
    decided = sorted(columns, key=lambda c: -c.psi)
    decided += [  # hashed numeric inputs: listed, never drift or stable (keel.monitor.hashed)
        not_comparable(name, why, settings.default, counts.rows)
        for name, why in reference.not_comparable.items()
    ]
    enough = counts.rows >= settings.min_rows
    performance = None
    if enough and counts.scores is not None:
        performance = estimate_performance(counts.scores)
    verdict = "not_enough_data"
    if enough:
        verdict = "drift" if any(c.verdict == "drift" for c in decided) else "stable"
    start, end = ("", "") if first_pane is None else settings.window.bounds(first_pane)
    return WindowReport(
        start=start,
        end=end,
        first=None if not counts.rows else counts.first,
        last=None if not counts.rows else counts.last,
        rows=counts.rows,
        verdict=verdict,
        columns=tuple(decided),
        prediction=prediction,
        performance=performance,
    )
