"""The model registry: versions, aliases, promotion with approvals, rollback, archive, audit.

Every change is one transaction that writes exactly one audit row (who, when, action, target,
and in ``details`` from, to and why) and the event it emits (``events`` table, plus the webhook
deliveries it owes). Moving an alias is an optimistic compare-and-set on the version the caller
read: of two promoters racing for one alias, one wins and the other gets a ConflictError naming
what moved (on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.config.registry import RegistryConfig
from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.registry import queries as q
from keel.registry import requests as rq
from keel.registry.records import (
    AliasMove,
    AuditEntry,
    ModelSummary,
    PromotionRequest,
    VersionInfo,
)
from keel.settings import current_actor
from keel.store import registry_tables as rt
from keel.store.database import Database
from keel.store.tables import alias_history, aliases, model_versions, utc_now
from keel.store.values import check_sha, to_json

__all__ = ["UNSET", "Registry"]

_REGISTER_ATTEMPTS = 8
UNSET = rt.ANY
"""``expected`` default: compare against the holder read just before the move."""


class Registry:
    """The model registry over a metadata database.

    Args:
        db: The metadata database (``MetadataStore.database``).
        config: keel.yaml's ``registry:`` section (approvals, webhooks); default: none.
        actor: Who acts (default: ``KEEL_ACTOR``, else the OS user).

    Example:
        >>> reg = keel.registry()                      # the project's registry
        >>> reg.promote("churn", 3, alias="production", reason="better AUC")
    """

    def __init__(
        self,
        db: Database,
        config: RegistryConfig | None = None,
        *,
        actor: str | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self.config = config or RegistryConfig()
        self.actor = current_actor(actor)
        self._on_close = on_close

    @property
    def database(self) -> Database:
        """The metadata database it works on."""
        return self._db

    def with_actor(self, actor: str | None) -> Registry:
        """The same registry acting as ``actor`` (None: the default actor); closing it does
        not close this one."""
        return Registry(self._db, self.config, actor=actor)

    def close(self) -> None:
        """Release what opened it (``keel.registry()`` opens the project's database)."""
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------

    def models(self) -> list[ModelSummary]:
        """Every model, sorted by name, with its version count, newest version and aliases."""
        with self._db.read() as conn:
            found = rt.list_models(conn)
        return [
            ModelSummary(
                name=m["name"],
                latest_version=m["latest_version"],
                versions=int(m["versions"]),
                aliases=tuple(sorted(m["aliases"].items())),
                created_at=m["created_at"],
                description=m["description"],
            )
            for m in found
        ]

    def versions(self, name: str, *, include_archived: bool = True) -> list[VersionInfo]:
        """Every version of ``name``, oldest first. NotFoundError for an unknown model."""
        with self._db.read() as conn:
            rt.check_model_name(name)
            listed = rt.list_versions(conn, name)
            archived = q.archived(conn, name)
        infos = [q.version_info(v, archived.get(v.version)) for v in listed]
        return infos if include_archived else [v for v in infos if not v.archived]

    def show(self, name: str, version: int) -> VersionInfo:
        """One version (archived ones too). NotFoundError lists what exists."""
        with self._db.read() as conn:
            found = rt.load_version(conn, name, version)
            return q.version_info(found, q.archived(conn, name, version).get(version))

    def resolve(self, ref: str) -> VersionInfo:
        """``name``, ``name@3``, ``name@latest`` or ``name@alias`` -> a loadable version.

        Raises:
            NotFoundError: Unknown model, version or alias, or the version is archived.
        """
        with self._db.read() as conn:
            found = rt.resolve(conn, ref)
        return q.version_info(found, None)

    def alias_history(
        self, name: str, alias: str | None = None, limit: int = 100
    ) -> list[AliasMove]:
        """Moves of ``name``'s aliases (or of one alias), newest first."""
        query = sa.select(alias_history).where(alias_history.c.name == name)
        if alias is not None:
            query = query.where(alias_history.c.alias == alias)
        query = query.order_by(alias_history.c.id.desc()).limit(limit)
        with self._db.read() as conn:
            rt.load_model(conn, name)
            rows = list(conn.execute(query).mappings())
        return [q.alias_move(row, None) for row in rows]

    def requests(
        self, *, pending: bool = False, name: str | None = None, limit: int = 100
    ) -> list[PromotionRequest]:
        """Promotion requests newest first (only pending ones when asked)."""
        with self._db.read() as conn:
            return rq.list_requests(conn, pending_only=pending, name=name, limit=limit)

    def request(self, request_id: str) -> PromotionRequest:
        """One promotion request with its decisions."""
        with self._db.read() as conn:
            return rq.load_request(conn, request_id)

    def audit(
        self,
        *,
        target: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Audit-log entries newest first, filtered by target, actor, action and time."""
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}", field="limit")
        with self._db.read() as conn:
            return q.audit_entries(conn, target, actor, action, since, limit)

    # -- changes -----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        package_sha256: str,
        run_id: str | None,
        metrics: Mapping[str, Any],
    ) -> VersionInfo:
        """Register the next version of ``name`` (audited, emits ``model_registered``)."""
        rt.check_model_name(name)
        sha = check_sha(package_sha256, "package_sha256")
        clean = to_json(metrics, "metrics")  # NaN and infinities become null
        for attempt in range(_REGISTER_ATTEMPTS):
            try:
                return self._register_once(name, sha, run_id, clean)
            except sa.exc.IntegrityError as exc:  # another writer took the number: retry
                if attempt == _REGISTER_ATTEMPTS - 1:
                    msg = (
                        f"could not allocate a version of model {name!r} after "
                        f"{_REGISTER_ATTEMPTS} attempts: other writers kept taking it. Retry."
                    )
                    raise ConflictError(msg, field="name") from exc
                time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _register_once(
        self, name: str, package_sha256: str, run_id: str | None, metrics: dict[str, Any]
    ) -> VersionInfo:
        with self._write() as conn:
            made = rt.register(
                conn,
                name,
                package_sha256=package_sha256,
                run_id=run_id,
                metrics=metrics,
                actor=self.actor,
                webhooks=self.config.webhooks,
            )
        return q.version_info(made, None)

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str = "production",
        reason: str = "",
        expected: int | object | None = UNSET,
    ) -> AliasMove | PromotionRequest:
        """Move ``alias`` to ``version``, or, when keel.yaml requires approvals for ``alias``,
        open a pending request that applies once enough others approve.

        Args:
            expected: The version you believe holds the alias (None: unset). Default: the one
                read just before the move; either way a concurrent move is a ConflictError.

        Returns:
            The move, or the pending :class:`PromotionRequest`.

        Raises:
            ConflictError: The version is archived, already holds the alias, or the alias moved
                under you; a pending request for the same move exists.
        """
        rt.check_alias(alias)
        seen = self._holder(name, alias) if expected is UNSET else expected
        assert seen is None or isinstance(seen, int)
        if seen == version:
            msg = f"{name}@{alias} already points at version {version}; nothing to do."
            raise ConflictError(msg, field="version")
        required = self.config.approvals_for(alias)
        with self._write() as conn:
            self._check_movable(conn, name, version, alias)
            if required == 0:
                previous, audit_id = rt.move_alias(
                    conn,
                    name,
                    alias,
                    version,
                    actor=self.actor,
                    reason=reason,
                    action="promote",
                    expected=seen,
                    webhooks=self.config.webhooks,
                )
                return AliasMove(
                    name,
                    alias,
                    version,
                    previous,
                    "promote",
                    self.actor,
                    reason,
                    utc_now(),
                    audit_id,
                )
            for open_request in rq.list_requests(conn, pending_only=True, name=name, limit=1000):
                if open_request.alias == alias and open_request.version == version:
                    msg = (
                        f"promotion request {open_request.id} to move {name}@{alias} to version "
                        f"{version} is already pending ({open_request.approvals}/"
                        f"{open_request.required_approvals} approvals); approve it with "
                        f"`keel models approve {open_request.id}`."
                    )
                    raise ConflictError(msg, field="version")
            made = rq.create_request(
                conn,
                name=name,
                version=version,
                alias=alias,
                from_version=seen,
                requested_by=self.actor,
                reason=reason,
                required=required,
            )
            details = {
                "request_id": made.id,
                "alias": alias,
                "version": version,
                "previous_version": seen,
                "required_approvals": required,
                "reason": reason,
            }
            self._audit_and_emit(conn, "request_promotion", "promotion_requested", name, details)
            return made

    def approve(self, request_id: str, *, comment: str = "") -> PromotionRequest:
        """Approve a pending request; the approval that reaches the required count applies the
        move (audited as ``promote``). The requester cannot approve their own request."""
        with self._write() as conn:
            request = rq.load_request(conn, request_id, lock=True)
            self._check_decidable(request)
            if self.actor == request.requested_by:
                msg = (
                    f"{self.actor} requested promotion {request_id} and cannot approve it; "
                    f"it needs {request.required_approvals} approval(s) from someone else: "
                    "approve as another actor (KEEL_ACTOR, or another token over REST)."
                )
                raise ConflictError(msg, field="actor")
            if any(d.actor == self.actor for d in request.decisions):
                msg = f"{self.actor} already decided on promotion request {request_id}."
                raise ConflictError(msg, field="actor")
            rq.add_decision(conn, request_id, self.actor, "approve", comment)
            approvals = request.approvals + 1
            details: dict[str, Any] = {
                "request_id": request_id,
                "alias": request.alias,
                "version": request.version,
                "requested_by": request.requested_by,
                "comment": comment,
                "approvals": approvals,
                "required_approvals": request.required_approvals,
            }
            if approvals < request.required_approvals:
                self._audit_and_emit(conn, "approve", "promotion_approved", request.name, details)
            else:
                self._check_movable(conn, request.name, request.version, request.alias)
                approvers = [d.actor for d in request.decisions if d.decision == "approve"]
                details["approved_by"] = [*approvers, self.actor]
                rt.move_alias(
                    conn,
                    request.name,
                    request.alias,
                    request.version,
                    actor=self.actor,
                    reason=request.reason,
                    action="promote",
                    details=details,
                    webhooks=self.config.webhooks,
                )
                payload = {**details, "name": request.name, "actor": self.actor, "applied": True}
                rt.emit_event(
                    conn, "promotion_approved", request.name, payload, self.config.webhooks
                )
                rq.set_status(conn, [request_id], "applied")
            return rq.load_request(conn, request_id)

    def reject(self, request_id: str, *, comment: str) -> PromotionRequest:
        """Reject a pending request with a comment (the requester may withdraw their own)."""
        if not comment.strip():
            raise ConfigError("a rejection needs a comment saying why", field="comment")
        with self._write() as conn:
            request = rq.load_request(conn, request_id, lock=True)
            self._check_decidable(request)
            if any(d.actor == self.actor for d in request.decisions):
                msg = f"{self.actor} already decided on promotion request {request_id}."
                raise ConflictError(msg, field="actor")
            rq.add_decision(conn, request_id, self.actor, "reject", comment)
            rq.set_status(conn, [request_id], "rejected")
            details = {
                "request_id": request_id,
                "alias": request.alias,
                "version": request.version,
                "requested_by": request.requested_by,
                "comment": comment,
            }
            self._audit_and_emit(conn, "reject", "promotion_rejected", request.name, details)
            return rq.load_request(conn, request_id)

    def rollback(
        self, name: str, *, alias: str = "production", to: int | None = None, reason: str = ""
    ) -> AliasMove:
        """Move ``alias`` back to the version that held it before the current one was promoted
        (or to ``to``, which must have held it before). No approval: it restores a holder.

        Raises:
            NotFoundError: The alias is not set.
            ConflictError: There is no earlier holder, ``to`` never held the alias, or the
                version is archived.
        """
        rt.check_alias(alias)
        with self._write() as conn:
            current = self._holder_in(conn, name, alias)
            if current is None:
                msg = f"{name}@{alias} is not set; there is nothing to roll back."
                raise NotFoundError(msg, field="alias")
            moves = q.alias_moves(conn, name, alias)
            target = to if to is not None else q.previous_holder(moves, current)
            held = {v for v, _, _ in moves if v is not None}
            if target is None:
                msg = (
                    f"{name}@{alias} (version {current}) has no earlier holder to roll back "
                    "to; promote the version it should hold instead."
                )
                raise ConflictError(msg, field="to")
            if target == current:
                raise ConflictError(f"{name}@{alias} already points at version {target}.")
            if target not in held:
                rt.load_version(conn, name, target)  # no such version: NotFoundError, listed
                msg = (
                    f"version {target} never held {name}@{alias} (holders: "
                    f"{', '.join(str(v) for v in sorted(held))}); rollback only returns to an "
                    f"earlier holder: promote version {target} instead."
                )
                raise ConflictError(msg, field="to")
            self._check_movable(conn, name, target, alias)
            previous, audit_id = rt.move_alias(
                conn,
                name,
                alias,
                target,
                actor=self.actor,
                reason=reason,
                action="rollback",
                expected=current,
                webhooks=self.config.webhooks,
            )
            return AliasMove(
                name, alias, target, previous, "rollback", self.actor, reason, utc_now(), audit_id
            )

    def remove_alias(self, name: str, alias: str, *, reason: str = "") -> int:
        """Remove an alias; the version it held."""
        with self._write() as conn:
            return rt.delete_alias(
                conn, name, alias, actor=self.actor, reason=reason, webhooks=self.config.webhooks
            )

    def archive(self, name: str, version: int, *, reason: str = "") -> VersionInfo:
        """Archive a version: kept with its history, but it cannot take an alias or be loaded.
        Pending requests for it are cancelled. Refused while an alias points at it."""
        with self._write() as conn:
            found = rt.load_version(conn, name, version)
            if found.aliases:
                msg = (
                    f"{found.name}@{version} holds {', '.join(found.aliases)}; move or roll "
                    "back those aliases before archiving it."
                )
                raise ConflictError(msg, field="version")
            if q.archived(conn, name, version).get(version) is not None:
                raise ConflictError(f"{name}@{version} is already archived.", field="version")
            cancelled = rq.pending_for_version(conn, name, version)
            rq.set_status(conn, cancelled, "cancelled")
            now = utc_now()
            conn.execute(
                sa.update(model_versions)
                .where(model_versions.c.name == name, model_versions.c.version == version)
                .values(archived_at=now, archived_by=self.actor)
            )
            details = {"version": version, "reason": reason, "cancelled_requests": cancelled}
            self._audit_and_emit(conn, "archive", "version_archived", name, details)
            return q.version_info(found, (now, self.actor))

    def restore(self, name: str, version: int, *, reason: str = "") -> VersionInfo:
        """Undo :meth:`archive`."""
        with self._write() as conn:
            found = rt.load_version(conn, name, version)
            if q.archived(conn, name, version).get(version) is None:
                raise ConflictError(f"{name}@{version} is not archived.", field="version")
            conn.execute(
                sa.update(model_versions)
                .where(model_versions.c.name == name, model_versions.c.version == version)
                .values(archived_at=None, archived_by=None)
            )
            details = {"version": version, "reason": reason}
            self._audit_and_emit(conn, "restore", "version_restored", name, details)
            return q.version_info(found, None)

    def delete(self, name: str, version: int, *, reason: str = "") -> VersionInfo:
        """Delete a version that no alias points at. Its package stays in the content-addressed
        artifact store: the run that built it still names it (lineage, reproduce) and other
        versions may share it; `keel doctor --fix` removes only blobs nothing refers to. Its
        audit history stays. Pending requests for it are cancelled."""
        with self._write() as conn:
            found = rt.load_version(conn, name, version)
            if found.aliases:
                msg = (
                    f"{name}@{version} holds {', '.join(found.aliases)}; move those aliases "
                    "first (only unaliased versions can be deleted)."
                )
                raise ConflictError(msg, field="version")
            cancelled = rq.pending_for_version(conn, name, version)
            rq.set_status(conn, cancelled, "cancelled")
            conn.execute(
                sa.delete(model_versions).where(
                    model_versions.c.name == name, model_versions.c.version == version
                )
            )
            details = {
                "version": version,
                "package_sha256": found.package_sha256,
                "reason": reason,
                "cancelled_requests": cancelled,
            }
            self._audit_and_emit(conn, "delete_version", "version_deleted", name, details)
            return q.version_info(found, None)

    # -- helpers -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._db.write() as conn:
            yield conn

    def _holder(self, name: str, alias: str) -> int | None:
        with self._db.read() as conn:
            return self._holder_in(conn, name, alias)

    @staticmethod
    def _holder_in(conn: sa.Connection, name: str, alias: str) -> int | None:
        rt.load_model(conn, name)
        found = conn.scalar(
            sa.select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == alias)
        )
        return None if found is None else int(found)

    @staticmethod
    def _check_movable(conn: sa.Connection, name: str, version: int, alias: str) -> None:
        rt.load_version(conn, name, version)
        when = q.archived(conn, name, version).get(version)
        if when is not None:
            msg = (
                f"version {version} of model {name!r} is archived (by {when[1]}) and cannot "
                f"take alias {alias!r}; restore it first with `keel models restore {name} "
                f"{version}`."
            )
            raise ConflictError(msg, field="version")

    @staticmethod
    def _check_decidable(request: PromotionRequest) -> None:
        if request.status != "pending":
            msg = (
                f"promotion request {request.id} is {request.status}, not pending; "
                "nothing to decide."
            )
            raise ConflictError(msg, field="request_id")

    def _audit_and_emit(
        self, conn: sa.Connection, action: str, kind: str, name: str, details: dict[str, Any]
    ) -> int:
        audit_id = rt.record_audit(conn, action, name, self.actor, details)
        payload = {**details, "name": name, "actor": self.actor, "audit_id": audit_id}
        rt.emit_event(conn, kind, name, payload, self.config.webhooks)
        return audit_id
