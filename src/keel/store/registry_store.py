"""The model-registry and audit-log methods of :class:`keel.store.MetadataStore`.

They are thin: each is one transaction around a query in :mod:`keel.store.registry_tables`.
The registry proper (promotion with approvals, rollback, archive, webhooks) is
:class:`keel.registry.Registry`, one layer up; these stay for the store's own callers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError
from keel.store import registry_tables
from keel.store.database import Database
from keel.store.tables import audit_log
from keel.store.values import check_sha, to_json
from keel.types import ModelVersion

__all__ = ["RegistryMethods"]

_REGISTER_ATTEMPTS = 20


class RegistryMethods:
    """Model versions, aliases and the audit log (mixed into ``MetadataStore``)."""

    _db: Database
    default_alias: str
    """What a bare model name resolves to: a project's ``registry.alias`` (given by
    :attr:`keel.project.Project.metadata`), ``production`` for a store opened on its own."""

    def register_model_version(
        self,
        name: str,
        *,
        package_sha256: str,
        run_id: str | None,
        metrics: Mapping[str, Any],
        actor: str = "keel",
    ) -> ModelVersion:
        """Register the next version of a model, creating the model if it is new.

        The version number is ``max + 1``, allocated inside the transaction; concurrent
        registrations each get their own number. Non-finite metric values are stored as null.

        Args:
            name: Model name (letters, digits, ``_``, ``.``, ``-``).
            package_sha256: sha256 of the model package artifact.
            run_id: The run that produced the package, or None.
            metrics: JSON-able evaluation metrics.
            actor: Who registered it, for the audit log.

        Returns:
            The new version.

        Raises:
            NotFoundError: ``run_id`` names no recorded run.
            ConflictError: The version could not be allocated after repeated contention.
        """
        registry_tables.check_model_name(name)
        sha = check_sha(package_sha256, "package_sha256")
        clean = to_json(metrics, "metrics")
        for attempt in range(_REGISTER_ATTEMPTS):
            try:
                with self._db.write() as conn:
                    return registry_tables.register(
                        conn, name, package_sha256=sha, run_id=run_id, metrics=clean, actor=actor
                    )
            except sa.exc.IntegrityError as exc:
                if attempt == _REGISTER_ATTEMPTS - 1:
                    msg = (
                        f"could not allocate a version of model {name!r} after "
                        f"{_REGISTER_ATTEMPTS} attempts: other writers kept taking it. Retry."
                    )
                    raise ConflictError(msg, field="name") from exc
                time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """One version of a model, with the aliases that point at it.

        Raises:
            NotFoundError: The model or version does not exist (the message lists what does).
        """
        with self._db.read() as conn:
            return registry_tables.load_version(conn, name, version)

    def resolve(self, ref: str) -> ModelVersion:
        """Resolve a model reference to a version.

        ``name`` means the :attr:`default_alias` (the project's ``registry.alias``, else
        ``production``) when set, else the latest version; ``name@3`` is version 3;
        ``name@latest`` the newest; ``name@staging`` an alias.

        Raises:
            NotFoundError: Unknown model, version or alias; the message lists the known ones.
            ConfigError: ``ref`` is empty or ends in ``@``.
        """
        with self._db.read() as conn:
            return registry_tables.resolve(conn, ref, default_alias=self.default_alias)

    def list_models(self) -> list[dict[str, Any]]:
        """One summary per model, sorted by name.

        Returns:
            Dicts with ``name``, ``latest_version``, ``aliases`` (alias -> version),
            ``versions`` (count), ``created_at`` and ``description``.
        """
        with self._db.read() as conn:
            return registry_tables.list_models(conn)

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first. NotFoundError for an unknown model."""
        with self._db.read() as conn:
            return registry_tables.list_versions(conn, name)

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str = "keel", reason: str = ""
    ) -> None:
        """Point an alias (``production``, ``staging``, ...) at a version, and audit the move.

        The audit row (action ``set_alias``) records the version the alias pointed at before.

        Raises:
            NotFoundError: The model or version does not exist.
            ConfigError: The alias is invalid or reserved (``latest``, digits).
        """
        registry_tables.check_alias(alias)
        with self._db.write() as conn:
            registry_tables.set_alias(conn, name, alias, version, actor=actor, reason=reason)

    def delete_alias(self, name: str, alias: str, *, actor: str = "keel") -> None:
        """Remove an alias and audit it. NotFoundError when the alias is not set."""
        with self._db.write() as conn:
            registry_tables.delete_alias(conn, name, alias, actor=actor)

    # -- audit log ---------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        target: str,
        *,
        actor: str = "keel",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an entry to the audit log (e.g. ``deploy``, ``rollback``, ``promote``)."""
        clean = to_json(details or {}, "details")
        with self._db.write() as conn:
            registry_tables.record_audit(conn, action, target, actor, clean)

    def list_audit(self, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries newest first: dicts with id, at, actor, action, target, details."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(audit_log.c.target == target)
        with self._db.read() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
