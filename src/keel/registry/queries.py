"""The registry's read queries and row -> record conversions (used by :class:`Registry`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.registry.records import AliasMove, AuditEntry, VersionInfo
from keel.store.tables import alias_history, audit_log, model_versions

__all__ = [
    "alias_move",
    "alias_moves",
    "archived",
    "audit_entries",
    "previous_holder",
    "version_info",
]


def audit_entries(
    conn: sa.Connection,
    target: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
) -> list[AuditEntry]:
    """Audit rows newest first, filtered; each filter walks its ``(column, id)`` index."""
    query = sa.select(audit_log)
    if target is not None:
        query = query.where(audit_log.c.target == target)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    order = [audit_log.c.id.desc()]
    if since is not None:
        query = query.where(audit_log.c.at >= since)
        if target is None and actor is None and action is None:
            # walk (at, id) from the newest: ids grow with time in an append-only log, and
            # ordering by id alone makes SQLite scan every row older than the window too
            order = [audit_log.c.at.desc(), audit_log.c.id.desc()]
    rows = conn.execute(query.order_by(*order).limit(limit)).mappings()
    return [
        AuditEntry(
            id=int(r["id"]),
            at=r["at"],
            actor=r["actor"],
            action=r["action"],
            target=r["target"],
            details=dict(r["details"]),
        )
        for r in rows
    ]


def alias_moves(
    conn: sa.Connection, name: str, alias: str
) -> list[tuple[int | None, int | None, str]]:
    """``(version, previous_version, action)`` of every move of ``name@alias``, newest first."""
    query = (
        sa.select(alias_history.c.version, alias_history.c.previous_version, alias_history.c.action)
        .where(alias_history.c.name == name, alias_history.c.alias == alias)
        .order_by(alias_history.c.id.desc())
    )
    return [(v, p, str(a)) for v, p, a in conn.execute(query)]


def previous_holder(moves: list[tuple[int | None, int | None, str]], current: int) -> int | None:
    """The version that held the alias before ``current`` was last promoted to it (rollbacks
    are skipped, so rolling back twice walks further back instead of flipping)."""
    for version, previous, action in moves:
        if version == current and action != "rollback":
            return int(previous) if previous is not None else None
    for version, previous, _ in moves:
        if version == current:
            return int(previous) if previous is not None else None
    return None


def archived(
    conn: sa.Connection, name: str, version: int | None = None
) -> dict[int, tuple[datetime, str]]:
    query = sa.select(
        model_versions.c.version, model_versions.c.archived_at, model_versions.c.archived_by
    ).where(model_versions.c.name == name, model_versions.c.archived_at.is_not(None))
    if version is not None:
        query = query.where(model_versions.c.version == version)
    return {int(v): (at, by or "unknown") for v, at, by in conn.execute(query)}


def version_info(found: Any, archived: tuple[datetime, str] | None) -> VersionInfo:
    return VersionInfo(
        name=found.name,
        version=found.version,
        package_sha256=found.package_sha256,
        run_id=found.run_id,
        created_at=found.created_at,
        metrics=dict(found.metrics),
        aliases=tuple(found.aliases),
        archived_at=archived[0] if archived else None,
        archived_by=archived[1] if archived else None,
    )


def alias_move(row: sa.RowMapping, audit_id: int | None) -> AliasMove:
    return AliasMove(
        name=row["name"],
        alias=row["alias"],
        version=row["version"],
        previous_version=row["previous_version"],
        action=row["action"],
        actor=row["actor"],
        reason=row["reason"],
        at=row["at"],
        audit_id=audit_id,
    )
