"""A declared source as one DuckDB ``SELECT`` of cleaned rows, read lazily in batches.

Every format becomes a DuckDB table function (``read_csv``, ``read_parquet``, ``read_json``, a
user query, or Parquet parts fetched from SQL in chunks); cleaning is SQL over it, with the
semantics of :func:`keel.data.sources.clean_table`: string cells trimmed, NA tokens and empty
cells null, per-column ``replace`` maps applied to the original cells. Nothing is materialised
here: the caller streams the ``SELECT`` into Parquet (``COPY``) or fetches it.

CSV rows that do not parse (wrong field count, undecodable bytes, a value that does not convert
to its column's type) are kept in DuckDB's ``reject_errors`` table with file and line number.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from keel.config import SourceConfig
from keel.data.encoding import detect_encoding, readable_files, uniform_newlines
from keel.data.fingerprint import resolve_files
from keel.errors import ConfigError, DataValidationError

__all__ = [
    "MEMORY_LIMIT",
    "Scan",
    "connect",
    "fetch_table",
    "open_scan",
    "quote_ident",
    "resolve_files",
    "sql",
]

#: DuckDB's memory cap during ingestion; larger intermediate state spills to the work directory.
MEMORY_LIMIT = "512MB"
#: Each line of a file as one text cell (blank lines kept as NULL so row numbers are lines).
_LINES = (
    "read_csv({file}, columns = {{'raw': 'VARCHAR'}}, header = false, delim = chr(0), "
    "quote = '', escape = '', auto_detect = false, new_line = '\\n', strict_mode = false)"
)
#: Types the sniffer may pick. No BOOLEAN: a Yes/No column stays text, so the schema learns its
#: spellings (true_values/false_values) and serving accepts exactly what training saw.
_TYPES = ["BIGINT", "DOUBLE", "TIME", "DATE", "TIMESTAMP", "VARCHAR"]
_RAW_LINES = "FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER chr(0)"
_CSV_REJECTS = """
    SELECT s.file_path AS file, e.line::BIGINT AS line, e.column_name AS "column",
           e.error_type::VARCHAR AS kind, e.error_message AS reason, e.csv_line AS raw
    FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id)
    -- a short line gives one MISSING COLUMNS error per absent column: keep the first
    QUALIFY row_number() OVER (PARTITION BY e.file_id, e.line, e.error_type
                               ORDER BY e.column_idx) = 1
    ORDER BY s.file_id, e.line, e.column_idx
