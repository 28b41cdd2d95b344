"""Data sources and versioned Parquet snapshots.

Names are imported on first use, so ``keel.data.sources`` (used by serving) does not pull in
DuckDB and the stores.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.data.columns import check_columns
    from keel.data.dialect import BadLine, Dialect, ReadOptions
    from keel.data.fingerprint import source_fingerprint
    from keel.data.reader import open_file, read_file
    from keel.data.snapshots import (
        IngestResult,
        ingest,
        list_snapshots,
        read_snapshot,
        show_snapshot,
    )
    from keel.data.sources import read_source, read_table

__all__ = [
    "BadLine",
    "Dialect",
    "IngestResult",
    "ReadOptions",
    "check_columns",
    "ingest",
    "list_snapshots",
    "open_file",
    "read_file",
    "read_snapshot",
    "read_source",
    "read_table",
    "show_snapshot",
    "source_fingerprint",
]

_HOMES = {
    "BadLine": "keel.data.dialect",
    "Dialect": "keel.data.dialect",
    "ReadOptions": "keel.data.dialect",
    "check_columns": "keel.data.columns",
    "open_file": "keel.data.reader",
    "read_file": "keel.data.reader",
    "IngestResult": "keel.data.snapshots",
    "ingest": "keel.data.snapshots",
    "list_snapshots": "keel.data.snapshots",
    "read_snapshot": "keel.data.snapshots",
    "show_snapshot": "keel.data.snapshots",
    "read_source": "keel.data.sources",
    "read_table": "keel.data.sources",
    "source_fingerprint": "keel.data.fingerprint",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'keel.data' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
