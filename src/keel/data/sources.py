"""Read a declared source into an Arrow table, cleaned the same way every time.

Every format goes through one DuckDB scan (:mod:`keel.data.scan`), the same one ingestion
streams into snapshots, so ``read_source`` and a snapshot of the same source hold the same
table. Cleaning is vectorised: string cells are trimmed (UCI files put a space after each
comma), NA tokens become nulls, and per-column ``replace`` maps normalise values (e.g.
adult.test's trailing dots on labels).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from keel.config import SourceConfig
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

CSV_SUFFIXES = (".csv", ".txt")
CSV_BLOCK_BYTES = 1 << 22  # types come from the first 4 MiB; more blocks in flight cost memory
STREAM_CSV_BYTES = 64 << 20  # larger CSV files are streamed (a whole read takes ~3.5x in RAM)


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


def source_identity(source: SourceConfig) -> str:
    """What names a source across ingestions: its path (or glob) as declared, or for ``sql``
    and ``duckdb`` sources a digest of URL and query (the password never appears)."""
    if source.format in ("sql", "duckdb"):
        from keel.data.sqlsource import safe_url

        url = safe_url(source.url) if source.url else "duckdb"
        digest = hashlib.sha256(f"{source.url}\n{source.query}".encode()).hexdigest()[:16]
        return f"{source.format}:{url}#{digest}"
    assert source.path is not None  # checked by SourceConfig
    return source.path


def source_fingerprint(source: SourceConfig, root: Path) -> str:
    """A sha256 that changes when the source's data may have changed, for cache keys.

    Files (and every file a glob matches) are hashed by content, with their names. ``sql`` and
    ``duckdb`` sources cannot be fingerprinted without reading them, so they get a fresh value
    every call: the ingest step always runs (incremental ingestion keeps that cheap).

    Raises:
        ConfigError: A file is missing or a glob matches nothing.
    """
    from keel.data.scan import resolve_files

    digest = hashlib.sha256(source_identity(source).encode())
    if source.format in ("sql", "duckdb"):
        import uuid

        digest.update(uuid.uuid4().bytes)
        return digest.hexdigest()
    for file in resolve_files(source, root):
        digest.update(f"\n{file.name}\n".encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def read_table(path: str | Path) -> pa.Table:
    """Read a CSV (with header) or Parquet file chosen by its extension, for scoring or monitoring.

    Raises:
        ConfigError: The file is missing or its extension is not .csv or .parquet.
    """
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{file}: no such file.")
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pq.read_table(file)
    if suffix in CSV_SUFFIXES:
        return _cleaned(_read_csv(file, _plain_csv(file)))
    raise ConfigError(f"{file}: unsupported file type '{suffix}'. Use a .csv or .parquet file.")


def open_table(path: str | Path) -> pa.Table | CsvFile:
    """A file to check or profile: read whole, or, for a CSV over 64 MiB, ready to stream.

    Raises:
        ConfigError: The file is missing or neither CSV nor Parquet.
        DataValidationError: The CSV does not parse.
    """
    file = Path(path)
    large = file.exists() and file.stat().st_size > STREAM_CSV_BYTES
    if large and file.suffix.lower() in CSV_SUFFIXES:
        return CsvFile.open(file)
    return read_table(file)


def _read_csv(path: Path, source: SourceConfig) -> pa.Table:
    read, parse, convert = _csv_options(source)
    try:
        table = pv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _unparseable(path, exc) from exc
    if source.header is not False and source.columns:
        table = _rename(table, source.columns, path)
    return table


def _csv_options(
    source: SourceConfig,
    columns: list[str] | None = None,
    types: dict[str, pa.DataType] | None = None,
) -> tuple[pv.ReadOptions, pv.ParseOptions, pv.ConvertOptions]:
    header = source.header is not False
    read = pv.ReadOptions(
        skip_rows=source.skip_rows,
        column_names=None if header else source.columns,
        autogenerate_column_names=not header and not source.columns,
        block_size=CSV_BLOCK_BYTES,
    )
    nulls = [""] + list(source.na_values) + [f" {token}" for token in source.na_values]
    convert = pv.ConvertOptions(
        null_values=nulls,
        strings_can_be_null=True,
        include_columns=columns,
        column_types=types or None,
    )
    return read, pv.ParseOptions(delimiter=source.delimiter or ","), convert


def _unparseable(path: Path, exc: Exception) -> DataValidationError:
    msg = f"{path}: cannot parse as CSV: {exc}. Check delimiter, header and columns."
    return DataValidationError(msg)


class CsvTypeChanged(DataValidationError):
    """A column's later cells do not fit the type its first block gave it (read it again)."""


