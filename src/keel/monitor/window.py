"""Windows over the prediction log, read in bounded memory.

The log is JSON Lines under ``<dir>/<model>/<YYYY-MM-DD>/<pid>-<start>.jsonl``, one line per
request (:mod:`keel.serve.predlog`), and closed files are compacted into Parquet partitions by
version, role and day (:mod:`keel.monitor.logfiles`, :mod:`keel.monitor.compact`).
:func:`read_log` reads both, oldest day first, each request once: the Parquet parts of the
chosen version and role only (the others are never opened), then the JSON Lines not yet
compacted. It streams them file by file, block by block
(Arrow's JSON reader with the model's input types, so no Python loop over rows), keeps the
requests of the chosen model version, deployment role (a record without one is ``primary``) and
time range, and yields one :class:`LogRows` per block: the inputs as a table, and per row the
request time, prediction and probability. A file whose values do not fit the model's types (a
client that sent ``"42"`` for a number, or ``"Yes"`` for a boolean) is read from that point
with orjson (:mod:`keel.monitor.slowlog`), each mixed column as text for the coercion rules to
read as serving does; a torn last line (a crash mid-write) is skipped. Memory is one block
(``BLOCK_BYTES``) at a time, whatever the log's size.

A :class:`WindowSpec` cuts the rows into panes, by time (UTC-aligned: ``1d`` panes start at
midnight), by UTC calendar month (``1mo``, ``3mo``) or by row count (in the log's order: by day,
then by writer), and a window is one pane (tumbling) or ``size / step`` consecutive panes
(sliding). Monitoring keeps mergeable statistics per pane and merges them per window, so a
sliding window costs no second read.

The time is the request's (when the server logged it) unless ``monitor.time_column`` names an
input column that carries the rows' own event time (a date, as NannyML's ``timestamp_column``;
:mod:`keel.monitor.eventtime` parses it and moves blocks onto it).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from keel.errors import ConfigError
from keel.monitor.counts import booleans, strings
from keel.monitor.logfiles import Part, day_folders, day_start, read_records
from keel.validate.arrays import from_numpy, numbers

__all__ = [
    "BLOCK_BYTES",
    "EPOCH_MONTH",
    "LogFilter",
    "LogRows",
    "WindowSpec",
    "day_in",
    "keep_selected",
    "log_sources",
    "parse_window",
    "part_in",
    "read_jsonl",
    "read_log",
    "read_parquet",
    "request_instances",
    "window_span",
]

BLOCK_BYTES = 8 << 20  # JSON bytes parsed at a time
BATCH_ROWS = 1 << 18  # Parquet rows read at a time
WHOLE_FILE_BYTES = 64 << 20  # files up to this size are read into memory once
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SPEC = re.compile(r"^\s*(\d+)\s*(mo|months?|s|m|h|d|w|rows?)\s*$")
EPOCH_MONTH = np.datetime64("1970-01", "M")


def window_span(start: object, end: object) -> str:
    """A window as ``start .. end`` (an open side as ``...``); the whole log as ``all``."""
    first, last = str(start or "").strip(), str(end or "").strip()
    if not first and not last:
        return "all"
    return f"{first or '...'} .. {last or '...'}"


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Windows of ``size`` seconds, UTC calendar months or rows, starting every ``step``
    (``step == size``: tumbling).

    ``kind == "all"`` is one window over everything selected.
    """

    kind: Literal["time", "months", "rows", "all"]
    size: int = 0
    step: int = 0

    @property
    def panes(self) -> int:
        """Panes per window."""
        return 1 if self.kind == "all" else self.size // self.step

    def describe(self) -> str:
        """``1d``, ``1000rows``, ``7d every 1d`` or ``all``."""
        if self.kind == "all":
            return "all"
        text = _spelled(self.size, self.kind)
        return text if self.step == self.size else f"{text} every {_spelled(self.step, self.kind)}"

    def pane_of(self, times: np.ndarray, first_row: int) -> np.ndarray:
        """Each row's pane: ``floor(time / step)``, months since 1970-01 over ``step``, or
        ``row / step`` (int64)."""
        if self.kind == "all":
            return np.zeros(times.size, dtype=np.int64)
        if self.kind == "time":
            return np.floor(times / self.step).astype(np.int64)
        if self.kind == "months":
            seconds = np.floor(np.nan_to_num(times)).astype("datetime64[s]")
            months = (seconds.astype("datetime64[M]") - EPOCH_MONTH).astype(np.int64)
            panes: np.ndarray = np.floor_divide(months, self.step)
            return panes
        return (np.arange(times.size, dtype=np.int64) + first_row) // self.step

    def bounds(self, first_pane: int) -> tuple[str, str]:
        """The window's start and end (ISO UTC times, or row numbers) from its first pane."""
        if self.kind == "all":
            return "", ""
        start, end = first_pane * self.step, first_pane * self.step + self.size
        if self.kind == "rows":
            return str(start), str(end)
        if self.kind == "months":
            return _month_iso(start), _month_iso(end)
        return _iso(start), _iso(end)


