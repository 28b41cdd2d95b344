"""One reader for data files: the CSV and Parquet files that `keel validate`, `keel predict`,
`keel monitor` and `keel data show` are given, read as ingestion reads a declared source.

A CSV file goes through the same DuckDB scan as ingestion (:func:`keel.data.scan.open_scan`):
the dialect (delimiter, quote, header, encoding) is sniffed from a sample unless given, string
cells are trimmed, empty cells and NA tokens are nulls, so the table equals the snapshot's.
Two things differ from ingestion, because a command cannot stop to edit keel.yaml:

- a line that does not parse (too many or too few fields, broken quoting, bytes that do not
  decode) is kept as a :class:`keel.data.dialect.BadLine` with its file and line number and
  the rest is read;
- a cell that does not fit the type sniffed from the sample widens its column (int to float to
  text) and the file is read again, instead of rejecting the row;
- when most lines fail because a broken quote misled the sniffer, the lines whose quoting does
  not parse are set aside (:mod:`keel.data.quoting`, files read whole) and the rest is read.

Files up to 64 MiB are read whole once; larger ones are streamed in batches on every pass, in
bounded memory (DuckDB spills to a temporary directory). Parquet files are left to the callers'
own row-group streaming: :func:`open_file` returns their path.
"""

from __future__ import annotations

import re
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from keel.data.dialect import BadLine, Dialect, ReadOptions, bad_line_reason, count_fields
from keel.errors import ConfigError, DataValidationError

if TYPE_CHECKING:
    import duckdb
    import numpy as np

    from keel.data.quoting import BrokenQuotes
    from keel.data.scan import Scan

__all__ = [
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "STREAM_CSV_BYTES",
    "BadLine",
    "CsvFile",
    "CsvTypeChanged",
    "Dialect",
    "ReadOptions",
    "dialect_of",
    "file_columns",
    "open_file",
    "read_file",
    "show_file",
]

#: Extensions read as delimited text (anything else that is not Parquet is refused).
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".tab", ".psv", ".dat", ".data")
PARQUET_SUFFIXES = (".parquet", ".pq")
STREAM_CSV_BYTES = 64 << 20  # larger CSV files are streamed (a whole read takes ~3.5x in RAM)
_STREAM_BATCH = 1 << 16  # rows DuckDB hands over at a time; tables() regroups them


class CsvTypeChanged(DataValidationError):
    """A streamed CSV's later cells do not fit a column's sniffed type (read it again)."""


