"""Writing a result table to a file whose format its suffix names (or the caller chooses).

``keel predict -o scored.csv`` writes CSV, ``-o scored.parquet`` Parquet, ``-o scored.jsonl``
one JSON object a line and ``-o scored.json`` one JSON array: :func:`table_format` reads the
suffix (an explicit format wins, and must agree with a suffix it contradicts) and refuses one it
does not know, naming it and the accepted ones. :class:`TableWriter` writes a scored file in
one pass as its batches come: Parquet by row group, the other formats by DuckDB's ``COPY``
reading the batches as a stream under the same memory cap as the ingest
(:data:`keel.data.scan.MEMORY_LIMIT`), so a file of any size is written once, in bounded
memory; CSV is written with a header, missing values as empty fields.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.parquet as pq

from keel.errors import ConfigError

__all__ = [
    "SUFFIXES",
    "TableFormat",
    "TableWriter",
    "table_format",
    "write_table",
]

TableFormat = Literal["parquet", "csv", "jsonl", "json"]
#: File suffixes (lower case) and the format each names.
SUFFIXES: Mapping[str, TableFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}


def table_format(
    output: str | Path,
    chosen: str | None = None,
    *,
    accepted: Iterable[str] = get_args(TableFormat),
    option: str = "--output",
    override: str = "--output-format",
) -> str:
    """The format to write ``output`` in: ``chosen`` when given, else the one its suffix names.

    Args:
        output: The file to write.
        chosen: The format asked for explicitly (None: from the suffix).
        accepted: The formats the caller writes (a subset of :data:`SUFFIXES`' values, or its
            own, such as ``keel explain``'s ``json`` document).
        option: How the caller names ``output`` in messages (``--output``, ``output``).
        override: How the caller names ``chosen`` in messages.

    Raises:
        ConfigError: ``chosen`` is not accepted, contradicts the suffix, or there is no
            ``chosen`` and the suffix is unknown; the message names the suffix and lists the
            accepted ones.
    """
    formats = tuple(accepted)
    suffix = Path(output).suffix.lower()
    implied = SUFFIXES.get(suffix)
    if chosen is not None:
        if chosen not in formats:
            listed = ", ".join(formats)
            msg = f"{override} {chosen}: not a format keel writes here; use one of {listed}."
            raise ConfigError(msg, field=override.lstrip("-"))
        if implied is not None and implied != chosen:
            msg = (f"{override} {chosen} does not match {option} {output} (a {implied} file); "
                   "drop one or make them agree.")  # fmt: skip
            raise ConfigError(msg, field=override.lstrip("-"))
        return chosen
    if implied is None or implied not in formats:
        known = ", ".join(s for s, f in SUFFIXES.items() if f in formats)
        named = f"the suffix '{suffix}'" if suffix else "no suffix"
        msg = (f"{option} {output}: {named} names no format keel writes here; use one of "
               f"{known}, or pass {override} ({'|'.join(formats)}).")  # fmt: skip
        raise ConfigError(msg, field=option.lstrip("-"))
    return implied


def write_table(table: pa.Table, target: str | Path, fmt: str) -> None:
    """Write an in-memory table to ``target`` as ``fmt`` (temporary file, then rename)."""
    if fmt == "parquet":
        _atomic(Path(target), lambda tmp: pq.write_table(table, tmp))
        return
    _atomic(Path(target), lambda tmp: _duck_copy("SELECT * FROM rows", tmp, fmt, table))


def _atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Run ``write(tmp)`` on this writer's own temporary file beside ``target``, then rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


_OPTIONS = {
    "csv": "FORMAT CSV, HEADER true",
    "jsonl": "FORMAT JSON",
    "json": "FORMAT JSON, ARRAY true",
}


def _duck_copy(
    select: str, target: Path, fmt: str, rows: pa.Table | pa.RecordBatchReader | None
) -> None:
    """DuckDB's ``COPY (select) TO target``; ``rows`` is the table ``select`` may read."""
    from keel.data.scan import connect, sql

    if fmt not in _OPTIONS:
        raise ConfigError(f"cannot write {fmt}; write one of parquet, {', '.join(_OPTIONS)}.")
    with tempfile.TemporaryDirectory(prefix="keel-export-") as spill, connect(Path(spill)) as con:
        if rows is not None:
            con.register("rows", rows)
        con.execute(f"COPY ({select}) TO {sql(str(target))} ({_OPTIONS[fmt]})")


class TableWriter:
    """Tables appended to one file as ``fmt``, in one pass: Parquet by row group, the other
    formats by DuckDB's ``COPY`` reading the tables as they come (a thread on a stream of
    Arrow batches, at most a few batches held), so a scored file is written once, never as
    Parquet first and converted.

    Use :meth:`write` for each table (all with the schema of the first), then :meth:`close`;
    ``close(failed=True)`` after an error stops the copy (the caller discards the file).
    """

    _DONE = object()

    def __init__(self, target: str | Path, fmt: str) -> None:
        if fmt != "parquet" and fmt not in _OPTIONS:
            raise ConfigError(f"cannot write {fmt}; write one of parquet, {', '.join(_OPTIONS)}.")
        self.target = Path(target)
        self.fmt = fmt
        self._parquet: pq.ParquetWriter | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (its schema is the first table's)."""
        if self.fmt == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.target, table.schema)
            self._parquet.write_table(table)
            return
        if self._thread is None:
            self._start(table.schema)
        for batch in table.to_batches():
            self._put(batch)

    def close(self, *, failed: bool = False) -> None:
        """Finish the file (an empty one with no columns when nothing was written); with
        ``failed`` stop without finishing it.

        Raises:
            The copy's error, when it failed.
        """
        if self.fmt == "parquet":
            if self._parquet is not None:
                self._parquet.close()
            elif not failed:
                pq.write_table(pa.table({}), self.target)
            return
        if self._thread is None:
            if not failed:  # no table: no columns either
                self.target.write_bytes(b"[]\n" if self.fmt == "json" else b"")
            return
        if failed:
            self._stop.set()
        self._put(self._DONE)
        self._thread.join()
        if self._error is not None and not failed:
            raise self._error

    def _start(self, schema: pa.Schema) -> None:
        def batches() -> Iterator[pa.RecordBatch]:
            while not self._stop.is_set():
                item = self._queue.get()
                if item is self._DONE:
                    return
                assert isinstance(item, pa.RecordBatch)
                yield item

        def copy() -> None:
            try:
                reader = pa.RecordBatchReader.from_batches(schema, batches())
                _duck_copy("SELECT * FROM rows", self.target, self.fmt, reader)
            except BaseException as exc:  # re-raised by write() or close()
                self._error = exc
                self._stop.set()
                while self._queue.get() is not self._DONE:  # let write() return
                    pass

        self._thread = threading.Thread(target=copy, name="keel-export", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        if self._error is not None and item is not self._DONE:
            raise self._error
        self._queue.put(item)