def _month_iso(months: int) -> str:
    """The start of the ``months``-th month after 1970-01 (ISO UTC)."""
    return f"{EPOCH_MONTH + np.timedelta64(months, 'M')}-01T00:00:00Z"


def _spelled(value: int, kind: str) -> str:
    if kind == "rows":
        return f"{value}rows"
    if kind == "months":
        return f"{value}mo"
    for unit in ("d", "h", "m"):
        if value % _UNITS[unit] == 0:
            return f"{value // _UNITS[unit]}{unit}"
    return f"{value}s"


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _amount(text: str, field: str) -> tuple[int, Literal["time", "months", "rows"]]:
    match = _SPEC.match(text)
    if match is None or int(match.group(1)) <= 0:
        msg = (
            f"{field}: '{text}' is not a window; write a positive number and a unit: 30m, 6h, "
            "1d, 1w (time), 1mo (UTC calendar months) or 1000rows (row count)."
        )
        raise ConfigError(msg, field=field)
    number, unit = int(match.group(1)), match.group(2)
    if unit.startswith("row"):
        return number, "rows"
    if unit.startswith("mo"):
        return number, "months"
    return number * _UNITS[unit], "time"


def parse_window(
    window: str | None, step: str | None = None, *, field: str = "monitor.window"
) -> WindowSpec:
    """A window spec from text (``1d``, ``6h``, ``1mo``, ``1000rows``; ``step`` for sliding
    windows).

    Raises:
        ConfigError: Unknown unit, a step of another kind than the window, or a window that is
            not a whole number of steps (names ``field``).
    """
    if window is None or window.strip().lower() in ("", "all"):
        if step:
            msg = (
                f"{field}: a step ('{step}') needs a window to slide; give one that the step "
                f"divides, e.g. --window 6h --step 1h (or monitor.window in keel.yaml)."
            )
            raise ConfigError(msg, field=field)
        return WindowSpec("all")
    size, kind = _amount(window.lower(), field)
    if not step:
        return WindowSpec(kind, size, size)
    every, step_kind = _amount(step.lower(), f"{field} step")
    if step_kind != kind or every > size or size % every:
        msg = (
            f"{field}: a sliding window of {window} cannot step by {step}; the step must be of "
            f"the same kind (time, months or rows) and divide the window (e.g. 7d every 1d)."
        )
        raise ConfigError(msg, field=field)
    return WindowSpec(kind, size, every)


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which logged requests to read: version, role (None: all) and ``[since, until)`` times."""

    version: str | None = None
    role: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class LogRows:
    """A block of logged rows (one per served instance) that passed the filter.

    ``inputs`` holds one column per model input (null where a request lacked it); ``present``
    says which inputs the block's requests carried at all; ``probability`` is P(positive) for a
    binary classifier (NaN where not logged), else None.
    """

    inputs: pa.Table
    present: frozenset[str]
    time: np.ndarray
    versions: tuple[str, ...]
    prediction: pa.ChunkedArray
    probability: np.ndarray | None
    typed: bool = True  # read with the declared types (False: the orjson path, mixed types)
    meta: pa.Table | None = None  # per row: request_id, model_version, role, pipeline, hashed
    instance: np.ndarray | None = None  # with meta: each row's position in its request

    @property
    def rows(self) -> int:
        """Rows in the block."""
        return int(self.inputs.num_rows)


def read_log(
    directory: Path,
    model: str,
    types: dict[str, pa.DataType],
    *,
    select: LogFilter = LogFilter(),
    prediction_type: pa.DataType = pa.string(),
    binary: bool = False,
    skip: frozenset[Part] = frozenset(),
    meta: bool = False,
) -> Iterator[LogRows]:
    """Stream the logged rows of ``model`` that ``select`` keeps, oldest day first.

    Args:
        directory: The log's root (``.keel/predictions``).
        model: The model's name.
        types: Each input column's Arrow type (float64, string or bool), as training read it.
        select: Version, role and time range to keep.
        prediction_type: The logged predictions' type (string labels, float64 values).
        binary: Read ``probabilities`` as P(positive).
        skip: Compacted parts not to read (their stored counts were used instead).
        meta: Also each row's request id, version, role and position in its request (what
            joining labels needs: keel.monitor.performance joins them from these blocks, so
            the log is read once).
    """
    sources = [s for s in log_sources(directory / model, select) if s not in skip]
    if not sources:
        return

    def blocks() -> Iterator[LogRows]:
        for source in sources:
            if isinstance(source, Part):
                yield from read_parquet(
                    source.path, types, select, prediction_type, binary, meta=meta
                )
            else:
                yield from read_jsonl(source, types, select, prediction_type, binary, meta=meta)

    yield from _ahead(blocks())


def log_sources(root: Path, select: LogFilter) -> list[Part | Path]:
    """The compacted parts and JSON Lines files that can hold selected requests, by day.

    Parts of another version or role than ``select`` names, and days outside its time range,
    are pruned without being opened; a JSON Lines file already compacted is left out (its
    parts hold its rows).
    """
    records = read_records(root)
    sources: dict[str, list[Part | Path]] = {}
    for record in records.values():
        if day_in(record.day, select):
            sources.setdefault(record.day, []).extend(p for p in record.parts if part_in(p, select))
    for day in day_folders(root):
        if day_in(day.name, select):
            files = [
                f
                for f in sorted(day.glob("*.jsonl"))
                if (day.name, f.stem) not in records or not records[(day.name, f.stem)].covers(f)
            ]
            sources.setdefault(day.name, []).extend(files)
    return [source for day in sorted(sources) for source in sources[day]]


def part_in(part: Part, select: LogFilter) -> bool:
    """Whether a compacted part's version and role are selected."""
    if select.version is not None and part.version != select.version:
        return False
    return select.role is None or part.role == select.role


