"""Model inputs that name rows instead of describing them, as a validation finding (``id_feature``).

``keel init --from`` leaves ids and row counters out of a new project
(:mod:`keel.validate.infer_roles`); a hand-written keel.yaml, or a schema.yaml whose reviewer
kept such a column a ``feature``, would train on it without a word: the model memorises which
row is which (an id) or when it was written (a counter), and neither carries over to new rows.
The same rules judge every number and text input of the training data, on the head of the file
in file order, and each one found is a warning with the fix (an ``error`` where the schema's
``severities: {id_feature: error}`` says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from keel.validate.anomalies import Anomaly, severity_of
from keel.validate.infer_roles import identifiers, may_name_rows
from keel.validate.schema import Schema

if TYPE_CHECKING:
    from keel.validate.statistics import DataSource

__all__ = ["HEAD_ROWS", "id_features"]

#: Rows read from the head of the data to judge the inputs (as ``keel init --from`` samples).
HEAD_ROWS = 100_000
_JUDGED_TYPES = ("int", "float", "string")  # numbers and categories; bools and dates are not ids


def id_features(source: DataSource, schema: Schema, name: str) -> list[Anomaly]:
    """One ``id_feature`` finding per model input that looks like an id or a row counter.

    Args:
        source: The data, in file order (a reader already consumed is not judged: ``[]``).
        schema: The contract: its ``feature`` and ``sensitive`` columns are the inputs judged,
            and where the finding's severity may be overridden (default ``warning``).
        name: How to call the data in messages.

    Returns:
        The findings, in the schema's column order; each names the column, the evidence
        (``details``: ``kind`` ``id`` or ``counter``, ``why``) and the two fixes.
    """
    present = source.schema
    columns = [
        column
        for column in schema.features()
        if column in present.names
        and schema.columns[column].type in _JUDGED_TYPES
        and may_name_rows(column, present.field(column).type)  # the others cannot be: unread
    ]
    if not columns or not source.rereadable:
        return []
    found = []
    for suspect in identifiers(_head(source, columns)):
        severity = severity_of(schema, "id_feature", "warning", suspect.name)
        stay = " (a warning: a column that truly describes the rows can stay)"
        message = (
            f"{name}: column '{suspect.name}' is a model input but looks like an identifier "
            f"({suspect.why}); a model that learns it memorises rows and does not carry over to "
            "new ones. Set 'role: entity' on it in schema.yaml, or add it to data.drop in "
            f"keel.yaml{stay if severity == 'warning' else ''}."
        )
        details = {"kind": suspect.kind, "why": suspect.why}
        found.append(Anomaly(suspect.name, "id_feature", severity, message, details))
    return found


def _head(source: DataSource, columns: list[str]) -> pa.Table:
    """The first :data:`HEAD_ROWS` rows of ``columns``, in file order."""
    if source.path is not None:  # Parquet: read the head's row groups only
        with pq.ParquetFile(source.path) as parquet:
            batches = parquet.iter_batches(batch_size=HEAD_ROWS, columns=columns)
            first = next(batches, None)
        if first is not None:
            return pa.Table.from_batches([first]).select(columns)
    parts: list[pa.Table] = []
    rows = 0
    for table in source.tables(columns):
        parts.append(table.select(columns))
        rows += table.num_rows
        if rows >= HEAD_ROWS:
            break
    if not parts:
        return source.schema.empty_table().select(columns)
    return pa.concat_tables(parts, promote_options="permissive").slice(0, HEAD_ROWS)
