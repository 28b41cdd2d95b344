"""The deployment tables' queries: deployments, their event history, traffic stats, the lease.

Plain functions over a connection, so the caller chooses the transaction (the controller writes
a decision, its event and its audit row in one). At most one deployment per model name is
active: the ``active_name`` column holds the name while it is, and a unique constraint refuses
a second one on every database (:func:`insert` turns that into a :class:`ConflictError`).

The controller lease is a row of ``scheduler_leases`` named :data:`CONTROLLER_LEASE`: of many
servers, the one holding it unexpired drives the canaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from keel.errors import ConflictError, NotFoundError
from keel.store.production_tables import deployment_events, deployment_stats, deployments
from keel.store.tables import scheduler_leases, utc_now

__all__ = [
    "CONTROLLER_LEASE",
    "active",
    "add_event",
    "add_stats",
    "events_of",
    "insert",
    "list_deployments",
    "load",
    "model_stats_key",
    "prune_deployment_stats",
    "prune_stats",
    "rollup_stats",
    "stats_between",
    "stats_of",
    "sum_stats",
    "take_lease",
    "update",
]

CONTROLLER_LEASE = "deployments"
"""The lease a server holds while it runs the deployment controller."""


def insert(conn: sa.Connection, row: Mapping[str, Any]) -> None:
    """Add a deployment; ConflictError when the model already has an active one."""
    name = row["model_name"]
    current = conn.execute(
        sa.select(deployments.c.id, deployments.c.kind).where(deployments.c.active_name == name)
    ).first()
    if current is not None:
        raise _second(name, current.id, current.kind)
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(deployments).values(**row, active_name=name))
    except sa.exc.IntegrityError as exc:  # a concurrent creator won the race
        raise _second(name, "(just created)", "deployment") from exc


def _second(name: str, other: str, kind: str) -> ConflictError:
    msg = (
        f"model {name!r} already has an active {kind} deployment {other}; promote or abort it "
        f"first (`keel deployments promote {name}` or `keel deployments abort {name}`)."
    )
    return ConflictError(msg, field="name")


def load(conn: sa.Connection, ref: str) -> dict[str, Any]:
    """A deployment by id, or the active (else latest) one of a model name.

    Raises:
        NotFoundError: Neither a deployment id nor a model with deployments.
    """
    row = conn.execute(sa.select(deployments).where(deployments.c.id == ref)).mappings().first()
    if row is None:
        query = (
            sa.select(deployments)
            .where(deployments.c.model_name == ref)
            .order_by((deployments.c.active_name.is_(None)), deployments.c.created_at.desc())
            .limit(1)
        )
        row = conn.execute(query).mappings().first()
    if row is None:
        msg = (
            f"no deployment {ref!r}: name a model with a deployment or a deployment id "
            "(`keel deployments list` shows them)."
        )
        raise NotFoundError(msg, field="deployment")
    return dict(row)


def active(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every active deployment (one indexed query: the servers poll it every interval)."""
    query = sa.select(deployments).where(deployments.c.active_name.is_not(None))
    return [dict(r) for r in conn.execute(query).mappings()]


