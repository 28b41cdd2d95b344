"""Promotion requests and their decisions (approve/reject with a comment) as rows.

Each function takes a connection already in a transaction; :class:`keel.registry.Registry`
owns the transactions, the audit rows and the events.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from keel.errors import NotFoundError
from keel.registry.records import Decision, PromotionRequest
from keel.store.tables import promotion_decisions, promotion_requests, utc_now

__all__ = [
    "add_decision",
    "create_request",
    "list_requests",
    "load_request",
    "pending_for_version",
    "set_status",
]


def create_request(
    conn: sa.Connection,
    *,
    name: str,
    version: int,
    alias: str,
    from_version: int | None,
    requested_by: str,
    reason: str,
    required: int,
) -> PromotionRequest:
    """Insert a pending request; returns it."""
    request_id = uuid.uuid4().hex[:12]
    now = utc_now()
    conn.execute(
        sa.insert(promotion_requests).values(
            id=request_id,
            name=name,
            version=version,
            alias=alias,
            from_version=from_version,
            requested_by=requested_by,
            reason=reason,
            required_approvals=required,
            status="pending",
            created_at=now,
            decided_at=None,
        )
    )
    return PromotionRequest(
        request_id,
        name,
        version,
        alias,
        from_version,
        requested_by,
        reason,
        required,
        "pending",
        now,
        None,
    )


def load_request(conn: sa.Connection, request_id: str, *, lock: bool = False) -> PromotionRequest:
    """One request with its decisions; ``lock`` takes its row lock (PostgreSQL) first.

    Raises:
        NotFoundError: No request has that id (the message lists pending ones).
    """
    query = sa.select(promotion_requests).where(promotion_requests.c.id == request_id)
    row = conn.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        pending = list(
            conn.scalars(
                sa.select(promotion_requests.c.id)
                .where(promotion_requests.c.status == "pending")
                .order_by(promotion_requests.c.created_at)
                .limit(10)
            )
        )
        listing = ", ".join(pending) if pending else "none"
        msg = (
            f"no promotion request {request_id!r}; pending requests: {listing}. "
            "List them with `keel models requests --pending`."
        )
        raise NotFoundError(msg, field="request_id")
    return _request(row, _decisions(conn, [request_id]).get(request_id, ()))


def list_requests(
    conn: sa.Connection, *, pending_only: bool, name: str | None, limit: int
) -> list[PromotionRequest]:
    """Requests newest first (only pending ones, of one model, when asked)."""
    query = sa.select(promotion_requests)
    if pending_only:
        query = query.where(promotion_requests.c.status == "pending")
    if name is not None:
        query = query.where(promotion_requests.c.name == name)
    query = query.order_by(promotion_requests.c.created_at.desc()).limit(limit)
    rows = list(conn.execute(query).mappings())
    decided = _decisions(conn, [row["id"] for row in rows])
    return [_request(row, decided.get(row["id"], ())) for row in rows]


def pending_for_version(conn: sa.Connection, name: str, version: int) -> list[str]:
    """Ids of pending requests that would move an alias to ``name`` version ``version``."""
    return list(
        conn.scalars(
            sa.select(promotion_requests.c.id).where(
                promotion_requests.c.name == name,
                promotion_requests.c.version == version,
                promotion_requests.c.status == "pending",
            )
        )
    )


def add_decision(
    conn: sa.Connection, request_id: str, actor: str, decision: str, comment: str
) -> Decision:
    """Record one person's approve or reject."""
    now = utc_now()
    conn.execute(
        sa.insert(promotion_decisions).values(
            request_id=request_id, actor=actor, decision=decision, comment=comment, at=now
        )
    )
    return Decision(actor, decision, comment, now)


def set_status(conn: sa.Connection, request_ids: list[str], status: str) -> None:
    """Close requests (applied, rejected or cancelled) now."""
    if request_ids:
        conn.execute(
            sa.update(promotion_requests)
            .where(promotion_requests.c.id.in_(request_ids))
            .values(status=status, decided_at=utc_now())
        )


def _decisions(conn: sa.Connection, ids: list[str]) -> dict[str, tuple[Decision, ...]]:
    if not ids:
        return {}
    found: dict[str, list[Decision]] = {}
    rows = conn.execute(
        sa.select(promotion_decisions)
        .where(promotion_decisions.c.request_id.in_(ids))
        .order_by(promotion_decisions.c.at)
    ).mappings()
    for row in rows:
        found.setdefault(row["request_id"], []).append(
            Decision(row["actor"], row["decision"], row["comment"], row["at"])
        )
    return {key: tuple(value) for key, value in found.items()}


def _request(row: sa.RowMapping, decisions: tuple[Decision, ...]) -> PromotionRequest:
    return PromotionRequest(
        id=row["id"],
        name=row["name"],
        version=int(row["version"]),
        alias=row["alias"],
        from_version=row["from_version"],
        requested_by=row["requested_by"],
        reason=row["reason"],
        required_approvals=int(row["required_approvals"]),
        status=row["status"],
        created_at=row["created_at"],
        decided_at=row["decided_at"],
        decisions=decisions,
    )