@dataclass(eq=False)
class CsvFile:
    """A CSV file read through the ingestion scan, whole or (over 64 MiB) in batches.

    Use :meth:`open`. A streamed file's types come from DuckDB's sample; when a later cell does
    not fit its column, :meth:`tables` raises :class:`CsvTypeChanged` at the end of the pass and
    :meth:`retype` settles the types (:func:`keel.data.files.retyped` does both). A file read
    whole is settled when it is opened.

    Attributes:
        path: The file.
        options: What the caller gave.
        dialect: What it was read as.
        schema: Its columns and types (after ``options.columns`` renamed them).
        streamed: True when the file is read in batches on every pass.
        settled: True when every cell is known to fit its column's type.
    """

    path: Path
    options: ReadOptions
    dialect: Dialect = field(default_factory=lambda: Dialect("csv"))
    schema: pa.Schema = field(default_factory=lambda: pa.schema([]))
    streamed: bool = False
    settled: bool = False
    _table: pa.Table | None = field(default=None, repr=False)
    _raw: list[str] = field(default_factory=list, repr=False)
    _types: dict[str, str] = field(default_factory=dict, repr=False)
    _casts: dict[str, str] = field(default_factory=dict, repr=False)
    _bad: tuple[BadLine, ...] = field(default=(), repr=False)
    _kept: _Kept | None = field(default=None, repr=False, compare=False)
    _repair: BrokenQuotes | None = field(default=None, repr=False)
    _encoding: str | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path, options: ReadOptions | None = None) -> CsvFile:
        """The file, with its dialect and schema; read whole now unless it is over 64 MiB.

        Raises:
            ConfigError: No such file, or an option is wrong.
            DataValidationError: The file cannot be read as CSV at all (names it and why), or
                ``options.columns`` does not have one name per field.
        """
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: no such file.", field="path")
        if file.stat().st_size == 0:
            raise DataValidationError(f"{file}: the file is empty; there is nothing to read.")
        csv = cls(file, options or ReadOptions())
        csv.streamed = file.stat().st_size > STREAM_CSV_BYTES
        if csv.streamed:
            csv.schema = csv._settle_schema()
        else:
            csv._read_whole()
        return csv

    @property
    def bad_lines(self) -> tuple[BadLine, ...]:
        """The lines that could not be read, in file order (a streamed file: as of the last
        complete pass over every column; empty before one)."""
        return self._bad

    @property
    def first_line(self) -> int:
        """The line number of the first row (2 below a header line, else 1)."""
        return 2 if self.dialect.header else 1

    def line_numbers(self, start: int, count: int) -> np.ndarray:
        """The file line of each of the rows ``start .. start + count - 1`` (row 0 is the first
        row read), skipping the header and the :attr:`bad_lines` before them.

        Exact for a file with one line per row (a quoted cell that spans lines shifts the
        rest); for a streamed file, once a pass has found its bad lines.
        """
        import numpy as np

        rows = np.arange(start, start + count, dtype=np.int64)
        bad = np.array(sorted(b.line for b in self._bad), dtype=np.int64)
        # good rows before each bad line: row r sits after every bad line whose count is <= r
        before = bad - self.first_line - np.arange(len(bad), dtype=np.int64)
        skipped = np.searchsorted(before, rows, side="right")
        return rows + self.first_line + skipped

    def read(self) -> pa.Table:
        """The whole table (a streamed file is read through and concatenated)."""
        if self._table is not None:
            return self._table
        from keel.data.files import retyped

        return retyped(self, lambda: pa.concat_tables(self.tables()))

    def tables(
        self, columns: list[str] | None = None, batch_rows: int = 1 << 20
    ) -> Iterator[pa.Table]:
        """Tables of about ``batch_rows`` rows (only ``columns``, when given), in file order;
        at least one, with the columns, even for a file without rows.

        Raises:
            CsvTypeChanged: At the end of a streamed pass, when a cell did not fit its column's
                type; call :meth:`retype` and read again.
        """
        if self._table is not None:
            table = self._table if columns is None else self._table.select(columns)
            for start in range(0, max(table.num_rows, 1), batch_rows):
                yield table.slice(start, batch_rows)
            return
        yield from self._stream(columns, batch_rows)

    def retype(self, exc: BaseException) -> bool:
        """After :class:`CsvTypeChanged`: widen the columns that did not fit, with passes over
        the file until every cell fits; False when there is nothing to widen."""
        if not isinstance(exc, CsvTypeChanged) or self.settled or not self._casts:
            return False
        while self._casts:
            self._types |= _widened(self._casts, self.schema, self._raw)
            self._casts = {}
            if self._kept is not None:
                self._kept.scan = None  # the types changed: build the scan again
            for _ in self._stream(None, 1 << 20, settle=True):
                pass
        self.schema = self._settle_schema()
        self.settled = True
        return True

    def _scan(self, con: duckdb.DuckDBPyConnection, tmp: Path) -> Scan:
        from keel.data.scan import open_scan

        if self._repair is None:
            source = self.options.source(self.path.absolute(), self._types)
        else:  # the UTF-8 copy without the broken-quoting lines
            options = replace(self.options, encoding="utf-8")
            source = options.source(self._repair.copy, self._types)
        scan = open_scan(con, source, self.path.parent, tmp, text=frozenset(self.options.text))
        self.dialect = self._dialect(scan)
        return scan

    def _read_whole(self) -> None:
        try:
            table, rejects = self._fetch_whole()
        except DataValidationError:
            if not self._has_quotes():
                raise
            table, rejects = pa.table({}), None  # a broken quote can stop the sniffer
        if rejects is None or (_bad_count(rejects) > table.num_rows and self._has_quotes()):
            with tempfile.TemporaryDirectory(prefix="keel-quotes-") as tmp:
                repaired = self._without_broken_quotes(Path(tmp))
                if repaired is None and rejects is None:
                    table, rejects = self._fetch_whole()  # raises again, with DuckDB's reason
                if repaired is not None:
                    self._repair = repaired
                    table, rejects = self._fetch_whole()
        assert rejects is not None
        self._table = self._named(table)
        self.schema, self.settled, self._bad = self._table.schema, True, self._bad_lines(rejects)
        self._repair = None  # read: the copy is gone, only its line numbers are kept

    def _fetch_whole(self) -> tuple[pa.Table, pa.Table]:
        """The table and the rejects, read again with wider types until every cell fits."""
        while True:
            with _session() as (con, tmp):
                scan = self._scan(con, tmp)
                table = _fetch(con, scan.select, self.path)
                rejects = _rejects(con, scan)
            casts = _cast_failures(rejects)
            if not casts:
                return table, rejects
            self._types |= _widened(casts, table.schema, table.column_names)

    def _has_quotes(self) -> bool:
        quote = (self.options.quote or '"').encode()
        with self.path.open("rb") as handle:
            return quote in handle.read(1 << 20)

    def _without_broken_quotes(self, workdir: Path) -> BrokenQuotes | None:
        """Most lines failed: a broken quote may have misled the sniffer; set such lines aside."""
        from keel.data.encoding import detect_encoding
        from keel.data.quoting import set_aside_broken_quotes

        encoding = self.options.encoding or self.dialect.encoding or detect_encoding(self.path)
        delimiter = self.options.delimiter or self.dialect.delimiter or ","
        found = set_aside_broken_quotes(
            self.path,
            encoding=encoding,
            delimiter=delimiter,
            quote=self.options.quote or '"',
            workdir=workdir,
        )
        if found is not None:
            self._encoding = encoding
        return found

    def _settle_schema(self) -> pa.Schema:
        con, scan = self._kept_scan()
        head = _fetch(con, f"{scan.select} LIMIT 0", self.path)
        return self._named(head).schema

    def _kept_scan(self) -> tuple[duckdb.DuckDBPyConnection, Scan]:
        """A streamed file's scan, built (and sniffed) once and run again on every pass."""
        if self._kept is None:
            self._kept = _Kept()
        if self._kept.scan is None:
            self._kept.scan = self._scan(self._kept.con, self._kept.workdir)
        return self._kept.con, self._kept.scan

    def close(self) -> None:
        """Let go of a streamed file's DuckDB database and scratch files (also done when the
        object is collected); a later pass opens them again."""
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def _stream(
        self, columns: list[str] | None, rows: int, *, settle: bool = False
    ) -> Iterator[pa.Table]:
        from keel.data.scan import quote_ident

        names = list(self.schema.names) if columns is None else columns
        con, scan = self._kept_scan()
        select = scan.select
        if columns is not None:
            raw = [quote_ident(self._raw[self.schema.names.index(c)]) for c in columns]
            select = f"SELECT {', '.join(raw)} FROM ({select})"
        cursor = con.cursor()  # its own reject tables: this pass's bad lines only
        try:
            yield from _regrouped(cursor, select, rows, self.path, names)
            rejects = _rejects(cursor, scan)
        finally:
            cursor.close()
        self._casts = _cast_failures(rejects)
        if columns is None and not self._casts:
            self._bad = self._bad_lines(rejects)
        if self._casts and not settle:
            first = next(iter(self._casts.values()))
            msg = (
                f"{self.path}: column(s) {sorted(self._casts)} hold values that do not fit the "
                f"type sniffed from the file's first rows ({first}); read it again after retype()."
            )
            raise CsvTypeChanged(msg)

    def _named(self, table: pa.Table) -> pa.Table:
        """``table`` with ``options.columns`` as its names; remembers DuckDB's own names."""
        self._raw = list(table.column_names)
        names = self.options.columns
        if names is None:
            return table
        if len(names) != table.num_columns:
            found = ", ".join(table.column_names)
            msg = (
                f"{self.path}: {len(names)} column names were given (--columns) but the file "
                f"has {table.num_columns} fields per line ({found}), read as "
                f"{self.dialect.describe()}. Give one name per field, in the file's order."
            )
            raise DataValidationError(msg, field="columns")
        return table.rename_columns(list(names))

    def _dialect(self, scan: Scan) -> Dialect:
        found, opts = scan.dialect, self.options
        return Dialect(
            "csv",
            delimiter=found.get("delimiter", opts.delimiter),
            quote=found.get("quote", opts.quote),
            escape=found.get("escape"),
            header=found.get("header", opts.header),
            encoding=self._encoding or found.get("encoding", opts.encoding),
            given=opts.given,
        )

    def _bad_lines(self, rejects: pa.Table) -> tuple[BadLine, ...]:
        seen: set[int] = set()
        found = []
        kept = None if self._repair is None else self._repair.kept
        for row in rejects.to_pylist():
            if row["kind"] == "CAST" or row["line"] in seen:
                continue
            seen.add(row["line"])
            fields = count_fields(row["raw"], self.dialect)
            kind, reason = bad_line_reason(row["kind"], row["reason"], fields)
            line = int(row["line"]) if kept is None else kept[int(row["line"]) - 1]
            found.append(BadLine(str(self.path), line, reason, row["raw"], kind))
        if self._repair is not None:
            for line, reason, raw in self._repair.broken:
                found.append(BadLine(str(self.path), line, reason, raw, "broken_quoting"))
        return tuple(sorted(found, key=lambda bad: bad.line))


