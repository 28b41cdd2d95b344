"""Read a declared source into an Arrow table, cleaned the same way every time.

Every format goes through one DuckDB scan (:mod:`keel.data.scan`), the same one ingestion
streams into snapshots, so ``read_source`` and a snapshot of the same source hold the same
table. Cleaning is vectorised: string cells are trimmed (UCI files put a space after each
comma), NA tokens become nulls, and per-column ``replace`` maps normalise values (e.g.
adult.test's trailing dots on labels).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from keel.config import SourceConfig
from keel.data.fingerprint import source_fingerprint, source_identity
from keel.data.reader import (
    CSV_SUFFIXES,
    STREAM_CSV_BYTES,
    CsvFile,
    CsvTypeChanged,
    ReadOptions,
    open_file,
)
from keel.errors import ConfigError, DataValidationError

__all__ = [
    "CSV_SUFFIXES",
    "STREAM_CSV_BYTES",
    "CsvFile",
    "CsvTypeChanged",
    "clean_table",
    "open_table",
    "read_source",
    "read_table",
    "source_fingerprint",
    "source_identity",
]


def read_source(source: SourceConfig, root: Path) -> pa.Table:
    """Read and clean the table a source describes, in memory.

    Use :func:`keel.data.ingest` for large sources: it streams into a snapshot instead.

    Args:
        source: The source section of keel.yaml.
        root: The project directory that relative paths start from.

    Returns:
        The cleaned table.

    Raises:
        ConfigError: The file does not exist or an option is wrong.
        DataValidationError: The source cannot be parsed, or it has more bad rows than
            ``max_bad_rows``; the message names file, lines and cause.
    """
    import duckdb

    from keel.data.quarantine import check_bad_rows, collect_rejects
    from keel.data.scan import connect, fetch_table, open_scan

    with tempfile.TemporaryDirectory(prefix="keel-read-") as tmp, connect(Path(tmp)) as con:
        scan = open_scan(con, source, root, Path(tmp))
        try:
            table = fetch_table(con, scan.select)
        except duckdb.Error as exc:
            where = scan.files[0] if scan.files else source_identity(source)
            msg = f"{where}: cannot read the source: {str(exc).strip().splitlines()[0]}."
            raise DataValidationError(msg) from exc
        rejects = collect_rejects(con, scan)
    where = source_identity(source)
    limit = source.max_bad_rows
    check_bad_rows(rejects, good_rows=table.num_rows, limit=limit, where=where, quarantine=None)
    return table


def read_table(path: str | Path, options: ReadOptions | None = None) -> pa.Table:
    """Read a CSV or Parquet file whole, as :mod:`keel.data.reader` reads it (dialect sniffed
    unless ``options`` give it, cleaned as ingestion cleans).

    Raises:
        ConfigError: The file is missing or neither CSV nor Parquet.
        DataValidationError: The CSV cannot be read, or some of its lines are malformed (the
            message names them; :func:`keel.data.reader.read_file` reads the rest and returns
            them).
    """
    opened = open_file(path, options)
    if isinstance(opened, Path):
        import pyarrow.parquet as pq

        return pq.read_table(opened)
    table = opened.read()
    if opened.bad_lines:
        bad = opened.bad_lines
        first = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:5])
        msg = (
            f"{opened.path}: {len(bad)} malformed line(s) ({first}). Fix them, or read the "
            "rest with keel.data.reader.read_file, which returns them."
        )
        raise DataValidationError(msg, details={"bad_lines": [b.to_dict() for b in bad[:100]]})
    return table


def open_table(path: str | Path, options: ReadOptions | None = None) -> Path | CsvFile:
    """A file to check or profile: a Parquet path, or a CSV (read whole, or over 64 MiB ready
    to stream). Same as :func:`keel.data.reader.open_file`.

    Raises:
        ConfigError: The file is missing or neither CSV nor Parquet.
        DataValidationError: The CSV cannot be read at all.
    """
    return open_file(path, options)


def clean_table(
    table: pa.Table, *, na_values: list[str], replace: dict[str, dict[str, str]]
) -> pa.Table:
    """Trim string cells, turn NA tokens into nulls, apply per-column value replacements."""
    for name in replace:
        if name not in table.column_names:
            msg = f"replace: column '{name}' is not in the data (columns: {table.column_names})."
            raise ConfigError(msg)
    tokens = pa.array(na_values, type=pa.string())
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.utf8_trim_whitespace(column)
            if na_values:
                column = pc.if_else(pc.is_in(column, value_set=tokens), None, column)
            column = pc.if_else(pc.equal(column, ""), None, column)
            original = column
            # match against the original cells so replacements never chain (a->b, b->c)
            for old, new in replace.get(name, {}).items():
                hit = pc.fill_null(pc.equal(original, old), False)
                column = pc.if_else(hit, new, column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)