def list_deployments(
    conn: sa.Connection, *, name: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Deployments newest first, of one model name or all."""
    query = sa.select(deployments).order_by(deployments.c.created_at.desc()).limit(limit)
    if name is not None:
        query = query.where(deployments.c.model_name == name)
    return [dict(r) for r in conn.execute(query).mappings()]


def update(
    conn: sa.Connection, deployment_id: str, *, since: datetime | None = None, **values: Any
) -> None:
    """Change an active deployment; ConflictError when it ended meanwhile, or (``since``: the
    interval start the caller measured from) another controller already decided on it."""
    if values.get("status", "active") != "active":
        values["active_name"] = None
        values.setdefault("ended_at", utc_now())
    values.setdefault("updated_at", utc_now())
    query = sa.update(deployments).where(
        deployments.c.id == deployment_id, deployments.c.status == "active"
    )
    if since is not None:
        query = query.where(deployments.c.step_started_at == since)
    done = conn.execute(query.values(**values))
    if done.rowcount != 1:
        msg = f"deployment {deployment_id} changed meanwhile (another process decided on it)."
        raise ConflictError(msg, field="deployment")


def add_event(
    conn: sa.Connection, deployment_id: str, action: str, actor: str, details: Mapping[str, Any]
) -> None:
    """Append one decision to a deployment's history."""
    conn.execute(
        sa.insert(deployment_events).values(
            deployment_id=deployment_id,
            action=action,
            actor=actor,
            at=utc_now(),
            details=dict(details),
        )
    )


def events_of(conn: sa.Connection, deployment_id: str) -> list[dict[str, Any]]:
    """A deployment's history, oldest first."""
    query = (
        sa.select(deployment_events)
        .where(deployment_events.c.deployment_id == deployment_id)
        .order_by(deployment_events.c.id)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


_COUNTS = ("requests", "errors", "compared", "disagreed", "rejected")
"""The counts a traffic row adds up."""


def add_stats(conn: sa.Connection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert per-interval traffic rows (server, deployment_id, version, role, bucket,
    requests, errors, latency, compared, disagreed, rejected); how many."""
    batch = [dict(row) for row in rows]
    if batch:
        conn.execute(sa.insert(deployment_stats), batch)
    return len(batch)


def stats_between(
    conn: sa.Connection,
    deployment_id: str,
    since: datetime,
    until: datetime,
    *,
    roles: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Traffic rows of a deployment with ``since < bucket <= until``."""
    query = sa.select(deployment_stats).where(
        deployment_stats.c.deployment_id == deployment_id,
        deployment_stats.c.bucket > since,
        deployment_stats.c.bucket <= until,
    )
    if roles is not None:
        query = query.where(deployment_stats.c.role.in_(list(roles)))
    return [dict(r) for r in conn.execute(query).mappings()]


def sum_stats(
    conn: sa.Connection,
    deployment_id: str,
    since: datetime | None,
    until: datetime | None,
    *,
    buckets: int,
) -> list[dict[str, Any]]:
    """A deployment's traffic with ``since < bucket <= until`` (None: unbounded) added up per
    version and role, in the database: one ``GROUP BY`` query (SQLite and PostgreSQL), one row
    per version and role, however many servers and flushes wrote it.

    A row is stamped with its flush time, the end of the span it counts: the row that straddles
    ``since`` (requests from just before it and after it) counts whole, and adjacent windows
    ``(a, b]`` and ``(b, c]`` count each row once.

    Each answer has ``version``, ``role``, ``requests``, ``errors``, ``compared``,
    ``disagreed``, ``rejected`` and ``latency`` (``{bucket index: count}`` for the non-empty
    buckets among ``0 .. buckets - 1``: the stored histograms added bucket by bucket), ordered
    by version and role.
    """
    c = deployment_stats.c
    postgres = conn.dialect.name == "postgresql"
    # PostgreSQL: each row's JSON parsed once (to jsonb, materialized), not once per bucket
    latency: Any = sa.cast(c.latency, postgresql.JSONB) if postgres else c.latency
    selected = sa.select(
        c.version,
        c.role,
        c.requests,
        c.errors,
        c.compared,
        c.disagreed,
        c.rejected,
        latency.label("latency"),
    ).where(c.deployment_id == deployment_id)
    if since is not None:
        selected = selected.where(c.bucket > since)
    if until is not None:
        selected = selected.where(c.bucket <= until)
    r = selected.cte("rows").prefix_with("MATERIALIZED").c if postgres else selected.subquery().c
    counts = [
        sa.func.coalesce(sa.func.sum(r.latency[str(index)].as_integer()), 0).label(f"b{index}")
        for index in range(buckets)
    ]
    query = (
        sa.select(
            r.version,
            r.role,
            sa.func.sum(r.requests).label("requests"),
            sa.func.sum(r.errors).label("errors"),
            sa.func.sum(r.compared).label("compared"),
            sa.func.sum(r.disagreed).label("disagreed"),
            sa.func.sum(r.rejected).label("rejected"),
            *counts,
        )
        .group_by(r.version, r.role)
        .order_by(r.version, r.role)
    )
    answer = []
    for row in conn.execute(query).mappings():
        counted = {str(i): int(row[f"b{i}"]) for i in range(buckets) if row[f"b{i}"]}
        answer.append(
            {
                "version": row["version"],
                "role": row["role"],
                **{k: int(row[k] or 0) for k in _COUNTS},
                "latency": counted,
            }
        )
    return answer


def prune_deployment_stats(conn: sa.Connection, names: Sequence[str], before: datetime) -> int:
    """Delete the traffic rows of the deployments of models ``names`` with ``bucket < before``,
    except those an active deployment's checks still read (stamped after its current interval
    began); how many."""
    c, d = deployment_stats.c, deployments.c
    owned = sa.select(d.id).where(d.model_name.in_(list(names)))
    still_read = sa.exists().where(
        d.id == c.deployment_id, d.status == "active", c.bucket > d.step_started_at
    )
    done = conn.execute(
        sa.delete(deployment_stats).where(
            c.deployment_id.in_(owned), c.bucket < before, ~still_read
        )
    )
    return int(done.rowcount or 0)


def model_stats_key(name: str) -> str:
    """The ``deployment_id`` of a model's traffic rows outside any deployment.

    ``deployment_stats.deployment_id`` is not nullable: a served model without an active
    deployment counts its traffic under ``m-`` and a hash of its name (32 characters, never a
    deployment id: those are hex), so the rollout controller never reads those rows.
    """
    return "m-" + hashlib.blake2b(name.encode(), digest_size=15).hexdigest()


def stats_of(
    conn: sa.Connection, keys: Sequence[str], since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    """Traffic rows under any of ``keys`` (deployment ids, :func:`model_stats_key`) with
    ``since < bucket <= until`` (None: unbounded), oldest first."""
    query = sa.select(deployment_stats).where(deployment_stats.c.deployment_id.in_(list(keys)))
    if since is not None:
        query = query.where(deployment_stats.c.bucket > since)
    if until is not None:
        query = query.where(deployment_stats.c.bucket <= until)
    return [dict(r) for r in conn.execute(query.order_by(deployment_stats.c.bucket)).mappings()]


def prune_stats(conn: sa.Connection, keys: Sequence[str], before: datetime) -> int:
    """Delete the traffic rows under ``keys`` with ``bucket < before``; how many."""
    done = conn.execute(
        sa.delete(deployment_stats).where(
            deployment_stats.c.deployment_id.in_(list(keys)), deployment_stats.c.bucket < before
        )
    )
    return int(done.rowcount or 0)


ROLLUP_SERVER = "rollup"
"""The ``server`` of rows merged by :func:`rollup_stats`."""


def rollup_stats(conn: sa.Connection, keys: Sequence[str], before: datetime) -> int:
    """Merge the rows under ``keys`` stamped before ``before`` into one row per key, version,
    role and hour, stamped at the hour's end (server :data:`ROLLUP_SERVER`); how many rows were
    merged. Latency histograms add bucket by bucket, so percentiles read the same.

    Raises:
        ConflictError: Another process merged some of the rows meanwhile (nothing is changed:
            the caller's transaction rolls back).
    """
    c = deployment_stats.c
    query = sa.select(deployment_stats).where(
        c.deployment_id.in_(list(keys)), c.bucket < before, c.server != ROLLUP_SERVER
    )
    rows = conn.execute(query).mappings().all()
    if not rows:
        return 0
    merged: dict[tuple[str, str, str, datetime], dict[str, Any]] = {}
    for row in rows:  # stored rows (one per flush and version), never requests
        moment = row["bucket"] if row["bucket"].tzinfo else row["bucket"].replace(tzinfo=UTC)
        end = moment.replace(minute=0, second=0, microsecond=0)
        end += timedelta(hours=1) if end != moment else timedelta(0)
        key = (row["deployment_id"], row["version"], row["role"], end)
        into = merged.setdefault(key, {**dict.fromkeys(_COUNTS, 0), "latency": {}})
        for name in _COUNTS:
            into[name] += int(row[name])
        for bucket, count in (row["latency"] or {}).items():
            into["latency"][str(bucket)] = into["latency"].get(str(bucket), 0) + int(count)
    ids = [row["id"] for row in rows]
    deleted = 0
    for start in range(0, len(ids), 500):
        done = conn.execute(sa.delete(deployment_stats).where(c.id.in_(ids[start : start + 500])))
        deleted += int(done.rowcount or 0)
    if deleted != len(ids):
        msg = "another process merged these traffic rows meanwhile; retry."
        raise ConflictError(msg, field="deployment_stats")
    add_stats(
        conn,
        (
            {"server": ROLLUP_SERVER, "deployment_id": k, "version": v, "role": r, "bucket": end,
             **values}
            for (k, v, r, end), values in merged.items()
        ),
    )  # fmt: skip
    return len(ids)


def take_lease(
    conn: sa.Connection, owner: str, *, seconds: float, now: datetime | None = None
) -> bool:
    """Take or renew the controller lease for ``owner``; False while another holds it."""
    now = now or utc_now()
    lease = scheduler_leases.c
    mine = lease.owner == owner
    done = conn.execute(
        sa.update(scheduler_leases)
        .where(lease.name == CONTROLLER_LEASE, sa.or_(lease.expires_at <= now, mine))
        .values(
            owner=owner,
            generation=lease.generation + sa.case((mine, 0), else_=1),
            acquired_at=sa.case((mine, lease.acquired_at), else_=now),
            renewed_at=now,
            expires_at=now + timedelta(seconds=seconds),
        )
    )
    if done.rowcount == 1:
        return True
    exists = conn.scalar(sa.select(lease.name).where(lease.name == CONTROLLER_LEASE))
    if exists is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                sa.insert(scheduler_leases).values(
                    name=CONTROLLER_LEASE,
                    owner=owner,
                    generation=1,
                    acquired_at=now,
                    renewed_at=now,
                    expires_at=now + timedelta(seconds=seconds),
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True
