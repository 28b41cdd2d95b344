"""What kind of data file a path holds, without importing the readers."""

from __future__ import annotations

from pathlib import Path

__all__ = ["is_parquet"]


def is_parquet(path: Path) -> bool:
    """Parquet by its extension or its magic bytes (snapshots have no extension)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False
