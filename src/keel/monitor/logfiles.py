"""Where the prediction log lies on disk: JSON Lines being written, and compacted Parquet.

The server appends JSON Lines to ``<dir>/<model>/<YYYY-MM-DD>/<pid>-<start>.jsonl``
(:mod:`keel.serve.predlog`): the day is the UTC day of the request, so a file takes no more lines
once its day is over and the writer has flushed (its ``interval``, half a second by default).
Compaction (:mod:`keel.monitor.compact`) rewrites such closed files as Parquet, one part per
model version and deployment role::

    <dir>/<model>/_compacted/version=<v>/role=<r>/day=<YYYY-MM-DD>/<pid>-<start>.<n>.parquet
    <dir>/<model>/_compacted/version=<v>/role=<r>/day=<YYYY-MM-DD>/<pid>-<start>.<n>.sketch
    <dir>/<model>/_compacted/_done/<YYYY-MM-DD>/<pid>-<start>.json

The ``_done`` record is written last, after every part is durable, and lists the parts: a part
counts only once its record exists, and a JSON Lines file whose record exists is not read
again (it is deleted after the record). So at every moment each request is read exactly once,
whatever point a compaction crashed at; running it again finishes the job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson

__all__ = [
    "COMPACTED",
    "DONE",
    "Part",
    "Record",
    "day_folders",
    "day_start",
    "durable_write",
    "fsync_dir",
    "logged_requests",
    "part_dir",
    "partition_values",
    "partitions",
    "read_records",
    "record_body",
]

COMPACTED = "_compacted"
DONE = "_done"
_DAY = 86_400


@dataclass(frozen=True, slots=True)
class Part:
    """One compacted Parquet file: a source file's rows of one version and role."""

    path: Path
    version: str
    role: str
    day: str
    rows: int
    sketch: Path | None  # the stored counts beside it, when the version was registered


@dataclass(frozen=True, slots=True)
class Record:
    """A compacted JSON Lines file: its day, name (stem) and the parts that hold its rows."""

    day: str
    stem: str
    rows: int
    parts: tuple[Part, ...]
    source_bytes: int | None = None  # the JSON Lines file's size when it was compacted

    def covers(self, path: Path) -> bool:
        """Whether the JSON Lines file at ``path`` is the one compacted (so not to be read):
        a file written again under the same name (it never happens to a server's files, whose
        names carry the writer's pid and start time) is read, never silently dropped."""
        try:
            return self.source_bytes is None or path.stat().st_size == self.source_bytes
        except FileNotFoundError:
            return True


def logged_requests(path: Path, skip: int = 0) -> Iterator[dict[str, Any]]:
    """The requests of a JSON Lines log file after its first ``skip``, parsed one line at a
    time; a torn line (a writer killed mid-write) or one that is not an object is left out and
    not counted."""
    seen = 0
    with path.open("rb") as handle:
        for line in handle:
            try:
                request = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(request, dict):
                continue
            seen += 1
            if seen > skip:
                yield request


def day_start(name: str) -> float | None:
    """The UTC start of a ``YYYY-MM-DD`` day, or None for another name."""
    try:
        return datetime.strptime(name, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def day_folders(root: Path) -> list[Path]:
    """The ``YYYY-MM-DD`` folders of a model's log, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and day_start(p.name) is not None)


def part_dir(root: Path, version: str, role: str, day: str) -> Path:
    """The partition folder of a version, role and day (values percent-encoded)."""
    return (
        root / COMPACTED / f"version={quote(version, safe='')}" / f"role={quote(role, safe='')}"
        f"/day={day}"
    )


def read_records(root: Path) -> dict[tuple[str, str], Record]:
    """Every completed compaction of a model's log, by (day, stem)."""
    done = root / COMPACTED / DONE
    if not done.is_dir():
        return {}
    records = {}
    for day in sorted(done.iterdir()):
        for path in sorted(day.glob("*.json")):
            record = _record(root, day.name, path)
            if record is not None:
                records[(record.day, record.stem)] = record
    return records


def _record(root: Path, day: str, path: Path) -> Record | None:
    try:
        body: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None  # a record is written whole (renamed into place): this is not one
    parts = tuple(
        Part(
            path=root / p["path"],
            version=str(p["version"]),
            role=str(p["role"]),
            day=day,
            rows=int(p["rows"]),
            sketch=None if p.get("sketch") is None else root / p["sketch"],
        )
        for p in body.get("parts", [])
    )
    size = body.get("source_bytes")
    return Record(
        day=day,
        stem=path.stem,
        rows=int(body.get("rows", 0)),
        parts=parts,
        source_bytes=None if size is None else int(size),
    )


def record_body(record: Record, root: Path) -> bytes:
    """A record as its JSON file holds it (paths relative to the model's log)."""
    return orjson.dumps(
        {
            "rows": record.rows,
            "source_bytes": record.source_bytes,
            "parts": [
                {
                    "path": str(p.path.relative_to(root)),
                    "version": p.version,
                    "role": p.role,
                    "rows": p.rows,
                    "sketch": None if p.sketch is None else str(p.sketch.relative_to(root)),
                }
                for p in record.parts
            ],
        },
        option=orjson.OPT_INDENT_2,
    )


def partition_values(folder: Path) -> tuple[str, str] | None:
    """(version, role) of a ``version=<v>/role=<r>/day=<d>`` folder."""
    role, version = folder.parent.name, folder.parent.parent.name
    if not role.startswith("role=") or not version.startswith("version="):
        return None
    return unquote(version.removeprefix("version=")), unquote(role.removeprefix("role="))


def partitions(root: Path) -> Iterator[Path]:
    """Every ``day=`` partition folder of a model's compacted log."""
    base = root / COMPACTED
    if base.is_dir():
        yield from sorted(base.glob("version=*/role=*/day=*"))


def fsync_dir(path: Path) -> None:
    """Make a rename or deletion in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably: temp file, fsync, rename, fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    fsync_dir(path.parent)
