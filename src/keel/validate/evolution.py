"""Schema evolution: every change between two schemas, each classified breaking or not.

``keel schema diff OLD NEW`` prints these; a change is breaking when data or requests valid
under the old schema can fail under the new one, or when the model's inputs or target change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from keel.validate.schema import ColumnSchema, Schema

__all__ = ["SchemaChange", "diff_schemas"]


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """One difference between two schemas, and whether it breaks data or clients of the old one.

    ``change`` is one of ``column_added``, ``column_removed``, ``type_changed``,
    ``role_changed``, ``nullability_changed``, ``null_fraction_changed``, ``range_widened``,
    ``range_narrowed``, ``categories_added``, ``categories_removed``, ``domain_opened``,
    ``domain_closed``, ``setting_changed``.
    """

    column: str | None
    change: str
    breaking: bool
    message: str
    before: Any = None
    after: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form with stable keys."""
        return asdict(self)


_MODEL_ROLES = ("feature", "sensitive")


def diff_schemas(old: Schema, new: Schema) -> list[SchemaChange]:
    """Every change from ``old`` to ``new``, each classified breaking or not.

    A change is breaking when data or requests valid under ``old`` can fail under ``new``, or
    when the model's inputs or target change: a removed column, an added required column, a
    type change (except int to float), a role change into or out of the model's inputs or
    involving the target, a column made non-nullable or with a lower null ceiling, a narrowed
    range, removed categories, or a closed domain (categories where there were none).

    Args:
        old: The schema data and clients were built against.
        new: The proposed schema.

    Returns:
        Changes in column order (old columns first, then added ones).
    """
    changes: list[SchemaChange] = []
    for name, before in old.columns.items():
        after = new.columns.get(name)
        if after is None:
            message = f"column '{name}' removed ({before.type}, {before.role})"
            changes.append(SchemaChange(name, "column_removed", True, message, before.type))
        else:
            changes.extend(_column_changes(name, before, after))
    for name, after in new.columns.items():
        if name not in old.columns:
            required = not after.nullable
            message = f"column '{name}' added ({after.type}, {after.role}"
            message += ", required)" if required else ", nullable)"
            changes.append(SchemaChange(name, "column_added", required, message, None, after.type))
    if old.severities != new.severities:
        message = f"schema-wide severities {old.severities} -> {new.severities}"
        changes.append(
            SchemaChange(None, "setting_changed", False, message, old.severities, new.severities)
        )
    return changes


def _column_changes(name: str, a: ColumnSchema, b: ColumnSchema) -> list[SchemaChange]:
    out: list[SchemaChange] = []
    if a.type != b.type:
        breaking = not (a.type == "int" and b.type == "float")
        message = f"'{name}' type {a.type} -> {b.type}"
        out.append(SchemaChange(name, "type_changed", breaking, message, a.type, b.type))
    if a.role != b.role:
        moved = (a.role in _MODEL_ROLES) != (b.role in _MODEL_ROLES)
        breaking = moved or "target" in (a.role, b.role)
        message = f"'{name}' role {a.role} -> {b.role}"
        out.append(SchemaChange(name, "role_changed", breaking, message, a.role, b.role))
    if a.nullable != b.nullable:
        message = f"'{name}' {'nullable' if b.nullable else 'no longer nullable'}"
        out.append(
            SchemaChange(name, "nullability_changed", a.nullable, message, a.nullable, b.nullable)
        )
    if a.max_null_fraction != b.max_null_fraction:
        breaking = b.max_null_fraction < a.max_null_fraction
        message = f"'{name}' max null fraction {a.max_null_fraction} -> {b.max_null_fraction}"
        out.append(
            SchemaChange(
                name,
                "null_fraction_changed",
                breaking,
                message,
                a.max_null_fraction,
                b.max_null_fraction,
            )
        )
    out.extend(_range_changes(name, a, b))
    out.extend(_category_changes(name, a, b))
    out.extend(_setting_changes(name, a, b))
    return out


def _range_changes(name: str, a: ColumnSchema, b: ColumnSchema) -> list[SchemaChange]:
    if (a.min, a.max) == (b.min, b.max):
        return []
    low = -math.inf if a.min is None else a.min, -math.inf if b.min is None else b.min
    high = math.inf if a.max is None else a.max, math.inf if b.max is None else b.max
    narrowed = low[1] > low[0] or high[1] < high[0]
    change = "range_narrowed" if narrowed else "range_widened"
    message = f"'{name}' range [{a.min}, {a.max}] -> [{b.min}, {b.max}]"
    return [SchemaChange(name, change, narrowed, message, [a.min, a.max], [b.min, b.max])]


def _category_changes(name: str, a: ColumnSchema, b: ColumnSchema) -> list[SchemaChange]:
    if a.categories == b.categories:
        return []
    if a.categories is None or b.categories is None:
        closed = a.categories is None
        change = "domain_closed" if closed else "domain_opened"
        message = f"'{name}' category set {'added' if closed else 'removed (any value allowed)'}"
        return [SchemaChange(name, change, closed, message, a.categories, b.categories)]
    out = []
    removed = sorted(set(a.categories) - set(b.categories))
    added = sorted(set(b.categories) - set(a.categories))
    if removed:
        message = f"'{name}' categories removed: {', '.join(removed)}"
        out.append(SchemaChange(name, "categories_removed", True, message, removed, None))
    if added:
        message = f"'{name}' categories added: {', '.join(added)}"
        out.append(SchemaChange(name, "categories_added", False, message, None, added))
    return out


_STRUCTURAL = {"type", "role", "nullable", "max_null_fraction", "min", "max", "categories"}


def _setting_changes(name: str, a: ColumnSchema, b: ColumnSchema) -> list[SchemaChange]:
    before, after = a.to_dict(), b.to_dict()
    return [
        SchemaChange(
            name,
            "setting_changed",
            False,
            f"'{name}' {key} {before[key]} -> {after[key]}",
            before[key],
            after[key],
        )
        for key in before
        if key not in _STRUCTURAL and before[key] != after[key]
    ]