def _ahead(blocks: Iterator[LogRows]) -> Iterator[LogRows]:
    """The same blocks, the next one parsed in a background thread while this one is counted
    (Arrow's parser releases the GIL): one block ahead, so memory stays bounded."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(next, blocks, None)
        try:
            while (block := pending.result()) is not None:
                pending = reader.submit(next, blocks, None)
                yield block
        finally:
            pending.cancel()
            if not pending.cancelled():
                pending.exception()  # let a running parse finish before the files close


def day_in(name: str, select: LogFilter) -> bool:
    """Whether a ``YYYY-MM-DD`` day can hold requests in the time range (others: yes)."""
    start = day_start(name)
    if start is None:
        return True
    if select.since is not None and start + 86_400 <= select.since:
        return False
    return not (select.until is not None and start >= select.until)


_META_FIELDS = [
    ("request_id", pa.string()),
    ("feature_pipeline", pa.string()),
    ("hashed", pa.list_(pa.string())),  # inputs the server logged as keyed hashes (pii)
]


def _schema(
    types: dict[str, pa.DataType], prediction_type: pa.DataType, binary: bool, meta: bool
) -> pa.Schema:
    row = pa.struct([(name, t) for name, t in types.items()])
    fields = [
        ("time", pa.float64()),
        ("model_version", pa.string()),
        ("role", pa.string()),
        *(_META_FIELDS if meta else []),
        ("inputs", pa.list_(row)),
        ("predictions", pa.list_(prediction_type)),
    ]
    if binary:
        fields.append(("probabilities", pa.list_(pa.float64())))
    return pa.schema(fields)


def read_jsonl(
    path: Path,
    types: dict[str, pa.DataType],
    select: LogFilter,
    prediction_type: pa.DataType,
    binary: bool,
    *,
    meta: bool = False,
) -> Iterator[LogRows]:
    """One JSON Lines file through Arrow's JSON reader; from the first block it cannot type,
    orjson. ``meta``: also each row's request id, version, role and pipeline hash."""
    # read once when it is small enough (the key scan and the parser share the bytes)
    data = path.read_bytes() if path.stat().st_size <= WHOLE_FILE_BYTES else None
    present = _present(path, data, types)
    done = 0  # requests already yielded: the orjson path resumes after them
    parse = pj.ParseOptions(
        explicit_schema=_schema(types, prediction_type, binary, meta),
        unexpected_field_behavior="ignore",
    )
    source: Any = io.BytesIO(data) if data is not None else path
    try:
        reader = pj.open_json(
            source, read_options=pj.ReadOptions(block_size=BLOCK_BYTES), parse_options=parse
        )
        for batch in reader:
            done += batch.num_rows
            rows = _rows(pa.Table.from_batches([batch]), types, present, select, binary, meta)
            if rows is not None:
                yield rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        from keel.monitor.slowlog import read_slow  # imports this module

        yield from read_slow(path, done, types, present, select, binary, meta)


