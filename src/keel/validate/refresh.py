"""A stale ``schema.yaml``: when the data's columns or types no longer match the reviewed schema,
and how to refresh it without losing the reviewer's edits.

:func:`stale_changes` lists what no longer matches (columns added or removed, types changed) —
ranges, categories and thresholds are the reviewer's contract, not staleness: data outside them
is what validation reports. :func:`refresh_schema` merges a freshly inferred schema into the
reviewed one: unchanged columns keep every edit, a column whose type changed takes the new type
and domain but keeps its role, drift thresholds, severities and other settings, new columns come
in as inferred, removed ones go.
"""

from __future__ import annotations

from dataclasses import fields, replace

from keel.validate.evolution import SchemaChange, diff_schemas
from keel.validate.schema import ColumnSchema, Schema

__all__ = ["STALE_CHANGES", "describe_changes", "refresh_schema", "stale_changes"]

STALE_CHANGES = ("column_added", "column_removed", "type_changed")
"""The kinds of :class:`~keel.validate.evolution.SchemaChange` that make a schema stale."""

# What inference derives from the data; everything else on a column is a reviewer's setting.
_FROM_DATA = frozenset(
    {"type", "unit", "nullable", "max_null_fraction", "min", "max", "categories",
     "true_values", "false_values"}
)  # fmt: skip


# (reviewed type, inferred type) pairs where the reviewed type still takes the data, so a
# reviewer's choice is not staleness: whole numbers in a float column, dates kept as dates.
_ACCEPTS = frozenset(
    {("float", "int"), ("date", "timestamp"), ("timestamp", "date"), ("date", "string"),
     ("timestamp", "string")}
)  # fmt: skip


def stale_changes(reviewed: Schema, inferred: Schema) -> list[SchemaChange]:
    """What in ``reviewed`` no longer matches data whose schema is ``inferred``.

    A column added or removed, or a type the reviewed schema cannot take from the data. Types
    that still take it are a reviewer's choice, not staleness: ``float`` for whole numbers,
    ``date``/``timestamp`` for either or for date strings, ``string`` for a text column of two
    boolean spellings (``Yes``/``No``) that inference would make ``bool``.

    Args:
        reviewed: The schema in ``schema.yaml``.
        inferred: The schema inferred from the current data's statistics.

    Returns:
        The changes, in column order; empty when the schema still fits the data.
    """
    return [
        change
        for change in diff_schemas(reviewed, inferred)
        if change.change in STALE_CHANGES
        and not (change.change == "type_changed" and _accepts(reviewed, inferred, change))
    ]


def _accepts(reviewed: Schema, inferred: Schema, change: SchemaChange) -> bool:
    if (change.before, change.after) in _ACCEPTS:
        return True
    fresh = inferred.columns[str(change.column)]
    spelled = fresh.true_values is not None  # booleans written as text
    return (change.before, change.after) == ("string", "bool") and spelled


def refresh_schema(reviewed: Schema, inferred: Schema) -> Schema:
    """``reviewed`` brought up to date with the data: columns and types as ``inferred``.

    Args:
        reviewed: The schema in ``schema.yaml`` (with the reviewer's edits).
        inferred: The schema inferred from the current data's statistics.

    Returns:
        The reviewed columns still in the data, in the reviewed order, then the new ones in the
        data's order: an unchanged column exactly as reviewed; a column whose type changed with
        the inferred type and domain (range, categories, nullability) and the reviewed role,
        thresholds, severities and other settings; a new column as inferred. Schema-wide
        severities stay as reviewed.
    """
    stale = {(c.column, c.change) for c in stale_changes(reviewed, inferred)}
    order = [n for n in reviewed.columns if n in inferred.columns]
    order += [n for n in inferred.columns if n not in reviewed.columns]
    columns: dict[str, ColumnSchema] = {}
    for name in order:
        fresh, before = inferred.columns[name], reviewed.columns.get(name)
        if before is None:
            columns[name] = fresh
        elif (name, "type_changed") in stale:
            kept = {f.name: getattr(before, f.name) for f in fields(ColumnSchema)}
            columns[name] = replace(fresh, **{k: v for k, v in kept.items() if k not in _FROM_DATA})
        else:
            columns[name] = before
    return Schema(columns=columns, severities=dict(reviewed.severities))


def describe_changes(changes: list[SchemaChange]) -> str:
    """The changes as indented lines, for a message."""
    return "\n".join(f"  - {change.message}" for change in changes)
