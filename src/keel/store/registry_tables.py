"""Queries over the model registry tables (models, model_versions, aliases, alias_history),
the audit log and the registry's events.

Each function takes a connection that is already in a transaction; ``MetadataStore`` and
``keel.registry.Registry`` own the transactions. Every change writes its audit row, its alias
history and its event (with the webhook deliveries it owes) in the caller's transaction.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.store.tables import (
    alias_history,
    aliases,
    audit_log,
    events,
    model_versions,
    models,
    runs,
    utc_now,
    webhook_deliveries,
)
from keel.types import ModelVersion

if TYPE_CHECKING:
    from keel.config.registry import WebhookConfig


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()
"""``expected`` for :func:`move_alias`: whatever holds the alias now (no optimistic check)."""

__all__ = [
    "ANY",
    "delete_alias",
    "emit_event",
    "list_models",
    "list_versions",
    "load_model",
    "load_version",
    "move_alias",
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
) -> int:
    """Append one row to the audit log; its id."""
    key = conn.execute(
        sa.insert(audit_log).values(
            at=utc_now(), actor=actor, action=action, target=target, details=dict(details)
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])


def emit_event(
    conn: sa.Connection,
    kind: str,
    subject: str,
    payload: Mapping[str, Any],
    webhooks: Sequence[WebhookConfig] = (),
) -> int:
    """Append an event, and a pending delivery for each webhook that wants ``kind``; its id."""
    now = utc_now()
    key = conn.execute(
        sa.insert(events).values(kind=kind, subject=subject, payload=dict(payload), created_at=now)
    ).inserted_primary_key
    assert key is not None
    event_id = int(key[0])
    rows = [
        {
            "event_id": event_id,
            "url": hook.url,
            "secret_env": hook.secret_env,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for hook in webhooks
        if not hook.events or kind in hook.events
    ]
    if rows:
        conn.execute(sa.insert(webhook_deliveries), rows)
    return event_id


def register(
    conn: sa.Connection,
    name: str,
    *,
    package_sha256: str,
    run_id: str | None,
    metrics: dict[str, Any],
    actor: str,
    webhooks: Sequence[WebhookConfig] = (),
) -> ModelVersion:
    """Insert the next version of ``name`` (creating the model), audit it and emit
    ``model_registered``.

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
    exists = conn.execute(
        sa.select(models.c.name, models.c.last_version)
        .where(models.c.name == name)
        .with_for_update()
    ).first()
    if exists is None:
        conn.execute(sa.insert(models).values(name=name, created_at=now, description=""))
    latest = conn.scalar(
        sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.name == name)
    )
    # never reuse a deleted version's number: audit rows and packages still name it
    version = max(latest or 0, (exists[1] if exists is not None else None) or 0) + 1
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
    conn.execute(sa.update(models).where(models.c.name == name).values(last_version=version))
    details = {"version": version, "package_sha256": package_sha256, "run_id": run_id}
    audit_id = record_audit(conn, "register", name, actor, details)
    payload = {**details, "name": name, "actor": actor, "audit_id": audit_id}
    emit_event(conn, "model_registered", name, payload, webhooks)
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
            f"{_describe_versions(conn, name)}. Use `keel models list` to list them."
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