def read_parquet(
    path: Path,
    types: dict[str, pa.DataType],
    select: LogFilter,
    prediction_type: pa.DataType,
    binary: bool,
    *,
    meta: bool = False,
) -> Iterator[LogRows]:
    """One compacted part, ``BATCH_ROWS`` rows at a time, only the columns monitoring reads.

    Inputs stored with the declared types are read as typed; any other (a column the
    compaction read as text, mixed JSON types) goes through the coercion rules like the orjson
    path of the JSON reader. ``meta``: also each row's request id, version, role (and pipeline
    hash and hashed inputs where the part has them) and position in its request.
    """
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    schema = handle.schema_arrow
    struct_type = schema.field("inputs").type
    stored = {
        struct_type.field(i).name: struct_type.field(i).type for i in range(struct_type.num_fields)
    }
    present = frozenset(n for n in types if n in stored)
    typed = all(stored[n] == types[n] for n in present)
    wanted = ["time", "model_version", "role", "prediction", "inputs"]
    described = [n for n in ("request_id", *(n for n, _ in _META_FIELDS[1:])) if n in schema.names]
    wanted += described if meta else []
    scored = binary and "probability" in schema.names
    previous: str | None = None  # the last request id of the previous batch, and its rows
    count = 0
    for batch in handle.iter_batches(
        batch_size=BATCH_ROWS, columns=[*wanted, "probability"] if scored else wanted
    ):
        table = keep_selected(pa.Table.from_batches([batch]), select)
        if table.num_rows == 0:
            continue
        described_rows = instance = None
        if meta:
            ids = (  # a part written without request ids joins no label by id
                table["request_id"].combine_chunks()
                if "request_id" in described
                else pa.nulls(table.num_rows, pa.string())
            )
            instance = request_instances(ids, previous, count)
            previous, count = ids[len(ids) - 1].as_py(), int(instance[-1]) + 1
            role = pc.fill_null(table["role"], strings(["primary"])[0])
            described_rows = pa.table(
                {"request_id": ids, "model_version": table["model_version"], "role": role}
                | {n: table[n] for n in described if n != "request_id"}
            )
        struct = table["inputs"].combine_chunks()
        columns = {
            name: struct.field(name) if name in stored else pa.nulls(len(struct), types[name])
            for name in types
        }
        probability = None
        if binary:
            probability = (
                numbers(table["probability"], nulls="nan").astype(np.float64)
                if scored
                else np.full(table.num_rows, np.nan)
            )
        yield LogRows(
            inputs=pa.table(columns),
            present=present,
            time=np.asarray(numbers(table["time"], nulls="nan"), dtype=np.float64),
            versions=tuple(sorted(str(v) for v in pc.unique(table["model_version"]).to_pylist())),
            prediction=table["prediction"],  # the report casts it to the target's kind
            probability=probability,
            typed=typed,
            meta=described_rows,
            instance=instance,
        )


def request_instances(ids: pa.Array, previous: str | None, count: int) -> np.ndarray:
    """Each row's position within its request (a run of one request id; one request's rows
    are consecutive in a compacted part), vectorised; the first run continues the previous
    batch's request (``previous``, ``count`` rows so far) when it has the same id."""
    n = len(ids)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = ~booleans(pc.equal(ids.slice(1), ids.slice(0, n - 1)))
    if n and previous is not None and ids[0].as_py() == previous:
        new[0] = False
    starts = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    instance = np.arange(n, dtype=np.int64) - starts
    if n and not new[0]:
        first_end = int(np.argmax(new)) if new.any() else n
        instance[:first_end] += count
    return instance