"""


@dataclass(frozen=True)
class Scan:
    """The cleaned rows of a source as SQL, and what a bad-row report needs.

    Attributes:
        select: A DuckDB ``SELECT`` yielding the cleaned rows.
        files: The files read, as the user named them (empty for sql and duckdb sources).
        rejects: A ``SELECT`` of the bad rows (file, line, column, kind, reason, raw) to run
            after ``select``; None when the format has no row-level parsing (Parquet, SQL).
        aliases: File names DuckDB read -> the user's file, for transcoded copies.
        dialect: What was given or detected (encoding, ...), for the snapshot's metadata.
        names: Column names DuckDB gave -> the names in keel.yaml, for bad-row reports.
    """

    select: str
    files: tuple[Path, ...]
    rejects: str | None
    aliases: dict[str, str] = field(default_factory=dict)
    dialect: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


@contextmanager
def connect(workdir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with a memory cap that spills to ``workdir``; closed on exit."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": MEMORY_LIMIT,
        "temp_directory": str(workdir),
        "preserve_insertion_order": True,
    }
    con = duckdb.connect(config=config)
    con.execute("SET enable_progress_bar = false")
    try:
        yield con
    finally:
        con.close()


def sql(value: Any) -> str:
    """A DuckDB SQL literal for a string, number, bool, None, list or dict."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(sql(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{sql(str(k))}: {sql(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def fetch_table(con: duckdb.DuckDBPyConnection, select: str) -> pa.Table:
    """The rows of ``select`` as one Arrow table (in memory)."""
    table = con.sql(select).to_arrow_table()
    if not isinstance(table, pa.Table):  # the stubs allow None
        raise TypeError(f"DuckDB returned {type(table).__name__}, not an Arrow table")
    return table


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def open_scan(
    con: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    root: Path,
    workdir: Path,
    *,
    after: tuple[str, Any] | None = None,
    text: frozenset[str] = frozenset(),
) -> Scan:
    """The cleaned rows of ``source``, optionally only those above a watermark or without one.

    Args:
        con: The connection the ``SELECT`` will run on.
        source: The declared source.
        root: The project directory relative paths start from.
        workdir: A scratch directory that outlives the scan (transcoded files, SQL chunks).
        after: ``(column, watermark)`` for incremental ingestion: only rows with ``column >
            watermark`` or ``column IS NULL`` (the caller counts those and leaves them out).
            Pushed into SQL sources.
        text: CSV columns to read as text whatever they look like (missing ones are ignored):
            batch scoring reads a model's inputs so, and its coercion parses them.

    Raises:
        ConfigError: A file is missing, an option is wrong, or ``columns`` does not fit.
        DataValidationError: The source cannot be read.
    """
    if source.format == "csv":
        scan = _csv(con, source, resolve_files(source, root), workdir, text)
    elif source.format == "sql":
        from keel.data.sqlsource import fetch_parts

        parts = fetch_parts(source, workdir, after=after)
        names = sql([str(p) for p in parts])
        scan = Scan(f"SELECT * FROM read_parquet({names}, union_by_name = true)", (), None)
    elif source.format == "duckdb":
        assert source.query is not None  # checked by SourceConfig
        con.execute(f"SET file_search_path = {sql(str(root))}")
        scan = Scan(f"SELECT * FROM ({source.query})", (), None)
    elif source.format == "jsonl":
        scan = _jsonl(con, resolve_files(source, root), workdir)
    else:
        files = resolve_files(source, root)
        reader = f"read_parquet({sql([str(f) for f in files])}, union_by_name = true)"
        scan = Scan(f"SELECT * FROM {reader}", tuple(files), None)
    select, columns = _cleaned(con, scan.select, source, scan.files)
    if after is not None:
        if after[0] not in columns:
            msg = (
                f"incremental.column '{after[0]}' is not a column of the source "
                f"(columns: {columns}). Name the column that grows with new rows."
            )
            raise ConfigError(msg, field="incremental.column")
        # NULL-watermark rows come too, so ingestion can count them (one parse of the source)
        column = quote_ident(after[0])
        select = f"SELECT * FROM ({select}) WHERE {column} > {sql(after[1])} OR {column} IS NULL"
    return Scan(select, scan.files, scan.rejects, scan.aliases, scan.dialect, scan.names)


