"""Stored sketches: a compacted part's counts, kept so monitoring merges them, not its rows.

When a closed log file is compacted (:mod:`keel.monitor.compact`), each part (one version and
role of the file) is also counted on the training bins of its own model version, per hour of
request time, exactly as :func:`keel.monitor.report.monitor_log` counts rows: every input on the
reference layout and the percentile grid, values that did not convert, the output, and the
score bins with their calibrated probabilities (CBPE). The counts are saved beside the Parquet
as ``.sketch`` (plain arrays, no pickle) under a key that hashes the version, its training
statistics and its calibration: a sketch counted against other bins is never merged.

Counts add, so any window made of whole hours (``all``, ``1h``, ``6h``, ``1d``, ``7d every 1d``,
``--since``/``--until`` on the hour) is the sum of the hours' sketches: :func:`stored_counts`
merges them per window pane and says which parts it covered, and only the rest of the log is
read. Row-count windows, windows of minutes and a range cut inside an hour read rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from keel.monitor.counts import SCORE_BINS, Binning, PaneCounts, binning_of, count_panes
from keel.monitor.drift import coerced_columns, prepare_columns
from keel.monitor.logfiles import Part, durable_write, read_records
from keel.monitor.window import LogFilter, LogRows, WindowSpec, day_in, part_in

if TYPE_CHECKING:
    from keel.monitor.report import ModelReference

__all__ = ["SKETCH_SECONDS", "SketchCounter", "StoredCounts", "sketch_key", "stored_counts"]

SKETCH_SECONDS = 3600  # a sketch's pane: one hour of request time
_LAYOUT = "keel-sketch-1"
_MAGIC = b"KEELSKETCH1\n"


def sketch_key(reference: ModelReference) -> str:
    """What a sketch was counted against: version, training statistics, inputs, calibration."""
    digest = hashlib.sha256()
    head = [_LAYOUT, SCORE_BINS, reference.name, reference.version, reference.target]
    digest.update(orjson.dumps(head))
    digest.update(orjson.dumps(reference.statistics, option=orjson.OPT_SORT_KEYS))
    digest.update(orjson.dumps(dict(reference.inputs), option=orjson.OPT_SORT_KEYS))
    calibration = reference.calibration
    digest.update(
        b"-"
        if calibration is None
        else orjson.dumps([calibration.scores, calibration.probabilities])
    )
    return digest.hexdigest()


def output_binning(reference: ModelReference) -> Binning | None:
    """The binning of the model's output: the training target's."""
    if reference.target is None:
        return None
    return binning_of(reference.target, reference.statistics["columns"][reference.target])


def predictions_as(predictions: pa.ChunkedArray, output: Binning | None) -> pa.ChunkedArray | None:
    """The predictions in the target's kind; None when they cannot be read as it."""
    if output is None:
        return None
    if output.kind != "numeric":
        return predictions.cast(pa.string())
    try:
        return predictions.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


class SketchCounter:
    """Counts a part's blocks per hour on its version's bins, as monitoring counts rows."""

    def __init__(self, reference: ModelReference) -> None:
        self.reference = reference
        self.prepared = prepare_columns(
            reference.statistics, list(reference.inputs), coercer=reference.coercer
        )
        self.output = output_binning(reference)
        self.panes: dict[int, PaneCounts] = {}
        self.present: set[str] = set()
        self.versions: set[str] = set()

    def add(self, block: LogRows) -> None:
        """Count one block of rows."""
        prepared = self.prepared
        self.present |= block.present
        self.versions.update(block.versions)
        table = block.inputs.select([c for c in prepared.binnings if c in block.present])
        sub = replace(
            prepared,
            binnings={n: prepared.binnings[n] for n in table.column_names},
            coercer=None
            if prepared.coercer is None
            else prepared.coercer.subset(table.column_names),
        )
        columns, invalid = coerced_columns(table, sub, typed=block.typed)
        predictions = predictions_as(block.prediction, self.output)
        count_panes(
            self.panes,
            np.floor(block.time / SKETCH_SECONDS).astype(np.int64),
            columns,
            prepared.binnings,
            times=block.time,
            invalid=invalid,
            output=None
            if self.output is None or predictions is None
            else (self.output, predictions),
            scores=block.probability,
            calibrate=self.reference.calibration,
        )

    def save(self, path: Path) -> None:
        """Write the counts durably (temp file, fsync, rename) under the reference's key."""
        hours = sorted(self.panes)
        panes = [self.panes[h] for h in hours]
        names = list(self.prepared.binnings)
        arrays: dict[str, np.ndarray] = {
            "hours": np.array(hours, dtype=np.int64),
            "rows": np.array([p.rows for p in panes], dtype=np.int64),
            "first": np.array([p.first for p in panes], dtype=np.float64),
            "last": np.array([p.last for p in panes], dtype=np.float64),
            "invalid": np.array(
                [[p.invalid.get(n, 0) for n in names] for p in panes], dtype=np.int64
            ).reshape(len(panes), len(names)),
        }
        for i, name in enumerate(names):
            binning = self.prepared.binnings[name]
            arrays[f"c{i}"] = _stack([p.columns.get(name) for p in panes], binning.bins)
            if binning.fine is not None:
                arrays[f"f{i}"] = _stack([p.fine.get(name) for p in panes], binning.fine.size + 1)
        if self.output is not None and any(p.output is not None for p in panes):
            arrays["output"] = _stack([p.output for p in panes], self.output.bins)
        if any(p.scores is not None for p in panes):
            arrays["scores"] = np.stack(
                [np.zeros((SCORE_BINS, 2)) if p.scores is None else p.scores for p in panes]
            ).reshape(len(panes), SCORE_BINS, 2)
        head: dict[str, Any] = {
            "key": sketch_key(self.reference),
            "names": names,
            "present": sorted(self.present),
            "versions": sorted(self.versions),
            "arrays": {},
        }
        blobs, offset = [], 0
        for name, array in arrays.items():
            data = np.ascontiguousarray(array).tobytes()
            head["arrays"][name] = [array.dtype.str, list(array.shape), offset]
            blobs.append(data)
            offset += len(data)
        header = orjson.dumps(head)
        durable_write(path, _MAGIC + len(header).to_bytes(8, "little") + header + b"".join(blobs))