def resolve(conn: sa.Connection, ref: str, *, default_alias: str = DEFAULT_ALIAS) -> ModelVersion:
    """Resolve ``name``, ``name@<version>``, ``name@latest`` or ``name@<alias>``.

    A bare ``name`` is ``name@<default_alias>`` when that alias is set, else the newest
    unarchived version; a project passes its ``registry.alias`` (``production`` outside one).
    """
    name, sep, selector = ref.partition("@")
    if not name or (sep and not selector):
        msg = f"invalid model reference {ref!r}: expected 'name', 'name@3' or 'name@production'"
        raise ConfigError(msg, field="ref")
    _require_model(conn, name)
    if selector.isdigit():
        found = load_version(conn, name, int(selector))
        archived = conn.execute(
            sa.select(model_versions.c.archived_at, model_versions.c.archived_by).where(
                model_versions.c.name == name, model_versions.c.version == found.version
            )
        ).first()
        if archived is not None and archived[0] is not None:
            msg = (
                f"version {found.version} of model {name!r} is archived (by {archived[1]} at "
                f"{archived[0]:%Y-%m-%d %H:%M} UTC): it cannot be loaded or served. Restore it "
                f"with `keel models restore {name} {found.version}`."
            )
            raise NotFoundError(msg, field="ref", details={"archived": True})
        return found
    if sep and selector != LATEST:
        version = _alias_version(conn, name, selector)
        if version is None:
            raise _no_alias(conn, name, selector)
        return load_version(conn, name, version)
    if not sep:
        version = _alias_version(conn, name, default_alias)
        if version is not None:
            return load_version(conn, name, version)
    latest = conn.scalar(
        sa.select(sa.func.max(model_versions.c.version)).where(
            model_versions.c.name == name, model_versions.c.archived_at.is_(None)
        )
    )
    if latest is None:
        raise NotFoundError(
            f"model {name!r} has no versions yet (or every version is archived)", field="ref"
        )
    return load_version(conn, name, int(latest))


def move_alias(
    conn: sa.Connection,
    name: str,
    alias: str,
    version: int,
    *,
    actor: str,
    reason: str,
    action: str = "set_alias",
    expected: int | _Any | None = ANY,
    details: Mapping[str, Any] | None = None,
    webhooks: Sequence[WebhookConfig] = (),
) -> tuple[int | None, int]:
    """Point ``alias`` at ``version``: the alias row, its history, one audit row (``action``)
    and an ``alias_moved`` event, in the caller's transaction.

    ``expected`` is the version the caller believes holds the alias (None: unset); when another
    writer moved it first the update matches no row and ConflictError names what moved.

    Returns:
        ``(previous_version, audit_id)``.

    Raises:
        NotFoundError: The model or version does not exist.
        ConflictError: The version is archived, or the alias moved since the caller read it.
    """
    load_version(conn, name, version)
    archived = conn.scalar(
        sa.select(model_versions.c.archived_at).where(
            model_versions.c.name == name, model_versions.c.version == version
        )
    )
    if archived is not None:
        msg = (
            f"version {version} of model {name!r} is archived and cannot take alias "
            f"{alias!r}; restore it first with `keel models restore {name} {version}`."
        )
        raise ConflictError(msg, field="version")
    previous = _alias_version(conn, name, alias) if isinstance(expected, _Any) else expected
    if previous is None:
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(aliases).values(name=name, alias=alias, version=version))
        except sa.exc.IntegrityError as exc:
            raise _moved(conn, name, alias, None) from exc
    else:
        done = conn.execute(
            sa.update(aliases)
            .where(aliases.c.name == name, aliases.c.alias == alias, aliases.c.version == previous)
            .values(version=version)
        )
        if done.rowcount != 1:
            raise _moved(conn, name, alias, previous)
    audit_id = _record_move(
        conn,
        name,
        alias,
        version,
        previous,
        actor=actor,
        reason=reason,
        action=action,
        details=details,
        webhooks=webhooks,
    )
    return previous, audit_id


def set_alias(
    conn: sa.Connection, name: str, alias: str, version: int, *, actor: str, reason: str
) -> None:
    """Point ``alias`` at ``version`` (which must exist) and audit the move."""
    move_alias(conn, name, alias, version, actor=actor, reason=reason)


def delete_alias(
    conn: sa.Connection,
    name: str,
    alias: str,
    *,
    actor: str,
    reason: str = "",
    webhooks: Sequence[WebhookConfig] = (),
) -> int:
    """Remove ``alias`` from ``name``, audit it and emit ``alias_removed``; the version it held.

    Raises:
        NotFoundError: The alias is not set.
    """
    _require_model(conn, name)
    previous = _alias_version(conn, name, alias)
    if previous is None:
        msg = f"model {name!r} has no alias {alias!r}; aliases: {_describe_aliases(conn, name)}"
        raise NotFoundError(msg, field="alias")
    conn.execute(sa.delete(aliases).where(aliases.c.name == name, aliases.c.alias == alias))
    _record_move(
        conn,
        name,
        alias,
        None,
        previous,
        actor=actor,
        reason=reason,
        action="delete_alias",
        details=None,
        webhooks=webhooks,
    )
    return previous