def _csv(
    con: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    files: list[Path],
    workdir: Path,
    text: frozenset[str] = frozenset(),
) -> Scan:
    """One file is sniffed once, then read with what was found spelled out (``auto_detect =
    false``): describing, limiting or fetching the ``SELECT`` then reads it once, where each
    used to sniff it again. Several files are left to DuckDB, which sniffs each and unifies
    their types (a column of numbers in one file and text in another is text)."""
    encoding = source.encoding or detect_encoding(files[0])
    duck_encoding, readable = readable_files(files, encoding, workdir)
    options: dict[str, Any] = {"encoding": duck_encoding, "skip": source.skip_rows}
    given = {
        "delim": source.delimiter,
        "quote": source.quote,
        "escape": source.escape,
        "comment": source.comment,
        "header": source.header,
    }
    options |= {key: value for key, value in given.items() if value is not None}
    # a blank cell (" ") is missing, as cleaning makes it: a number column with blanks stays numeric
    blanks = ["", " ", "  "]
    tokens = list(dict.fromkeys([*blanks, *source.na_values, *(f" {t}" for t in source.na_values)]))
    # rejects on from the start: the sniffer then skips bad rows as the scan will
    options |= {"nullstr": tokens, "store_rejects": True, "auto_type_candidates": _TYPES}
    sniffed = _sniff(con, readable[0], options)
    if sniffed is None:  # lines ending in both \r\n and \n defeat the sniffer: make them one
        uniform = uniform_newlines(readable, duck_encoding, workdir)
        if uniform != readable:
            readable = uniform
            sniffed = _sniff(con, readable[0], options)
    names = sql([str(f) for f in readable])
    spelled = sniffed if len(readable) == 1 else None
    if spelled is None:  # read_csv says what is wrong, as it always has (or reads it after all)
        plain = _describe(con, f"SELECT * FROM read_csv({names}, {_options(options)})", files[0])
    else:
        plain = list(spelled.columns)
    final = _final_names(plain, source, files[0])
    by_final = dict(zip(final, plain, strict=True))
    types: dict[str, str] = {}
    if source.types:
        unknown = sorted(set(source.types) - set(final))
        if unknown:
            msg = f"types: column(s) {unknown} are not in {files[0]} (columns: {final})."
            raise ConfigError(msg, field="types")
        types = {by_final[name]: kind for name, kind in source.types.items()}
    # the caller's coercion parses these, as it parses the same text sent as JSON
    types = {by_final[name]: "VARCHAR" for name in text if name in by_final} | types
    if spelled is None:
        options |= {"types": types} if types else {}
    else:
        options |= spelled.fixed | {"columns": spelled.columns | types}
    select = f"SELECT * FROM read_csv({names}, {_options(options)})"
    aliases = {str(r): str(f) for r, f in zip(readable, files, strict=True) if r != f}
    renamed = {raw: new for raw, new in zip(plain, final, strict=True) if raw != new}
    found = {} if sniffed is None else sniffed.dialect
    return Scan(
        select, tuple(files), _CSV_REJECTS, aliases, {"encoding": encoding, **found}, renamed
    )


@dataclass(frozen=True)
class _Sniffed:
    """What DuckDB's sniffer found in a CSV file.

    Attributes:
        dialect: Delimiter, quote, escape, comment and header, for the snapshot's metadata.
        fixed: ``read_csv`` options that read the file as found, without sniffing it again.
        columns: Column name -> DuckDB type, in file order.
    """

    dialect: dict[str, Any]
    fixed: dict[str, Any]
    columns: dict[str, str]


def _sniff(con: duckdb.DuckDBPyConnection, file: Path, options: dict[str, Any]) -> _Sniffed | None:
    """The dialect and columns DuckDB's sniffer settles on, with what keel.yaml gave; None
    when it cannot sniff the file (the scan then reports what is wrong with it).

    Sniffed with the scan's own options, bad-row skipping included: without it a file with a
    few malformed lines sniffs as another dialect than the one the scan reads it with."""
    query = (
        "SELECT Delimiter, Quote, Escape, NewLineDelimiter, Comment, SkipRows, HasHeader, "
        f"Columns, DateFormat, TimestampFormat FROM sniff_csv({sql(str(file))}, "
        f"{_options(options)})"
    )
    try:
        found = con.execute(query).fetchone()
    except duckdb.Error:
        return None
    if found is None:
        return None
    delimiter, quote, escape, new_line, comment, skip, header, columns, dates, times = found
    unset = "(empty)"
    fixed: dict[str, Any] = {
        "auto_detect": False,
        "delim": delimiter,
        "quote": "" if quote == unset else quote,
        "escape": "" if escape == unset else escape,
        "comment": "" if comment == unset else comment,
        "skip": int(skip),
        "header": bool(header),
    }
    if new_line in ("\\n", "\\r", "\\r\\n"):
        fixed["new_line"] = new_line
    if dates:
        fixed["dateformat"] = dates
    if times:
        fixed["timestampformat"] = times
    dialect = {
        "delimiter": delimiter,
        "quote": None if quote == unset else quote,
        "escape": None if escape == unset else escape,
        "comment": None if comment == unset else comment,
        "header": bool(header),
    }
    return _Sniffed(dialect, fixed, {str(c["name"]): str(c["type"]) for c in columns})


