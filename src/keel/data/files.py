"""What kind of data file a path holds, without importing the readers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.data.sources import CsvFile

__all__ = ["is_parquet", "open_data", "retyped"]

T = TypeVar("T")


def open_data(path: Path) -> Path | pa.Table | CsvFile:
    """A Parquet file's path (to stream), or a CSV: read whole when small, a CsvFile over 64 MiB.

    Raises:
        ConfigError: The file is missing or neither CSV nor Parquet.
        DataValidationError: The CSV does not parse.
    """
    if is_parquet(path) and path.exists():
        return path
    from keel.data.sources import open_table  # CSV only: Parquet needs none of the readers

    return open_table(path)


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
