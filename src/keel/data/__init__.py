"""Data sources and versioned Parquet snapshots."""

from keel.data.sources import read_source, read_table

__all__ = ["read_source", "read_table"]
