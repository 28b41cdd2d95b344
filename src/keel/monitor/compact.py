"""Compaction and retention of the prediction log: closed JSON Lines become Parquet partitions.

A log file is **closed** when its UTC day is over and it has not been written for ``grace``
seconds (the server writes a request into the file of the request's day, flushing every half
second: :mod:`keel.serve.predlog`); a file the server may still append to is never touched.
Each closed file is read once (Arrow's JSON reader with the registered versions' input types,
orjson for mixed types) and written as one Parquet part per model version and deployment role
(:mod:`keel.monitor.logfiles` for the layout), one row per served instance: request time, id,
version, role, pipeline hash, prediction, P(positive) and the inputs. Beside each part of a
registered version its counts per hour are stored (:mod:`keel.monitor.sketches`).

Every file is written atomically (temporary name, fsync, rename, fsync of the folder), then the
``_done`` record that lists the parts, and only then is the JSON Lines file deleted. A crash
anywhere leaves either the JSON Lines file without a record (the parts, unlisted, are never
read and are rewritten by the next run) or the record (the next run deletes the file): no row
is lost or read twice, and compacting again is harmless.

``monitor.retention_days`` deletes whole days older than that: the record first, then the
partitions and expired JSON Lines folders.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from glob import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import NotFoundError
from keel.monitor.counts import booleans, strings
from keel.monitor.logfiles import (
    COMPACTED,
    DONE,
    Part,
    Record,
    day_folders,
    day_start,
    durable_write,
    fsync_dir,
    part_dir,
    partitions,
    read_records,
    record_body,
)
from keel.monitor.sketches import SketchCounter
from keel.monitor.window import LogFilter, LogRows, read_jsonl
from keel.validate.arrays import from_numpy

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from keel.monitor.report import ModelReference
    from keel.project import Project

__all__ = [
    "GRACE_SECONDS",
    "CompactionReport",
    "LoggedVersions",
    "closed_files",
    "compact",
    "compact_log",
    "compact_project",
    "expire",
]

GRACE_SECONDS = 300.0  # a closed day's file must also be this long unmodified
_DAY = 86_400
_JSON_TYPES = {"int": pa.float64(), "float": pa.float64(), "bool": pa.bool_()}


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What one compaction of a model's log did."""

    model: str
    files: int = 0  # JSON Lines files compacted (and deleted)
    rows: int = 0  # rows they held
    parts: int = 0  # Parquet parts written
    sketches: int = 0  # parts with stored counts
    open_files: int = 0  # files the server may still write to: left alone
    expired_days: int = 0  # days deleted by retention
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "model": self.model,
            "files": self.files,
            "rows": self.rows,
            "parts": self.parts,
            "sketches": self.sketches,
            "open_files": self.open_files,
            "expired_days": self.expired_days,
            "notes": list(self.notes),
        }


def closed_files(root: Path, *, now: float, grace: float = GRACE_SECONDS) -> tuple[list[Path], int]:
    """A model's closed JSON Lines files (oldest day first), and how many are still open."""
    closed, still_open = [], 0
    for day in day_folders(root):
        start = day_start(day.name)
        assert start is not None
        for path in sorted(day.glob("*.jsonl")):
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if start + _DAY + grace <= now and modified + grace <= now:
                closed.append(path)
            else:
                still_open += 1
    return closed, still_open


def compact(
    project: Project,
    model: str | None = None,
    *,
    now: float | None = None,
    grace: float = GRACE_SECONDS,
    retention_days: int | None = None,
) -> list[CompactionReport]:
    """Compact the closed log files of ``model`` (every logged model when None), then expire
    days older than ``retention_days`` (default keel.yaml's ``monitor.retention_days``).

    Raises:
        NotFoundError: ``model`` has no prediction log and is not registered.
    """
    directory = project.predictions_dir
    if model is None:
        names = (
            sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []
        )
    else:
        if not (directory / model).is_dir():
            project.metadata.resolve(model)  # NotFoundError names the registered models
        names = [model]
    days = retention_days if retention_days is not None else _retention(project)
    moment = time.time() if now is None else now
    return [
        compact_log(
            directory / name,
            partial(_registered, project, name),
            now=moment,
            grace=grace,
            retention_days=days,
        )
        for name in names
    ]