def open_file(path: str | Path, options: ReadOptions | None = None) -> Path | CsvFile:
    """A data file ready to read: a Parquet file's path (stream it by row groups), or a CSV.

    Args:
        path: A Parquet file (by extension or magic bytes) or a delimited text file.
        options: How to read a CSV (default: detect everything).

    Raises:
        ConfigError: The file is missing, or of a kind Keel does not read.
        DataValidationError: A CSV file cannot be read at all.

    Example:
        >>> opened = open_file("bank.csv")
        >>> opened.dialect.delimiter, [str(b) for b in opened.bad_lines]
        (';', ['bank.csv:17: expected 17 fields, found 18'])
    """
    from keel.data.files import is_parquet

    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{file}: no such file.", field="path")
    if file.is_dir():
        raise ConfigError(f"{file}: is a directory; give a CSV or Parquet file.", field="path")
    if is_parquet(file):
        return file
    suffix = file.suffix.lower()
    if suffix and suffix not in CSV_SUFFIXES:
        known = ", ".join((*CSV_SUFFIXES, *PARQUET_SUFFIXES))
        msg = (
            f"{file}: unsupported file type '{suffix}'. Use a CSV (delimited text) or Parquet "
            f"file ({known})."
        )
        raise ConfigError(msg, field="path")
    return CsvFile.open(file, options)


