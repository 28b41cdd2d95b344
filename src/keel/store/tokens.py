"""API tokens for the HTTP server: created once, stored as sha256 only, verified in one lookup.

A token's secret is ``keel_`` + 32 random bytes (urlsafe base64); it is shown once, at
creation, and the store keeps only its sha256, so a leaked database reveals no usable token.
Scopes: ``predict``, ``read`` and ``admin`` (admin implies the others). Every change (create,
revoke) writes one audit row in the same transaction.

    info, secret = create_token(store.database, "ci", ["predict"], created_by="alice")
    assert verify_token(store.database, secret) == info
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.store.database import Database
from keel.store.registry_tables import record_audit
from keel.store.tables import api_tokens, utc_now

__all__ = [
    "SCOPES",
    "TOKEN_PREFIX",
    "TokenInfo",
    "create_token",
    "has_scope",
    "list_tokens",
    "parse_expiry",
    "revoke_token",
    "verify_token",
]

SCOPES: tuple[str, ...] = ("predict", "read", "admin")
"""What a token may do; ``admin`` implies the others."""
TOKEN_PREFIX = "keel_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class TokenInfo:
    """One API token, without its secret."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    expires_at: datetime | None
    rate_limit_per_minute: int | None

    def allows(self, scope: str) -> bool:
        """Whether the token grants ``scope`` (admin grants every scope)."""
        return has_scope(self.scopes, scope)

    def active(self, now: datetime | None = None) -> bool:
        """Neither revoked nor expired at ``now``."""
        when = now or utc_now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > when)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "rate_limit_per_minute": self.rate_limit_per_minute,
        }


def has_scope(scopes: tuple[str, ...], scope: str) -> bool:
    """Whether ``scopes`` grant ``scope``."""
    return scope in scopes or "admin" in scopes


def parse_expiry(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a timedelta.

    Raises:
        ConfigError: Not a positive number and a unit (s, m, h, d, w).
    """
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) <= 0:
        msg = f"expiry {text!r} is not a duration like 30d, 12h, 90m, 2w or 45s"
        raise ConfigError(msg, field="expires")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def create_token(
    db: Database,
    name: str,
    scopes: list[str] | tuple[str, ...],
    *,
    created_by: str,
    rate_limit_per_minute: int | None = None,
    expires_in: timedelta | None = None,
) -> tuple[TokenInfo, str]:
    """Create a token; returns it and its secret (shown this once, never stored).

    Raises:
        ConfigError: Bad name, unknown or no scope, non-positive rate limit or expiry.
        ConflictError: A live token (not revoked) has that name.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        msg = (
            f"invalid token name {name!r}: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
        raise ConfigError(msg, field="name")
    chosen = tuple(dict.fromkeys(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        msg = f"token scopes must be one or more of {list(SCOPES)}; got {list(chosen)}"
        raise ConfigError(msg, field="scopes")
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        msg = f"rate limit must be at least 1 request per minute, got {rate_limit_per_minute}"
        raise ConfigError(msg, field="rate_limit_per_minute")
    if expires_in is not None and expires_in.total_seconds() <= 0:
        raise ConfigError(f"expiry must be in the future, got {expires_in}", field="expires")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utc_now()
    info = TokenInfo(
        id=uuid.uuid4().hex[:16],
        name=name,
        scopes=chosen,
        created_at=now,
        created_by=created_by,
        revoked_at=None,
        expires_at=None if expires_in is None else now + expires_in,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    with db.write() as conn:
        live = conn.execute(
            sa.select(api_tokens.c.id, api_tokens.c.expires_at).where(
                api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None)
            )
        ).first()
        if live is not None:
            expired = live.expires_at is not None and live.expires_at <= now
            msg = (
                f"a token named {name!r} exists{' (expired, not revoked)' if expired else ''}: "
                f"choose another name, or `keel tokens revoke {name}` first (a revoked token's "
                "name can be reused)"
            )
            raise ConflictError(msg, field="name")
        conn.execute(
            sa.insert(api_tokens).values(
                id=info.id,
                name=name,
                token_sha256=_digest(secret),
                scopes=list(chosen),
                created_at=now,
                created_by=created_by,
                revoked_at=None,
                expires_at=info.expires_at,
                rate_limit_per_minute=rate_limit_per_minute,
            )
        )
        details = {
            "id": info.id,
            "scopes": list(chosen),
            "expires_at": None if info.expires_at is None else info.expires_at.isoformat(),
            "rate_limit_per_minute": rate_limit_per_minute,
        }
        record_audit(conn, "token_create", f"token:{name}", created_by, details)
    return info, secret


def verify_token(db: Database, secret: str) -> TokenInfo | None:
    """The active token whose secret this is; None when unknown, revoked or expired.

    One indexed lookup by the secret's sha256, then a constant-time comparison.
    """
    if not isinstance(secret, str) or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    digest = _digest(secret)
    with db.read() as conn:
        row = (
            conn.execute(sa.select(api_tokens).where(api_tokens.c.token_sha256 == digest))
            .mappings()
            .first()
        )
    if row is None or not hmac.compare_digest(str(row["token_sha256"]), digest):
        return None
    info = _info(row)
    return info if info.active() else None


def list_tokens(db: Database) -> list[TokenInfo]:
    """Every token (revoked and expired ones too), oldest first."""
    with db.read() as conn:
        rows = conn.execute(sa.select(api_tokens).order_by(api_tokens.c.created_at)).mappings()
        return [_info(row) for row in rows]


def revoke_token(db: Database, id_or_name: str, actor: str) -> TokenInfo:
    """Revoke a token by id or name (audited); it stops verifying at once.

    Raises:
        NotFoundError: No token has that id or name (the message lists them).
        ConflictError: It is already revoked.
    """
    with db.write() as conn:
        row = (  # by name: the live token (a revoked one may share its name), else the newest
            conn.execute(
                sa.select(api_tokens)
                .where((api_tokens.c.id == id_or_name) | (api_tokens.c.name == id_or_name))
                .order_by(api_tokens.c.revoked_at.is_not(None), api_tokens.c.created_at.desc())
            )
            .mappings()
            .first()
        )
        if row is None:
            names = list(
                conn.scalars(sa.select(api_tokens.c.name).distinct().order_by(api_tokens.c.name))
            )
            msg = (
                f"no API token with id or name {id_or_name!r}; tokens: "
                f"{', '.join(names) if names else 'none'}"
            )
            raise NotFoundError(msg, field="token")
        if row["revoked_at"] is not None:
            msg = f"token {row['name']!r} was already revoked at {row['revoked_at']:%Y-%m-%d %H:%M}"
            raise ConflictError(msg, field="token")
        now = utc_now()
        conn.execute(
            sa.update(api_tokens).where(api_tokens.c.id == row["id"]).values(revoked_at=now)
        )
        record_audit(conn, "token_revoke", f"token:{row['name']}", actor, {"id": row["id"]})
    return _info({**row, "revoked_at": now})


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
        expires_at=row["expires_at"],
        rate_limit_per_minute=row["rate_limit_per_minute"],
    )