def _jsonl(con: duckdb.DuckDBPyConnection, files: list[Path], workdir: Path) -> Scan:
    """JSON Lines: malformed lines are found first (one pass of ``json_valid`` per line),
    kept as bad rows, and left out of a clean copy that ``read_json`` then reads."""
    readable, rejects = [], []
    for i, file in enumerate(files):
        lines = _LINES.format(file=sql(str(file)))
        bad = (
            f'SELECT {sql(str(file))} AS file, line, NULL::VARCHAR AS "column", '
            "'INVALID JSON' AS kind, 'malformed JSON' AS reason, raw "
            f"FROM (SELECT row_number() OVER () AS line, raw FROM {lines}) "
            "WHERE raw IS NOT NULL AND trim(raw) <> '' AND NOT json_valid(raw)"
        )
        con.execute(f"CREATE TEMP TABLE keel_bad_json_{i} AS {bad}")
        rejects.append(f"SELECT * FROM keel_bad_json_{i}")
        found = con.execute(f"SELECT count(*) FROM keel_bad_json_{i}").fetchone()
        if not found or found[0] == 0:
            readable.append(file)
            continue
        copy = workdir / f"valid-{i}.jsonl"
        valid = f"SELECT raw FROM {lines} WHERE raw IS NOT NULL AND json_valid(raw)"
        con.execute(f"COPY ({valid}) TO {sql(str(copy))} ({_RAW_LINES})")
        readable.append(copy)
    reader = f"read_json({sql([str(f) for f in readable])}, format = 'newline_delimited')"
    aliases = {str(r): str(f) for r, f in zip(readable, files, strict=True) if r != f}
    rejects_sql = " UNION ALL ".join(rejects) + " ORDER BY file, line"
    return Scan(f"SELECT * FROM {reader}", tuple(files), rejects_sql, aliases)


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{key} = {sql(value)}" for key, value in options.items())


def _describe(con: duckdb.DuckDBPyConnection, select: str, file: Path | None) -> list[str]:
    try:
        return [str(row[0]) for row in con.execute(f"DESCRIBE {select}").fetchall()]
    except duckdb.Error as exc:
        where = f"{file}: " if file is not None else ""
        msg = (
            f"{where}cannot read the source: {_first_line(exc).rstrip('.')}. Check its format, "
            "delimiter, header and columns (keel.yaml's source, or --delimiter, --header and "
            "--columns for a file given on the command line)."
        )
        raise DataValidationError(msg) from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _final_names(names: list[str], source: SourceConfig, file: Path | None) -> list[str]:
    if not source.columns:
        return names
    if len(source.columns) != len(names):
        where = f"{file}: " if file is not None else ""
        msg = (
            f"{where}keel.yaml lists {len(source.columns)} columns but the file has "
            f"{len(names)} ({', '.join(names)}). Make data.*.columns match the file."
        )
        raise DataValidationError(msg)
    return list(source.columns)


def _cleaned(
    con: duckdb.DuckDBPyConnection, select: str, source: SourceConfig, files: tuple[Path, ...]
) -> tuple[str, list[str]]:
    file = files[0] if files else None
    try:
        described = con.execute(f"DESCRIBE {select}").fetchall()
    except duckdb.Error as exc:
        where = f"{file}: cannot read it" if file is not None else "cannot run the source query"
        msg = f"{where}: {_first_line(exc)}. Check data.*.format, path and query in keel.yaml."
        raise DataValidationError(msg) from exc
    names = [str(row[0]) for row in described]
    types = [str(row[1]) for row in described]
    final = _final_names(names, source, file)
    for column in source.replace:
        if column not in final:
            msg = f"replace: column '{column}' is not in the data (columns: {final})."
            raise ConfigError(msg, field="replace")
    _check_unix_time(source, dict(zip(final, types, strict=True)), file)
    units = {name: source.unix_time[new] for name, new in zip(names, final, strict=True)
             if new in source.unix_time}  # fmt: skip
    tokens = list(dict.fromkeys(["", *source.na_values]))
    exprs = []
    for name, new, kind in zip(names, final, types, strict=True):
        expr = quote_ident(name)
        if kind == "VARCHAR":
            expr = _clean_text(expr, tokens, source.replace.get(new, {}))
        elif name in units and kind not in _TEMPORAL:
            expr = _checked_epoch(expr, kind, units[name], new)
        exprs.append(f"{expr} AS {quote_ident(new)}")
    return f"SELECT {', '.join(exprs)} FROM ({select})", final


