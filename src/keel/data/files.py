"""What kind of data file a path holds, and its rows in batches, without importing the readers
until a CSV file needs one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.data.reader import CsvFile, ReadOptions

__all__ = ["is_parquet", "open_data", "read_batches", "retyped"]

T = TypeVar("T")


def open_data(path: Path, options: ReadOptions | None = None) -> Path | CsvFile:
    """A Parquet file's path (to stream), or a CSV file opened by the one reader
    (:class:`keel.data.reader.CsvFile`: read whole, or streamed over 64 MiB).

    Args:
        path: The file.
        options: How to read a CSV (delimiter, header, ...); default: detected.

    Raises:
        ConfigError: The file is missing or neither CSV nor Parquet.
        DataValidationError: The CSV cannot be read at all.
    """
    if is_parquet(path) and path.exists():
        return path
    from keel.data.reader import open_file  # CSV only: Parquet needs none of the readers

    return open_file(path, options)


def read_batches(
    opened: Path | pa.Table | CsvFile, columns: list[str] | None, rows: int
) -> Iterator[pa.Table]:
    """What :func:`open_data` gave, as tables of at most ``rows`` rows, in order.

    A table is sliced, a Parquet file read by record batches, a large CSV streamed; there is
    always at least one table (an empty file gives one with its columns and no rows).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(opened, pa.Table):
        table = opened if columns is None else opened.select(columns)
        for start in range(0, max(table.num_rows, 1), rows):
            yield table.slice(start, rows)
    elif isinstance(opened, Path):
        with pq.ParquetFile(opened) as parquet:
            batches = parquet.iter_batches(batch_size=rows, columns=columns)
            first = next(batches, None)
            if first is None:
                empty = parquet.schema_arrow.empty_table()
                yield empty if columns is None else empty.select(columns)
                return
            yield pa.Table.from_batches([first])
            for batch in batches:
                yield pa.Table.from_batches([batch])
    else:
        yield from opened.tables(columns, rows)


def is_parquet(path: Path) -> bool:
    """Parquet by its extension or its magic bytes (snapshots have no extension)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def retyped(opened: object, read: Callable[[], T]) -> T:
    """``read()``; when it stops because a large CSV's later cells widen a column's type,
    settle the file's types (:meth:`keel.data.sources.CsvFile.retype`) and read again."""
    while True:
        try:
            return read()
        except Exception as exc:
            retype = getattr(opened, "retype", None)
            if retype is None or not retype(exc):
                raise
