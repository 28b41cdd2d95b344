"""Malformed lines of a CSV file as a validation finding (``malformed_row``).

The reader (:mod:`keel.data.reader`) keeps a line it cannot read as a row (too many or too
few fields, broken quoting, bytes that do not decode) with its line number and reads the rest;
validation reports those lines instead of refusing the whole file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.validate.anomalies import Anomaly, severity_of
from keel.validate.schema import Schema

if TYPE_CHECKING:
    from keel.data.reader import CsvFile

__all__ = ["MAX_LISTED", "malformed_rows"]

#: Bad lines kept in the finding's details (the count is always exact).
MAX_LISTED = 1000
_IN_MESSAGE = 5


def malformed_rows(csv: CsvFile | None, schema: Schema, name: str) -> list[Anomaly]:
    """One ``malformed_row`` finding for a CSV file's unreadable lines, or none.

    Args:
        csv: The file as read (None for data that is not a CSV file: nothing to report).
        schema: Where the finding's severity may be overridden (default ``error``).
        name: How to call the data in the message.

    Returns:
        ``[]`` or one anomaly whose message names the first lines and their reasons, and whose
        details hold ``rows`` (the count), ``lines`` (up to :data:`MAX_LISTED` of
        ``{file, line, reason, raw, kind}``) and ``dialect`` (how the file was read).
    """
    if csv is None or not csv.bad_lines:
        return []
    bad = csv.bad_lines
    shown = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:_IN_MESSAGE])
    more = f"; ... ({len(bad) - _IN_MESSAGE} more)" if len(bad) > _IN_MESSAGE else ""
    message = (
        f"{name}: {len(bad)} malformed line(s) could not be read and were left out "
        f"({shown}{more}). Fix them in the file; if most lines fail, check how it is read "
        f"({csv.dialect.describe()}): --delimiter, --quote, --header/--no-header, --encoding."
    )
    details = {
        "rows": len(bad),
        "lines": [b.to_dict() for b in bad[:MAX_LISTED]],
        "dialect": csv.dialect.to_dict(),
    }
    severity = severity_of(schema, "malformed_row", "error", None)
    return [Anomaly(None, "malformed_row", severity, message, details)]