def read_file(
    path: str | Path, options: ReadOptions | None = None
) -> tuple[pa.Table, tuple[BadLine, ...]]:
    """A data file as one table, and the CSV lines that could not be read.

    Raises:
        ConfigError: The file is missing or of a kind Keel does not read.
        DataValidationError: A CSV file cannot be read at all.
    """
    import pyarrow.parquet as pq

    opened = open_file(path, options)
    if isinstance(opened, Path):
        return pq.read_table(opened), ()
    table = opened.read()
    return table, opened.bad_lines


def show_file(
    path: str | Path, options: ReadOptions | None = None, *, head: int = 5
) -> dict[str, Any]:
    """How a file reads: dialect, rows, columns with their types, first rows, bad lines.

    Returns:
        ``{"file", "dialect", "rows", "columns": [{"name", "type", "nullable"}], "head",
        "bad_lines": [{"file", "line", "reason", "raw", "kind"}]}`` (JSON-able).

    Raises:
        ConfigError: The file is missing or of a kind Keel does not read.
        DataValidationError: A CSV file cannot be read at all.
    """
    from keel.data.files import read_batches, retyped

    opened = open_file(path, options)

    def count() -> tuple[int, pa.Table]:
        first: pa.Table | None = None
        rows = 0
        for table in read_batches(opened, None, 1 << 20):
            first = table if first is None else first
            rows += table.num_rows
        assert first is not None  # read_batches gives at least one table
        return rows, first.slice(0, max(head, 0))

    rows, first = retyped(opened, count)
    dialect = dialect_of(opened)
    return {
        "file": str(path),
        "dialect": None if dialect is None else dialect.to_dict(),
        "rows": rows,
        "columns": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in first.schema
        ],
        "head": first.to_pylist(),
        "bad_lines": [b.to_dict() for b in getattr(opened, "bad_lines", ())],
    }


def file_columns(opened: Path | CsvFile | pa.Table) -> list[str]:
    """The column names of what :func:`open_file` gave (or of a table)."""
    if isinstance(opened, Path):
        import pyarrow.parquet as pq

        return list(pq.read_schema(opened).names)
    return list(opened.schema.names)