def _retention(project: Project) -> int | None:
    return project.config.monitor.retention_days


def compact_project(
    project: str | Path | None = None, model: str | None = None
) -> list[CompactionReport]:
    """:func:`compact` on the project at ``project`` (default: the nearest keel.yaml): what
    ``keel monitor compact [NAME]`` runs, and ``keel monitor NAME`` before it reads the log."""
    from keel.project import Project

    with Project(project) as opened:
        return compact(opened, model)


def compact_log(
    root: Path,
    versions: Callable[[], LoggedVersions | None],
    *,
    now: float,
    grace: float = GRACE_SECONDS,
    retention_days: int | None = None,
) -> CompactionReport:
    """Expire old days, then compact the closed files of one model's log (``root``).

    Args:
        root: The model's log folder (``.keel/predictions/<model>``).
        versions: Gives the model's registered versions (called only when a file is closed;
            None: none registered, the files are kept as they are).
        now: The current time (seconds since the epoch).
        grace: How long a closed day's file must have been left unmodified.
        retention_days: Delete days that ended longer ago than this (None: keep everything).
    """
    model = root.name
    if not root.is_dir():
        return CompactionReport(model)
    with _exclusive(root / COMPACTED / ".lock") as held:
        if not held:
            note = "another compaction of this log is running: left to it."
            return CompactionReport(model, notes=(note,))
        return _compact_locked(root, versions, now, grace, retention_days)


@contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on ``path`` (True when this process holds it)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _compact_locked(
    root: Path,
    versions: Callable[[], LoggedVersions | None],
    now: float,
    grace: float,
    retention_days: int | None,
) -> CompactionReport:
    model = root.name
    expired = 0 if retention_days is None else expire(root, retention_days, now=now, grace=grace)
    files, still_open = closed_files(root, now=now, grace=grace)
    if not files:
        return CompactionReport(model, open_files=still_open, expired_days=expired)
    plan = versions()
    if plan is None:
        note = f"{model} has no registered version: its {len(files)} closed files are kept."
        return CompactionReport(model, open_files=still_open, expired_days=expired, notes=(note,))
    records = read_records(root)
    totals = [0, 0, 0, 0]
    notes = []
    for path in files:
        done = records.get((path.parent.name, path.stem))
        if done is not None and not done.covers(path):
            notes.append(
                f"{path} was written again after it was compacted under that name: kept as "
                "JSON Lines (and read as such); rename it to compact it."
            )
            continue
        if done is None:
            done = _compact_file(path, root, plan)
            totals[2] += len(done.parts)
            totals[3] += sum(p.sketch is not None for p in done.parts)
        totals[0] += 1
        totals[1] += done.rows
        _remove(path)
    return CompactionReport(
        model,
        files=totals[0],
        rows=totals[1],
        parts=totals[2],
        sketches=totals[3],
        open_files=still_open,
        expired_days=expired,
        notes=tuple(notes),
    )


class LoggedVersions:
    """A model's registered versions, as compaction reads and counts its log.

    Args:
        references: Each version's reference (:func:`keel.monitor.report.load_reference`),
            oldest first: the log is read with the union of their input types, predictions
            with the latest one's task.
        calibrate: Adds a version's CBPE calibration to its reference (called once per version
            that occurs in the log); None: references are used as they are.
    """

    def __init__(
        self,
        references: Mapping[str, ModelReference],
        calibrate: Callable[[str, ModelReference], ModelReference] | None = None,
    ) -> None:
        self.references = dict(references)
        self.calibrate = calibrate
        latest = list(self.references.values())[-1]
        self.task = latest.task
        self.types: dict[str, pa.DataType] = {}
        for reference in self.references.values():
            for name, kind in reference.inputs.items():
                self.types[name] = _JSON_TYPES.get(kind, pa.string())
        self._ready: set[str] = set()

    def reference(self, version: str) -> ModelReference | None:
        """The version's reference (with its calibration), None when it is not registered."""
        reference = self.references.get(version)
        if reference is None or version in self._ready or self.calibrate is None:
            return reference
        reference = self.calibrate(version, reference)
        self.references[version] = reference
        self._ready.add(version)
        return reference


