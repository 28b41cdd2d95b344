"""Duplicate rows: 64-bit hashes of whole rows, batch by batch, and the rows that repeat one.

The hashes come from DuckDB's vectorised ``hash`` (no GIL, 8 bytes a row kept); a hash table
finds the repeats. A hash collision between two different rows (about n**2 / 2**65) would
report one false repeat; the rows are not compared value by value.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["RowHashes", "repeated_rows"]


class RowHashes:
    """64-bit hashes of whole rows, batch by batch (DuckDB's vectorised ``hash``, no GIL)."""

    def __init__(self, columns: list[str]) -> None:
        quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        self.query = f"SELECT hash({quoted}) AS h FROM batch" if columns else ""
        self.parts: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()
        self.connection: Any = None  # one DuckDB connection for every batch, closed in result()

    def __call__(self, first_row: int, table: pa.Table) -> None:
        if not self.query or not table.num_rows:
            return
        with self.lock:
            if self.connection is None:
                import duckdb

                self.connection = duckdb.connect()
            self.connection.register("batch", table)
            hashes = self.connection.execute(self.query).fetchnumpy()["h"]
            self.connection.unregister("batch")
            self.parts[first_row] = np.asarray(hashes, dtype=np.uint64)

    def result(self, rows: int) -> np.ndarray | None:
        """Every row's hash in row order; None when there were no columns to hash."""
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None
        if not self.query or rows < 2:
            return None
        return np.concatenate([self.parts[start] for start in sorted(self.parts)])


def repeated_rows(hashes: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows whose hash equals an earlier row's.

    pandas' hash table, O(n): 10M hashes in ~0.3 s and about 16 bytes a row, where sorting them
    (and ordering each group of equal hashes by row) took seconds when most rows repeat. pandas
    costs no import of its own here: pyarrow imports it on its first conversion to NumPy.
    """
    import pandas as pd

    return np.flatnonzero(pd.Series(hashes).duplicated(keep="first").to_numpy())