_TEMPORAL = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS",
             "TIMESTAMP_S")  # fmt: skip
_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
             "UBIGINT", "HUGEINT")  # fmt: skip


def _check_unix_time(source: SourceConfig, types: dict[str, str], file: Path | None) -> None:
    """``unix_time`` names columns of the source that hold numbers (or already times)."""
    for column in source.unix_time:
        kind = types.get(column)
        if kind is None:
            msg = f"unix_time: column '{column}' is not in the data (columns: {list(types)})."
            raise ConfigError(msg, field="unix_time")
        numeric = kind in _INTEGERS or kind in ("FLOAT", "DOUBLE") or kind.startswith("DECIMAL")
        if not numeric and kind not in _TEMPORAL:
            where = f"{file}: " if file is not None else ""
            msg = (
                f"{where}unix_time: column '{column}' holds {kind}, not numbers of seconds, "
                "milliseconds or microseconds since 1970; remove it from unix_time (or fix the "
                "cells that make it text)."
            )
            raise DataValidationError(msg, field="unix_time")


def _checked_epoch(column: str, kind: str, unit: str, name: str) -> str:
    """:func:`_from_epoch`, with an error naming the column for a value beyond the years
    1-9999 in ``unit`` (a wrong unit, or a wrong cell), where DuckDB's says only "overflow"."""
    from keel.validate.epochs import MICROS, epoch_bounds

    low, high = epoch_bounds(unit)
    msg = (
        f"unix_time: column '{name}' holds a number that is no time in {unit} since 1970 "
        f"({low} to {high} are the years 1-9999); check its unit (s, ms, us), or that cell"
    )
    value = f"CAST({column} AS DOUBLE)"
    inside = f"{value} * {MICROS[unit]} BETWEEN {low * MICROS[unit]} AND {high * MICROS[unit]}"
    return (
        f"CASE WHEN {column} IS NULL OR isnan({value}) THEN NULL WHEN {inside} THEN "
        f"{_from_epoch(column, kind, unit)} ELSE error({sql(msg)}) END"
    )


def _from_epoch(column: str, kind: str, unit: str) -> str:
    """A number of ``unit`` since 1970-01-01 UTC as a TIMESTAMP, as
    :func:`keel.validate.epochs.to_timestamps` converts it (decimals round half to even)."""
    from keel.validate.epochs import MICROS

    factor = MICROS[unit]
    if kind in _INTEGERS:
        return f"make_timestamp(CAST({column} AS BIGINT) * {factor})"
    return f"make_timestamp(CAST(round_even(CAST({column} AS DOUBLE) * {factor}, 0) AS BIGINT))"


def _clean_text(column: str, tokens: list[str], replace: dict[str, str]) -> str:
    # plain trim() (spaces) is twice as fast as trim(x, chars) and covers "a, b" files
    trimmed = f"trim({column})"
    cases = [f"WHEN {trimmed} IN ({', '.join(sql(t) for t in tokens)}) THEN NULL"]
    cases += [f"WHEN {trimmed} = {sql(old)} THEN {sql(new)}" for old, new in replace.items()]
    return f"CASE {' '.join(cases)} ELSE {trimmed} END"
