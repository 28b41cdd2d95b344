"""Queries over the model registry tables (models, model_versions, aliases) and the audit log.

Each function takes a connection that is already in a transaction; ``MetadataStore`` owns the
transactions, the retries and the public API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.errors import ConfigError, NotFoundError
from keel.store.tables import aliases, audit_log, model_versions, models, runs, utc_now
from keel.types import ModelVersion

__all__ = [
    "delete_alias",
    "list_models",
    "list_versions",
    "load_version",
    "record_audit",
    "register",
    "resolve",
    "set_alias",
]

DEFAULT_ALIAS = "production"
LATEST = "latest"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,99}")


def check_model_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is a valid model name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        msg = (
            f"invalid model name {name!r}: use 1-200 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no '@')"
        )
        raise ConfigError(msg, field="name")


def check_alias(alias: str) -> None:
    """Raise ConfigError unless ``alias`` is a valid, settable alias."""
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or alias == LATEST:
        msg = (
            f"invalid alias {alias!r}: use 1-100 letters, digits, '_', '.' or '-', starting "
            f"with a letter; {LATEST!r} is reserved for the newest version"
        )
        raise ConfigError(msg, field="alias")


def record_audit(
    conn: sa.Connection, action: str, target: str, actor: str, details: Mapping[str, Any]
) -> None:
    """Append one row to the audit log."""
    conn.execute(
        sa.insert(audit_log).values(
            at=utc_now(), actor=actor, action=action, target=target, details=dict(details)
        )
    )


def register(
    conn: sa.Connection,
    name: str,
    *,
    package_sha256: str,
    run_id: str | None,
    metrics: dict[str, Any],
    actor: str,
) -> ModelVersion:
    """Insert the next version of ``name`` (creating the model), and audit it.

    Raises ``sqlalchemy.exc.IntegrityError`` when another writer took the same version first;
    the caller retries in a new transaction.
    """
    if run_id is not None and conn.scalar(sa.select(runs.c.id).where(runs.c.id == run_id)) is None:
        msg = (
            f"cannot register {name!r}: run {run_id!r} does not exist. "
            "Pass the id of a recorded run, or None."
        )
        raise NotFoundError(msg, field="run_id")
    now = utc_now()
    # Locks the model row on PostgreSQL so concurrent registrations queue instead of retrying.
    exists = conn.scalar(sa.select(models.c.name).where(models.c.name == name).with_for_update())
    if exists is None:
        conn.execute(sa.insert(models).values(name=name, created_at=now, description=""))
    latest = conn.scalar(
        sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.name == name)
    )
    version = (latest or 0) + 1
    conn.execute(
        sa.insert(model_versions).values(
            name=name,
            version=version,
            package_sha256=package_sha256,
            run_id=run_id,
            metrics=metrics,
            created_at=now,
        )
    )
    details = {"version": version, "package_sha256": package_sha256, "run_id": run_id}
    record_audit(conn, "register", name, actor, details)
    return ModelVersion(name, version, package_sha256, run_id, now, metrics=metrics)


def load_version(conn: sa.Connection, name: str, version: int) -> ModelVersion:
    """One version with its aliases; NotFoundError lists what exists."""
    row = (
        conn.execute(
            sa.select(model_versions).where(
                model_versions.c.name == name, model_versions.c.version == version
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        _require_model(conn, name)
        msg = (
            f"model {name!r} has no version {version}; versions: "
            f"{_describe_versions(conn, name)}. Use `keel models` to list them."
        )
        raise NotFoundError(msg, field="version")
    found = conn.execute(
        sa.select(aliases.c.alias)
        .where(aliases.c.name == name, aliases.c.version == version)
        .order_by(aliases.c.alias)
    )
    return _version(row, tuple(found.scalars()))


def list_versions(conn: sa.Connection, name: str) -> list[ModelVersion]:
    """Every version of a model, oldest first, with aliases."""
    _require_model(conn, name)
    by_version: dict[int, list[str]] = {}
    for alias, version in conn.execute(
        sa.select(aliases.c.alias, aliases.c.version)
        .where(aliases.c.name == name)
        .order_by(aliases.c.alias)
    ):
        by_version.setdefault(version, []).append(alias)
    rows = conn.execute(
        sa.select(model_versions)
        .where(model_versions.c.name == name)
        .order_by(model_versions.c.version)
    ).mappings()
    return [_version(row, tuple(by_version.get(row["version"], ()))) for row in rows]


def list_models(conn: sa.Connection) -> list[dict[str, Any]]:
    """A summary per model, sorted by name."""
    alias_map: dict[str, dict[str, int]] = {}
    for name, alias, version in conn.execute(
        sa.select(aliases.c.name, aliases.c.alias, aliases.c.version).order_by(aliases.c.alias)
    ):
        alias_map.setdefault(name, {})[alias] = version
    query = (
        sa.select(
            models.c.name,
            models.c.created_at,
            models.c.description,
            sa.func.max(model_versions.c.version).label("latest_version"),
            sa.func.count(model_versions.c.version).label("versions"),
        )
        .select_from(models.outerjoin(model_versions, model_versions.c.name == models.c.name))
        .group_by(models.c.name, models.c.created_at, models.c.description)
        .order_by(models.c.name)
    )
    return [
        {
            "name": row["name"],
            "latest_version": row["latest_version"],
            "aliases": alias_map.get(row["name"], {}),
            "versions": row["versions"],
            "created_at": row["created_at"],
            "description": row["description"],
        }
        for row in conn.execute(query).mappings()
    ]


def resolve(conn: sa.Connection, ref: str) -> ModelVersion:
    """Resolve ``name``, ``name@<version>``, ``name@latest`` or ``name@<alias>``."""
    name, sep, selector = ref.partition("@")
    if not name or (sep and not selector):
        msg = f"invalid model reference {ref!r}: expected 'name', 'name@3' or 'name@production'"
        raise ConfigError(msg, field="ref")
    _require_model(conn, name)
    if selector.isdigit():
        return load_version(conn, name, int(selector))
    if sep and selector != LATEST:
        version = _alias_version(conn, name, selector)
        if version is None:
            msg = (
                f"model {name!r} has no alias {selector!r}; aliases: "
                f"{_describe_aliases(conn, name)}; versions: {_describe_versions(conn, name)}. "
                f"Set one with set_alias({name!r}, {selector!r}, VERSION)."
            )
            raise NotFoundError(msg, field="ref")
        return load_version(conn, name, version)
    if not sep:
        version = _alias_version(conn, name, DEFAULT_ALIAS)
        if version is not None:
            return load_version(conn, name, version)
    latest = conn.scalar(
        sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.name == name)
    )
    if latest is None:
        raise NotFoundError(f"model {name!r} has no versions yet", field="ref")
    return load_version(conn, name, int(latest))


def set_alias(
    conn: sa.Connection, name: str, alias: str, version: int, *, actor: str, reason: str
) -> None:
    """Point ``alias`` at ``version`` (which must exist) and audit the move."""
    load_version(conn, name, version)
    previous = _alias_version(conn, name, alias)
    if previous is None:
        conn.execute(sa.insert(aliases).values(name=name, alias=alias, version=version))
    else:
        conn.execute(
            sa.update(aliases)
            .where(aliases.c.name == name, aliases.c.alias == alias)
            .values(version=version)
        )
    details = {"alias": alias, "version": version, "previous_version": previous, "reason": reason}
    record_audit(conn, "set_alias", name, actor, details)


def delete_alias(conn: sa.Connection, name: str, alias: str, *, actor: str) -> None:
    """Remove ``alias`` from ``name`` and audit it; NotFoundError when it is not set."""
    _require_model(conn, name)
    previous = _alias_version(conn, name, alias)
    if previous is None:
        msg = f"model {name!r} has no alias {alias!r}; aliases: {_describe_aliases(conn, name)}"
        raise NotFoundError(msg, field="alias")
    conn.execute(sa.delete(aliases).where(aliases.c.name == name, aliases.c.alias == alias))
    details = {"alias": alias, "previous_version": previous}
    record_audit(conn, "delete_alias", name, actor, details)


def _require_model(conn: sa.Connection, name: str) -> None:
    if conn.scalar(sa.select(models.c.name).where(models.c.name == name)) is not None:
        return
    known = list(conn.scalars(sa.select(models.c.name).order_by(models.c.name).limit(21)))
    if not known:
        listing = "no models are registered yet"
    else:
        listing = "known models: " + ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    raise NotFoundError(f"no model named {name!r}; {listing}", field="name")


def _alias_version(conn: sa.Connection, name: str, alias: str) -> int | None:
    version = conn.scalar(
        sa.select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == alias)
    )
    return None if version is None else int(version)


def _describe_versions(conn: sa.Connection, name: str) -> str:
    versions = list(
        conn.scalars(
            sa.select(model_versions.c.version)
            .where(model_versions.c.name == name)
            .order_by(model_versions.c.version)
        )
    )
    if not versions:
        return "none"
    if len(versions) > 10:
        return f"{versions[0]}..{versions[-1]} ({len(versions)} versions)"
    return ", ".join(str(v) for v in versions)


def _describe_aliases(conn: sa.Connection, name: str) -> str:
    rows = conn.execute(
        sa.select(aliases.c.alias, aliases.c.version)
        .where(aliases.c.name == name)
        .order_by(aliases.c.alias)
    )
    described = [f"{alias} -> {version}" for alias, version in rows]
    return ", ".join(described) if described else "none"


def _version(row: sa.RowMapping, alias_names: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        name=row["name"],
        version=int(row["version"]),
        package_sha256=row["package_sha256"],
        run_id=row["run_id"],
        created_at=row["created_at"],
        metrics=dict(row["metrics"]),
        aliases=alias_names,
    )