def _registered(project: Project, model: str) -> LoggedVersions | None:
    """The registered versions of ``model`` in ``project`` (None when there is none)."""
    from dataclasses import replace

    from keel.monitor.calibrate import calibration_for
    from keel.monitor.hashed import hashed_inputs, hashed_reference
    from keel.monitor.report import load_reference

    try:
        rows = list(project.metadata.list_versions(model))
    except NotFoundError:
        return None
    if not rows:
        return None
    target = project.config.data.target
    shas = {str(r.version): str(r.package_sha256) for r in rows}
    hashed = hashed_inputs(project)  # pii inputs logged as keyed hashes (keel.monitor.hashed)
    references = {
        version: hashed_reference(
            load_reference(project.artifacts, sha, version=version, target=target), hashed
        )
        for version, sha in shas.items()
    }

    def calibrate(version: str, reference: ModelReference) -> ModelReference:
        if reference.task != "binary":
            return reference
        calibration = calibration_for(project, shas[version], reference.target, reference.classes)
        return replace(reference, calibration=calibration)

    logged = LoggedVersions(references, calibrate)
    timed = project.config.monitor.time_column  # kept in the parts: event-time windows read it
    if timed is not None:
        logged.types.setdefault(timed, pa.string())
    return logged


class _PartWriter:
    """One Parquet part being written under a temporary name, with its sketch counter."""

    def __init__(self, path: Path, schema: pa.Schema, counter: SketchCounter | None) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.temporary = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer: pq.ParquetWriter = pq.ParquetWriter(self.temporary, schema)
        self.schema = schema
        self.counter = counter
        self.rows = 0

    def finish(self, version: str, role: str, day: str) -> Part:
        """Close, make durable, rename into place; the sketch beside it."""
        self.writer.close()
        fd = os.open(self.temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.temporary.replace(self.path)
        sketch = None
        if self.counter is not None:
            sketch = self.path.with_name(self.path.name.removesuffix(".parquet") + ".sketch")
            self.counter.save(sketch)
        fsync_dir(self.path.parent)
        return Part(self.path, version, role, day, self.rows, sketch)


def _compact_file(path: Path, root: Path, plan: LoggedVersions) -> Record:
    """Rewrite one closed file as Parquet parts, then record it (the caller deletes it)."""
    day, stem = path.parent.name, path.stem
    size = path.stat().st_size  # closed: it does not grow
    base = root / COMPACTED
    stale_names = (f"{escape(stem)}.*", f".{escape(stem)}.*.tmp")
    for stale in (p for n in stale_names for p in base.glob(f"version=*/role=*/day={day}/{n}")):
        stale.unlink()  # an earlier run that crashed before its record: start over
    binary = plan.task == "binary"
    prediction_type = pa.float64() if plan.task == "regression" else pa.string()
    writers: dict[tuple[str, str], list[_PartWriter]] = {}
    for block in read_jsonl(path, plan.types, LogFilter(), prediction_type, binary, meta=True):
        assert block.meta is not None
        table = _rows_table(block, binary)
        for (version, role), mask in _groups(block.meta):
            piece = table if mask.all() else table.take(from_numpy(np.flatnonzero(mask)))
            _write(writers, root, (version, role), day, stem, piece, _subset(block, mask), plan)
    parts = tuple(
        writer.finish(version, role, day)
        for (version, role), chain in writers.items()
        for writer in chain
    )
    record = Record(day, stem, sum(p.rows for p in parts), parts, source_bytes=size)
    durable_write(base / DONE / day / f"{stem}.json", record_body(record, root))
    return record


def _write(
    writers: dict[tuple[str, str], list[_PartWriter]],
    root: Path,
    key: tuple[str, str],
    day: str,
    stem: str,
    table: pa.Table,
    block: LogRows,
    plan: LoggedVersions,
) -> None:
    """Append rows to the key's current part; a block of another schema starts a new part."""
    chain = writers.setdefault(key, [])
    if chain and not chain[-1].schema.equals(table.schema):
        with suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            table = table.cast(chain[-1].schema)  # else a new part with this schema, below
    if not chain or not chain[-1].schema.equals(table.schema):
        reference = plan.reference(key[0])
        counter = None if reference is None else SketchCounter(reference)
        path = part_dir(root, key[0], key[1], day) / f"{stem}.{len(chain)}.parquet"
        chain.append(_PartWriter(path, table.schema, counter))
    writer = chain[-1]
    writer.writer.write_table(table)
    writer.rows += table.num_rows
    if writer.counter is not None:
        writer.counter.add(block)


def _rows_table(block: LogRows, binary: bool) -> pa.Table:
    """One row per served instance: request fields, prediction, probability, inputs."""
    assert block.meta is not None
    present = [n for n in block.inputs.column_names if n in block.present]
    inputs = pa.StructArray.from_arrays(
        [block.inputs.column(n).combine_chunks() for n in present] or [pa.nulls(block.rows)],
        names=present or ["_none"],
    )
    columns: dict[str, Any] = {
        "time": from_numpy(block.time),
        **{name: block.meta.column(name) for name in block.meta.column_names},
        "prediction": block.prediction,
    }
    if binary and block.probability is not None:
        columns["probability"] = from_numpy(block.probability)
    columns["inputs"] = inputs
    return pa.table(columns)


def _groups(meta: pa.Table) -> list[tuple[tuple[str, str], np.ndarray]]:
    """Row masks per (version, role)."""
    version = pc.fill_null(meta["model_version"], strings([""])[0])
    role = meta["role"]
    out = []
    for v in pc.unique(version).to_pylist():
        same_version = booleans(pc.equal(version, strings([str(v)])[0]))
        chosen = role.take(from_numpy(np.flatnonzero(same_version)))
        for r in pc.unique(chosen).to_pylist():
            mask = same_version & booleans(pc.equal(role, strings([str(r)])[0]))
            out.append(((str(v), str(r)), mask))
    return out


def _subset(block: LogRows, mask: np.ndarray) -> LogRows:
    if mask.all():
        return block
    index = from_numpy(np.flatnonzero(mask))
    version = block.meta["model_version"].take(index) if block.meta is not None else None
    versions = tuple(sorted({str(v) for v in pc.unique(version).to_pylist()})) if version else ()
    return LogRows(
        inputs=block.inputs.take(index),
        present=block.present,
        time=block.time[mask],
        versions=versions,
        prediction=block.prediction.take(index),
        probability=None if block.probability is None else block.probability[mask],
        typed=block.typed,
    )


def _remove(path: Path) -> None:
    """Delete a compacted JSON Lines file durably; its day folder too once empty."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
    with suppress(OSError):  # other files remain (or a writer recreated it)
        path.parent.rmdir()


def expire(root: Path, retention_days: int, *, now: float, grace: float = GRACE_SECONDS) -> int:
    """Delete the days of a model's log that ended more than ``retention_days`` ago: compacted
    records first (their parts are no longer read), then partitions and JSON Lines folders.
    Returns how many days were deleted."""
    cutoff = now - retention_days * _DAY
    days: set[str] = set()

    def old(day: str) -> bool:
        start = day_start(day)
        return start is not None and start + _DAY <= cutoff

    for (day, _), record in read_records(root).items():
        if old(day):
            (root / COMPACTED / DONE / day / f"{record.stem}.json").unlink(missing_ok=True)
            days.add(day)
    for day_dir in (
        (root / COMPACTED / DONE).glob("*") if (root / COMPACTED / DONE).is_dir() else []
    ):
        if old(day_dir.name):
            shutil.rmtree(day_dir, ignore_errors=True)
    for folder in list(partitions(root)):
        day = folder.name.removeprefix("day=")
        if old(day):
            shutil.rmtree(folder, ignore_errors=True)
            days.add(day)
    for folder in day_folders(root):
        if old(folder.name) and all(f.stat().st_mtime + grace <= now for f in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
            days.add(folder.name)
    return len(days)