def _record_move(
    conn: sa.Connection,
    name: str,
    alias: str,
    version: int | None,
    previous: int | None,
    *,
    actor: str,
    reason: str,
    action: str,
    details: Mapping[str, Any] | None,
    webhooks: Sequence[WebhookConfig],
) -> int:
    now = utc_now()
    conn.execute(
        sa.insert(alias_history).values(
            name=name,
            alias=alias,
            version=version,
            previous_version=previous,
            action=action,
            actor=actor,
            reason=reason,
            at=now,
        )
    )
    audited: dict[str, Any] = {"alias": alias, "previous_version": previous, "reason": reason}
    if version is not None:
        audited["version"] = version
    audited.update(details or {})
    audit_id = record_audit(conn, action, name, actor, audited)
    kind = "alias_removed" if version is None else "alias_moved"
    payload = {**audited, "name": name, "action": action, "actor": actor, "audit_id": audit_id}
    emit_event(conn, kind, name, payload, webhooks)
    return audit_id


def _moved(conn: sa.Connection, name: str, alias: str, expected: int | None) -> ConflictError:
    now_holds = _alias_version(conn, name, alias)
    last = conn.execute(
        sa.select(alias_history.c.actor, alias_history.c.at)
        .where(alias_history.c.name == name, alias_history.c.alias == alias)
        .order_by(alias_history.c.id.desc())
        .limit(1)
    ).first()
    by = f" by {last[0]} at {last[1]:%Y-%m-%d %H:%M:%S} UTC" if last is not None else ""
    was = "unset" if expected is None else f"version {expected}"
    now = "unset" if now_holds is None else f"version {now_holds}"
    msg = (
        f"{name}@{alias} moved under you: you expected {was}, it now holds {now}{by}. Nothing "
        "was changed; look at `keel models history "
        f"{name} --alias {alias}` and retry if you still want the move."
    )
    return ConflictError(
        msg, field="alias", details={"expected": expected, "current": now_holds, "alias": alias}
    )


def load_model(conn: sa.Connection, name: str) -> None:
    """Raise NotFoundError (listing the known models) unless model ``name`` exists."""
    _require_model(conn, name)


def _require_model(conn: sa.Connection, name: str) -> None:
    if conn.scalar(sa.select(models.c.name).where(models.c.name == name)) is not None:
        return
    known = list(conn.scalars(sa.select(models.c.name).order_by(models.c.name).limit(21)))
    if not known:
        listing = "no models are registered yet: 'keel run' trains and registers one"
    else:
        listing = "known models: " + ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    raise NotFoundError(f"no model named {name!r}; {listing}", field="name")


def _alias_version(conn: sa.Connection, name: str, alias: str) -> int | None:
    version = conn.scalar(
        sa.select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == alias)
    )
    return None if version is None else int(version)


def _no_alias(conn: sa.Connection, name: str, selector: str) -> NotFoundError:
    """``name@selector`` names no alias: the likely meant reference (``@v2`` is ``@2``; a
    misspelt alias), the aliases and versions there are, and how to set an alias."""
    named = list(conn.scalars(sa.select(aliases.c.alias).where(aliases.c.name == name)))
    numbered = re.fullmatch(r"[vV](\d+)", selector)
    close = difflib.get_close_matches(selector, [*named, LATEST], n=1, cutoff=0.6)
    if numbered is not None:
        meant = f" Did you mean '{name}@{int(numbered.group(1))}'? (a version is a bare number)"
    else:
        meant = f" Did you mean '{name}@{close[0]}'?" if close else ""
    alias = "ALIAS" if meant else selector  # a typo is not the alias to create
    msg = (
        f"model {name!r} has no alias {selector!r}.{meant} Aliases: "
        f"{_describe_aliases(conn, name)}; versions: {_describe_versions(conn, name)}. To set "
        f"an alias: `keel models promote {name} VERSION --alias {alias}`."
    )
    return NotFoundError(msg, field="ref", details={"aliases": sorted(named)})


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
