"""API tokens: create (secret shown once, stored hashed), verify, list, revoke, expire."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.registry.registry import Registry
from keel.store import MetadataStore
from keel.store.tables import api_tokens
from keel.store.tokens import (
    create_token,
    list_tokens,
    parse_expiry,
    revoke_token,
    verify_token,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as opened:
        yield opened


def test_create_verify_list_and_revoke(store: MetadataStore) -> None:
    db = store.database
    info, secret = create_token(
        db, "ci", ["predict", "read"], created_by="alice", rate_limit_per_minute=600
    )
    assert secret.startswith("keel_") and len(secret) > 40
    assert info.scopes == ("predict", "read") and info.rate_limit_per_minute == 600
    assert verify_token(db, secret) == info
    assert info.allows("predict") and not info.allows("admin")
    with db.read() as conn:
        stored = conn.execute(sa.select(api_tokens.c.token_sha256)).scalar_one()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()  # only the hash is kept
    assert verify_token(db, secret + "x") is None
    assert verify_token(db, "not-a-token") is None
    admin, admin_secret = create_token(db, "ops", ["admin"], created_by="alice")
    assert verify_token(db, admin_secret) is not None and admin.allows("predict")
    assert [t.name for t in list_tokens(db)] == ["ci", "ops"]
    revoked = revoke_token(db, "ci", "bob")
    assert revoked.revoked_at is not None
    assert verify_token(db, secret) is None
    assert verify_token(db, admin_secret) is not None
    revoke_token(db, admin.id, "bob")  # by id too
    with pytest.raises(ConflictError, match="already revoked"):
        revoke_token(db, "ci", "bob")
    with pytest.raises(NotFoundError, match="tokens: ci, ops"):
        revoke_token(db, "nope", "bob")
    audit = Registry(db).audit(target="token:ci")
    assert [(e.action, e.actor) for e in audit] == [
        ("token_revoke", "bob"),
        ("token_create", "alice"),
    ]


def test_expired_tokens_do_not_verify(store: MetadataStore) -> None:
    db = store.database
    info, secret = create_token(
        db, "short", ["read"], created_by="a", expires_in=timedelta(hours=1)
    )
    assert info.expires_at is not None and verify_token(db, secret) == info
    with store.database.write() as conn:  # an hour passes
        conn.execute(sa.update(api_tokens).values(expires_at=info.expires_at - timedelta(hours=2)))
    assert verify_token(db, secret) is None
    assert not list_tokens(db)[0].active()


def test_bad_input_is_a_clear_error(store: MetadataStore) -> None:
    db = store.database
    with pytest.raises(ConfigError, match="scopes must be one or more of"):
        create_token(db, "x", ["write"], created_by="a")
    with pytest.raises(ConfigError, match="scopes"):
        create_token(db, "x", [], created_by="a")
    with pytest.raises(ConfigError, match="invalid token name"):
        create_token(db, "has space", ["read"], created_by="a")
    with pytest.raises(ConfigError, match="rate limit"):
        create_token(db, "x", ["read"], created_by="a", rate_limit_per_minute=0)
    create_token(db, "x", ["read"], created_by="a")
    with pytest.raises(ConflictError, match="exists"):
        create_token(db, "x", ["read"], created_by="a")
    assert parse_expiry("30d") == timedelta(days=30)
    assert parse_expiry("90m") == timedelta(minutes=90)
    with pytest.raises(ConfigError, match="not a duration"):
        parse_expiry("soon")