def _present(path: Path, data: bytes | None, types: dict[str, pa.DataType]) -> frozenset[str]:
    """Inputs whose key occurs in the file (the JSON reader fills an absent key with null)."""
    if data is None:
        found: set[str] = set()
        with path.open("rb") as handle:
            while chunk := handle.read(BLOCK_BYTES):
                found.update(n for n in types if _key(n) in chunk)
        return frozenset(found)
    return frozenset(n for n in types if _key(n) in data)


def _key(name: str) -> bytes:
    return orjson.dumps(name) + b":"


def keep_selected(table: pa.Table, select: LogFilter) -> pa.Table:
    """The requests the filter keeps (scalars built from buffers: ``pa.scalar`` imports
    pandas)."""
    mask = pc.is_valid(table["time"])
    if select.version is not None:
        mask = pc.and_(mask, pc.equal(table["model_version"], strings([select.version])[0]))
    if select.role is not None:
        same = pc.equal(table["role"], strings([select.role])[0])
        if select.role == "primary":  # a record without a role was served by the primary
            same = pc.or_kleene(same, pc.is_null(table["role"]))
        mask = pc.and_(mask, same)
    if select.since is not None:
        mask = pc.and_(mask, pc.greater_equal(table["time"], _float(select.since)))
    if select.until is not None:
        mask = pc.and_(mask, pc.less(table["time"], _float(select.until)))
    kept = booleans(mask)
    if kept.all():
        return table
    return table.take(from_numpy(np.flatnonzero(kept)))


def _float(value: float) -> pa.Scalar:
    return from_numpy(np.array([value], dtype=np.float64))[0]


def _rows(
    table: pa.Table,
    types: dict[str, pa.DataType],
    present: frozenset[str],
    select: LogFilter,
    binary: bool,
    meta: bool = False,
) -> LogRows | None:
    """Requests flattened to rows; None when the filter kept none."""
    table = keep_selected(table, select)
    if table.num_rows == 0:
        return None
    inputs = table["inputs"].combine_chunks()
    rows = pc.list_flatten(inputs)
    parents = numbers(pc.list_parent_indices(inputs))
    predictions = pc.list_flatten(table["predictions"].combine_chunks())
    if len(predictions) != len(rows):
        return None  # a malformed request (answers do not match its rows): not counted
    columns = {name: rows.field(name) for name in types}
    times = numbers(table["time"], nulls="nan")[parents]
    versions = tuple(sorted(str(v) for v in pc.unique(table["model_version"]).to_pylist() if v))
    probability = None
    if binary:
        probs = table["probabilities"].combine_chunks()
        lengths = np.nan_to_num(numbers(pc.list_value_length(probs), nulls="nan")).astype(int)
        flat = numbers(pc.list_flatten(probs), nulls="nan").astype(np.float64)
        if np.array_equal(lengths, numbers(pc.list_value_length(inputs))):
            probability = flat
        else:  # some requests logged no probabilities: NaN for their rows
            probability = np.full(len(rows), np.nan)
            probability[lengths[parents] > 0] = flat
    instance = None
    if meta:  # each row's position in its request's list
        lengths = numbers(pc.list_value_length(inputs), nulls="nan")
        lengths = np.nan_to_num(lengths).astype(np.int64)
        instance = np.arange(len(parents), dtype=np.int64) - (np.cumsum(lengths) - lengths)[parents]
    return LogRows(
        inputs=pa.table(columns),
        present=present,
        time=np.asarray(times, dtype=np.float64),
        versions=versions,
        prediction=pa.chunked_array([predictions]),
        probability=probability,
        meta=_meta(table, parents) if meta else None,
        instance=instance,
    )


def _meta(table: pa.Table, parents: np.ndarray) -> pa.Table:
    """Each row's request id, version, role (``primary`` when absent) and pipeline hash."""
    index = from_numpy(parents.astype(np.int64))
    role = pc.fill_null(table["role"], strings(["primary"])[0])
    return pa.table(
        {
            "request_id": table["request_id"].take(index),
            "model_version": table["model_version"].take(index),
            "role": role.take(index),
            "feature_pipeline": table["feature_pipeline"].take(index),
            "hashed": table["hashed"].take(index),
        }
    )
