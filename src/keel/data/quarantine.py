"""Bad rows: collected from DuckDB's reject tables, kept as an artifact, held to a limit.

A row that cannot be parsed is never dropped silently: it lands in a quarantine table (file,
line, column, kind, reason, raw text) stored as a ``quarantine`` artifact beside the snapshot,
and ingestion fails when there are more than the source's ``max_bad_rows``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from keel.data.scan import Scan, fetch_table
from keel.errors import DataValidationError

__all__ = ["QUARANTINE_SCHEMA", "bad_row_count", "check_bad_rows", "collect_rejects"]

QUARANTINE_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("column", pa.string()),
        ("kind", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)
_SHOWN = 5


def collect_rejects(con: duckdb.DuckDBPyConnection, scan: Scan) -> pa.Table:
    """The rows the scan rejected, one per error, ordered by file and line.

    Args:
        con: The connection the scan's ``SELECT`` ran on.
        scan: The scan: its bad-row query and the user's file and column names.

    Returns:
        A table with :data:`QUARANTINE_SCHEMA`; empty when nothing was rejected.
    """
    if scan.rejects is None:
        return QUARANTINE_SCHEMA.empty_table()
    table = fetch_table(con, scan.rejects)
    table = _rename_values(table, "file", scan.aliases)
    table = _rename_values(table, "column", scan.names)
    return table.cast(QUARANTINE_SCHEMA)


def _rename_values(table: pa.Table, column: str, renames: dict[str, str]) -> pa.Table:
    values = table.column(column)
    for old, new in renames.items():  # one vectorised pass per renamed value
        values = pc.if_else(pc.fill_null(pc.equal(values, old), False), new, values)
    return table.set_column(table.schema.get_field_index(column), column, values)


def bad_row_count(rejects: pa.Table) -> int:
    """Distinct (file, line) pairs: a row with two errors is one bad row."""
    if rejects.num_rows == 0:
        return 0
    return int(rejects.group_by(["file", "line"]).aggregate([]).num_rows)


def check_bad_rows(
    rejects: pa.Table,
    *,
    good_rows: int,
    limit: int | float,
    where: str,
    quarantine: str | None,
) -> None:
    """Raise when the bad rows exceed ``limit`` (a count, or a float fraction of all rows).

    Args:
        rejects: What :func:`collect_rejects` returned.
        good_rows: Rows that parsed, for the fraction.
        limit: The source's ``max_bad_rows``.
        where: The source, for the message (``data.train (data/adult.data)``).
        quarantine: The quarantine artifact's sha256, when it was stored.

    Raises:
        DataValidationError: Too many bad rows; the message names the file, the count, the
            first few lines and reasons, and how to raise the limit.
    """
    bad = bad_row_count(rejects)
    if bad == 0:
        return
    fraction = bad / (bad + good_rows)
    over = fraction > limit if isinstance(limit, float) else bad > limit
    if not over:
        return
    first = _first_per_line(rejects, _SHOWN)
    shown = "; ".join(
        f"{Path(row['file']).name}:{row['line']}: {row['kind']} ({row['reason']})" for row in first
    )
    kept = f" They are quarantined in artifact {quarantine[:12]}." if quarantine else ""
    msg = (
        f"{where}: {bad} bad row(s) ({fraction:.2%} of {bad + good_rows}) exceed max_bad_rows "
        f"= {limit}. First: {shown}.{kept} Fix the data, or raise the source's max_bad_rows in "
        "keel.yaml (a count such as 10, or a fraction such as 0.01)."
    )
    details = {"bad_rows": bad, "rows": bad + good_rows, "first": first, "quarantine": quarantine}
    raise DataValidationError(msg, field="max_bad_rows", details=details)


def _first_per_line(rejects: pa.Table, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for row in rejects.slice(0, count * 4).to_pylist():  # a few errors per line at most
        if (row["file"], row["line"]) not in seen and len(rows) < count:
            seen.add((row["file"], row["line"]))
            rows.append(row)
    return rows
