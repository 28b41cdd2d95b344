"""What kind of data file a path holds, without importing the readers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.data.sources import CsvFile

__all__ = ["is_parquet", "open_data"]


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
