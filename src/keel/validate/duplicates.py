"""Duplicate rows: 64-bit hashes of whole rows, batch by batch, and the rows that repeat one.

The hashes come from DuckDB's vectorised ``hash`` (no GIL, 8 bytes a row kept); an argsort of
them groups equal rows. A hash collision between two different rows (about n**2 / 2**65) would
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

    An unstable argsort of the hashes groups equal ones (~30 ms for 1M rows, and no pandas
    import); within each group every row but the first in row order repeats an earlier one.
    Only rows in groups of two or more are sorted again, by (hash, row).
    """
    order = np.argsort(hashes)
    ranked = hashes[order]
    same = ranked[1:] == ranked[:-1]
    if not same.any():
        return np.empty(0, dtype=np.int64)
    grouped = np.zeros(len(hashes), dtype=bool)
    grouped[1:] |= same
    grouped[:-1] |= same
    rows = order[grouped]
    rows = rows[np.lexsort((rows, hashes[rows]))]  # by hash, then row: each group's first first
    in_group = hashes[rows]
    later = np.zeros(len(rows), dtype=bool)
    later[1:] = in_group[1:] == in_group[:-1]
    return np.sort(rows[later]).astype(np.int64)