def _stack(rows: list[np.ndarray | None], width: int) -> np.ndarray:
    matrix = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if row is not None:
            matrix[i] = row
    return matrix


@dataclass
class StoredCounts:
    """Window panes merged from stored sketches, and the parts they cover (not to be read)."""

    panes: dict[int, PaneCounts] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)
    parts: frozenset[Part] = frozenset()


def stored_counts(
    reference: ModelReference, directory: Path, select: LogFilter, window: WindowSpec
) -> StoredCounts:
    """The selected compacted parts' sketches, merged into ``window``'s panes.

    A part is covered when its sketch was counted against ``reference`` (same key), and the
    window and the time range are made of whole hours; every other part is left to be read.
    """
    if window.kind == "rows" or (window.kind == "time" and window.step % SKETCH_SECONDS):
        return StoredCounts()
    if any(b is not None and b % SKETCH_SECONDS for b in (select.since, select.until)):
        return StoredCounts()
    key: str | None = None
    stored = StoredCounts()
    used = []
    for record in read_records(directory / reference.name).values():
        if not day_in(record.day, select):
            continue
        for part in record.parts:
            if part.sketch is None or not part_in(part, select):
                continue
            key = key or sketch_key(reference)
            if _merge(stored, part.sketch, key, select, window):
                used.append(part)
    stored.parts = frozenset(used)
    return stored


def _merge(
    stored: StoredCounts, path: Path, key: str, select: LogFilter, window: WindowSpec
) -> bool:
    """Add one sketch's hours to the window panes; False when it does not fit (key, file)."""
    loaded = _load(path, key)
    if loaded is None:
        return False
    head, arrays = loaded
    start = arrays["hours"] * SKETCH_SECONDS
    keep = np.ones(start.size, dtype=bool)
    if select.since is not None:
        keep &= start >= select.since
    if select.until is not None:
        keep &= start < select.until
    if window.kind == "months":  # hours never straddle a UTC month
        pane = window.pane_of(start.astype(np.float64), 0)
    else:
        pane = np.zeros(start.size, np.int64) if window.kind == "all" else start // window.step
    names = [str(n) for n in head["names"]]
    present = {str(n) for n in head["present"]}
    for key_pane in np.unique(pane[keep]).tolist():
        rows = keep & (pane == key_pane)
        counts = _pane(arrays, names, present, rows)
        if key_pane in stored.panes:
            stored.panes[key_pane].add(counts)
        else:
            stored.panes[key_pane] = counts
    stored.present.update(present)
    stored.versions.update(str(v) for v in head["versions"])
    return True


def _load(path: Path, key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """A sketch's header and arrays (views of one read); None when missing, torn or counted
    against another key."""
    try:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            return None
        size = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 8], "little")
        start = len(_MAGIC) + 8
        head: dict[str, Any] = orjson.loads(data[start : start + size])
        if head.get("key") != key:
            return None
        body = memoryview(data)[start + size :]
        arrays = {}
        for name, (dtype, shape, offset) in head["arrays"].items():
            kind = np.dtype(dtype)
            count = int(np.prod(shape))
            array = np.frombuffer(body, dtype=kind, count=count, offset=offset)
            arrays[name] = array.reshape(shape)
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None  # the part's rows are read instead
    return head, arrays


def _pane(
    arrays: Mapping[str, np.ndarray], names: list[str], present: set[str], rows: np.ndarray
) -> PaneCounts:
    """The sum of some hours of a sketch as one pane's counts."""
    invalid = arrays["invalid"][rows].sum(axis=0)
    counts = PaneCounts(
        rows=int(arrays["rows"][rows].sum()),
        first=float(arrays["first"][rows].min()),
        last=float(arrays["last"][rows].max()),
    )
    for i, name in enumerate(names):
        if name not in present:
            continue
        counts.columns[name] = arrays[f"c{i}"][rows].sum(axis=0)
        if f"f{i}" in arrays:
            counts.fine[name] = arrays[f"f{i}"][rows].sum(axis=0)
        if invalid[i]:
            counts.invalid[name] = int(invalid[i])
    if "output" in arrays:
        counts.output = arrays["output"][rows].sum(axis=0)
    if "scores" in arrays:
        counts.scores = arrays["scores"][rows].sum(axis=0)
    return counts