@dataclass
class CsvFile:
    """A CSV file (with header) streamed in batches, cleaned as :func:`read_table` cleans it.

    :func:`read_table` reads a whole CSV, and a column whose later cells do not fit the type
    guessed so far is promoted (int to float to text). A stream cannot go back: :meth:`open`
    takes the types from the first block, and when a later cell does not fit, :meth:`tables`
    raises :class:`CsvTypeChanged`; :meth:`retype` then settles every column's type with one
    scan of the file, and the caller reads it again. Nearly every file fits its first block, so
    nearly every file is read once.
    """

    path: Path
    schema: pa.Schema
    settled: bool = False

    @classmethod
    def open(cls, path: str | Path) -> CsvFile:
        """The file with the column types of its first block.

        Raises:
            ConfigError: No such file.
            DataValidationError: The file does not parse as CSV (names it and the problem).
        """
        file = Path(path)
        read, parse, convert = _csv_options(_plain_csv(file))
        try:
            with pv.open_csv(
                file, read_options=read, parse_options=parse, convert_options=convert
            ) as reader:
                return cls(file, reader.schema)
        except pa.ArrowInvalid as exc:
            raise _unparseable(file, exc) from exc

    def retype(self, exc: BaseException) -> bool:
        """After :class:`CsvTypeChanged`: scan the file to settle every type; False otherwise."""
        if not isinstance(exc, CsvTypeChanged) or self.settled:
            return False
        fixed: dict[str, pa.DataType] = {}
        while True:
            read, parse, convert = _csv_options(_plain_csv(self.path), types=fixed)
            with pv.open_csv(
                self.path, read_options=read, parse_options=parse, convert_options=convert
            ) as reader:
                try:
                    for _ in reader:
                        pass
                except pa.ArrowInvalid as error:
                    promoted = _promotion(error, reader.schema, fixed)
                    if promoted is None:
                        raise _unparseable(self.path, error) from error
                    fixed[promoted[0]] = promoted[1]
                    continue
            self.schema, self.settled = reader.schema, True
            return True

    def tables(
        self, columns: list[str] | None = None, batch_rows: int = 1 << 20
    ) -> Iterator[pa.Table]:
        """Cleaned tables of about ``batch_rows`` rows (only ``columns``, when given).

        Raises:
            CsvTypeChanged: A cell does not fit its column's type (see :meth:`retype`).
        """
        types = {f.name: f.type for f in self.schema}
        read, parse, convert = _csv_options(_plain_csv(self.path), columns, types)
        pending: list[pa.RecordBatch] = []
        size = 0
        try:
            with pv.open_csv(
                self.path, read_options=read, parse_options=parse, convert_options=convert
            ) as reader:
                for batch in reader:
                    pending.append(batch)
                    size += batch.num_rows
                    if size >= batch_rows:
                        yield _cleaned(pa.Table.from_batches(pending, schema=reader.schema))
                        pending, size = [], 0
                if pending or size == 0:
                    yield _cleaned(pa.Table.from_batches(pending, schema=reader.schema))
        except pa.ArrowInvalid as exc:
            if self.settled or not _CONVERSION.search(str(exc)):
                raise _unparseable(self.path, exc) from exc
            msg = (
                f"{self.path}: a column's later cells do not fit the type its first "
                f"{CSV_BLOCK_BYTES // 1024} KiB gave it ({exc}); read it again after retype()."
            )
            raise CsvTypeChanged(msg) from exc


_CONVERSION = re.compile(r"CSV column #(\d+): .*conversion error to (\w+): invalid value '(.*)'")


def _promotion(
    exc: Exception, schema: pa.Schema, fixed: dict[str, pa.DataType]
) -> tuple[str, pa.DataType] | None:
    """The wider type a whole-file read gives the column a conversion error names."""
    match = _CONVERSION.search(str(exc))
    if match is None or int(match[1]) >= len(schema):
        return None
    name = schema.field(int(match[1])).name
    if fixed.get(name) == pa.string():
        return None
    return name, _wider(match[2], match[3])


def _wider(current: str, value: str) -> pa.DataType:
    """null -> int64 -> float64 -> string, as far as ``value`` needs."""
    if current == "null" and _parses(int, value):
        return pa.int64()
    if current in ("null", "int64") and _parses(float, value):
        return pa.float64()
    return pa.string()


def _parses(kind: type[int] | type[float], value: str) -> bool:
    try:
        kind(value)
    except ValueError:
        return False
    return True


def _plain_csv(file: Path) -> SourceConfig:
    if not file.exists():
        raise ConfigError(f"{file}: no such file.")
    return SourceConfig(path=str(file), header=True, delimiter=",")


def _cleaned(table: pa.Table) -> pa.Table:
    return clean_table(table, na_values=[], replace={})


def _rename(table: pa.Table, columns: list[str], path: Path) -> pa.Table:
    if len(columns) != table.num_columns:
        msg = (
            f"{path}: keel.yaml lists {len(columns)} columns but the file has "
            f"{table.num_columns}. Make data.*.columns match the file."
        )
        raise DataValidationError(msg)
    return table.rename_columns(columns)


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