def dialect_of(opened: Path | CsvFile | pa.Table) -> Dialect | None:
    """What a file was read as; None for an in-memory table."""
    if isinstance(opened, CsvFile):
        return opened.dialect
    return Dialect("parquet") if isinstance(opened, Path) else None


# --- DuckDB plumbing ------------------------------------------------------------------------


class _Kept:
    """A DuckDB database in a scratch directory, and the scan built in it, for as long as the
    streamed file that keeps it (released when that is closed or collected)."""

    def __init__(self) -> None:
        from keel.data.scan import connect

        self._tmp = tempfile.TemporaryDirectory(prefix="keel-read-")
        self.workdir = Path(self._tmp.name)
        self._connection = connect(self.workdir)
        self.con = self._connection.__enter__()
        self.scan: Scan | None = None
        self._release = weakref.finalize(self, _release, self._connection, self._tmp)

    def close(self) -> None:
        self._release()


def _release(connection: Any, tmp: tempfile.TemporaryDirectory[str]) -> None:
    try:
        connection.__exit__(None, None, None)
    finally:
        tmp.cleanup()


@contextmanager
def _session() -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    """A DuckDB connection with a scratch directory, both gone on exit."""
    from keel.data.scan import connect

    with tempfile.TemporaryDirectory(prefix="keel-read-") as tmp, connect(Path(tmp)) as con:
        yield con, Path(tmp)


def _fetch(con: duckdb.DuckDBPyConnection, select: str, path: Path) -> pa.Table:
    import duckdb

    from keel.data.scan import fetch_table

    try:
        return fetch_table(con, select)
    except duckdb.Error as exc:
        raise _unreadable(path, exc) from exc


def _regrouped(
    con: duckdb.DuckDBPyConnection, select: str, rows: int, path: Path, names: list[str]
) -> Iterator[pa.Table]:
    import duckdb

    try:
        reader = con.sql(select).to_arrow_reader(min(rows, _STREAM_BATCH))
        pending: list[pa.RecordBatch] = []
        size = 0
        emitted = False
        for batch in reader:
            pending.append(batch)
            size += batch.num_rows
            if size >= rows:
                yield pa.Table.from_batches(pending).rename_columns(names)
                pending, size, emitted = [], 0, True
        if pending or not emitted:
            table = pa.Table.from_batches(pending, schema=reader.schema)
            yield table.rename_columns(names)
    except duckdb.Error as exc:
        raise _unreadable(path, exc) from exc


def _rejects(con: duckdb.DuckDBPyConnection, scan: Scan) -> pa.Table:
    from keel.data.quarantine import collect_rejects

    return collect_rejects(con, scan)


def _unreadable(path: Path, exc: Exception) -> DataValidationError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    msg = (
        f"{path}: cannot read it as CSV: {first}. Check the file, or pass --delimiter, "
        "--quote, --encoding and --header/--no-header."
    )
    return DataValidationError(msg)


_CAST = re.compile(r'Could not convert string "(.*)" to', re.DOTALL)


def _bad_count(rejects: pa.Table) -> int:
    """Lines rejected for their shape (not for a cell's type)."""
    return len({row["line"] for row in rejects.to_pylist() if row["kind"] != "CAST"})


def _cast_failures(rejects: pa.Table) -> dict[str, str]:
    """Column -> the first value that did not fit its sniffed type."""
    found: dict[str, str] = {}
    for row in rejects.to_pylist():
        if row["kind"] == "CAST" and row["column"] is not None and row["column"] not in found:
            found[row["column"]] = row["reason"] or ""
    return found


def _widened(casts: dict[str, str], schema: pa.Schema, names: list[str]) -> dict[str, str]:
    """The DuckDB type each failing column needs: int -> float when the value is a number,
    anything else -> text."""
    widened = {}
    for column, reason in casts.items():
        match = _CAST.search(reason)
        value = match[1] if match else ""
        index = names.index(column) if column in names else -1
        current = schema.field(index).type if 0 <= index < len(schema) else pa.string()
        numeric = pa.types.is_integer(current) and _is_float(value)
        widened[column] = "DOUBLE" if numeric else "VARCHAR"
    return widened


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
