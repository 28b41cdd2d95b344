"""The Registry on SQLite and (marked postgres) PostgreSQL: every operation, approvals,
rollback, archive, delete, audit order and immutability, events."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.config.registry import RegistryConfig
from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.registry.records import AliasMove, PromotionRequest
from keel.registry.registry import Registry
from keel.store import MetadataStore
from keel.store.schedules import ScheduleStore
from keel.testing import postgres_schema

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(POSTGRES_URL is None, reason="set KEEL_TEST_POSTGRES_URL"),
            ],
        ),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as opened:
            yield opened
    else:
        assert POSTGRES_URL is not None
        with postgres_schema(POSTGRES_URL) as url, MetadataStore(url) as opened:
            yield opened


def _registry(store: MetadataStore, actor: str = "alice", **config: object) -> Registry:
    return Registry(store.database, RegistryConfig.model_validate(config), actor=actor)


def _register(reg: Registry, name: str = "churn", count: int = 3) -> None:
    for i in range(count):
        reg.register(name, package_sha256=f"{i:x}" * 64, run_id=None, metrics={"auc": 0.7 + i})


def test_register_list_show_and_resolve(store: MetadataStore) -> None:
    reg = _registry(store)
    _register(reg)
    _register(reg, "fraud", 1)
    assert [(m.name, m.latest_version, m.versions) for m in reg.models()] == [
        ("churn", 3, 3),
        ("fraud", 1, 1),
    ]
    reg.promote("churn", 2, alias="staging", reason="try it")
    shown = reg.show("churn", 2)
    assert shown.aliases == ("staging",) and shown.metrics == {"auc": 1.7}
    assert shown.to_json()["archived"] is False
    assert reg.resolve("churn@staging").version == 2
    assert reg.resolve("churn").version == 3  # no production: the newest
    assert dict(reg.models()[0].aliases) == {"staging": 2}
    with pytest.raises(NotFoundError, match="no version 9"):
        reg.show("churn", 9)
    with pytest.raises(NotFoundError, match="known models: churn, fraud"):
        reg.promote("nope", 1)


def test_promote_moves_any_alias_and_audits_one_event_per_change(store: MetadataStore) -> None:
    reg = _registry(store)
    _register(reg)
    moved = reg.promote("churn", 1, alias="candidate", reason="first try")
    assert isinstance(moved, AliasMove)
    assert (moved.previous_version, moved.version, moved.action) == (None, 1, "promote")
    again = reg.promote("churn", 3, alias="candidate", reason="better")
    assert isinstance(again, AliasMove) and again.previous_version == 1
    with pytest.raises(ConflictError, match="already points at version 3"):
        reg.promote("churn", 3, alias="candidate")
    with pytest.raises(ConfigError, match="reserved"):
        reg.promote("churn", 1, alias="latest")
    entries = reg.audit(target="churn")
    assert [e.action for e in entries] == ["promote", "promote", "register", "register", "register"]
    newest = entries[0]
    assert newest.actor == "alice"
    assert newest.details == {
        "alias": "candidate",
        "previous_version": 1,
        "version": 3,
        "reason": "better",
    }
    with ScheduleStore(_raw_url(store)) as events:
        kinds = [e.kind for e in events.events_after("alias_moved", 0, subject="churn")]
        assert kinds == ["alias_moved", "alias_moved"]
        assert len(events.events_after("model_registered", 0)) == 3


def _raw_url(store: MetadataStore) -> str:
    return store.database.url.render_as_string(hide_password=False)


def test_a_promotion_needing_approval_waits_for_someone_else(store: MetadataStore) -> None:
    alice = _registry(store, "alice", approvals={"production": 2})
    _register(alice)
    request = alice.promote("churn", 2, alias="production", reason="ship v2")
    assert isinstance(request, PromotionRequest) and request.status == "pending"
    with pytest.raises(NotFoundError, match="no alias 'production'"):
        alice.resolve("churn@production")  # nothing moved yet
    with pytest.raises(ConflictError, match="cannot approve it"):
        alice.approve(request.id, comment="mine")
    with pytest.raises(ConflictError, match="already pending"):
        alice.promote("churn", 2, alias="production")
    bob = alice.with_actor("bob")
    half = bob.approve(request.id, comment="metrics look right")
    assert (half.status, half.approvals) == ("pending", 1)
    with pytest.raises(ConflictError, match="already decided"):
        bob.approve(request.id)
    done = alice.with_actor("carol").approve(request.id, comment="ok")
    assert done.status == "applied" and done.approvals == 2
    assert [d.comment for d in done.decisions] == ["metrics look right", "ok"]
    assert alice.resolve("churn@production").version == 2
    with pytest.raises(ConflictError, match="is applied, not pending"):
        alice.with_actor("dave").approve(request.id)
    actions = [(e.action, e.actor) for e in alice.audit(target="churn", limit=3)]
    assert actions == [("promote", "carol"), ("approve", "bob"), ("request_promotion", "alice")]
    applied = alice.audit(action="promote", limit=1)[0].details
    assert applied["approved_by"] == ["bob", "carol"] and applied["request_id"] == request.id
    # aliases without approvals still move at once
    assert isinstance(alice.promote("churn", 3, alias="staging"), AliasMove)


def test_reject_needs_a_comment_and_closes_the_request(store: MetadataStore) -> None:
    alice = _registry(store, "alice", approvals={"production": 1})
    _register(alice)
    request = alice.promote("churn", 1, alias="production")
    assert isinstance(request, PromotionRequest)
    with pytest.raises(ConfigError, match="comment"):
        alice.with_actor("bob").reject(request.id, comment=" ")
    rejected = alice.with_actor("bob").reject(request.id, comment="AUC regressed on slice X")
    assert rejected.status == "rejected"
    assert alice.requests(pending=True) == []
    assert [r.id for r in alice.requests()] == [request.id]
    entry = alice.audit(action="reject")[0]
    assert entry.details["comment"] == "AUC regressed on slice X" and entry.actor == "bob"
    with pytest.raises(NotFoundError, match="no promotion request 'nope'"):
        alice.approve("nope")


def test_rollback_returns_to_the_previous_holder_then_further(store: MetadataStore) -> None:
    reg = _registry(store)
    _register(reg, count=4)
    for version in (1, 2, 3):
        reg.promote("churn", version, alias="production")
    back = reg.rollback("churn", alias="production", reason="v3 misbehaves")
    assert (back.previous_version, back.version, back.action) == (3, 2, "rollback")
    again = reg.rollback("churn", alias="production", reason="v2 too")
    assert (again.previous_version, again.version) == (2, 1)
    with pytest.raises(ConflictError, match="no earlier holder"):
        reg.rollback("churn", alias="production")
    to3 = reg.rollback("churn", alias="production", to=3)
    assert to3.version == 3
    with pytest.raises(ConflictError, match="never held"):
        reg.rollback("churn", alias="production", to=4)
    with pytest.raises(NotFoundError, match="not set"):
        reg.rollback("churn", alias="staging")
    history = reg.alias_history("churn", "production")
    assert [(h.action, h.previous_version, h.version) for h in history] == [
        ("rollback", 1, 3),
        ("rollback", 2, 1),
        ("rollback", 3, 2),
        ("promote", 2, 3),
        ("promote", 1, 2),
        ("promote", None, 1),
    ]


def test_rollback_needs_no_approval(store: MetadataStore) -> None:
    reg = _registry(store, approvals={"production": 1})
    _register(reg)
    for version in (1, 2):
        request = reg.promote("churn", version, alias="production")
        assert isinstance(request, PromotionRequest)
        reg.with_actor("bob").approve(request.id)
    assert reg.rollback("churn", alias="production").version == 1


def test_archive_blocks_aliases_and_loading_until_restored(store: MetadataStore) -> None:
    alice = _registry(store, approvals={"production": 1})
    _register(alice)
    alice.promote("churn", 1, alias="staging")
    pending = alice.promote("churn", 2, alias="production")
    assert isinstance(pending, PromotionRequest)
    with pytest.raises(ConflictError, match="holds staging"):
        alice.archive("churn", 1)
    archived = alice.archive("churn", 2, reason="leaky feature")
    assert archived.archived and archived.archived_by == "alice"
    assert alice.request(pending.id).status == "cancelled"
    with pytest.raises(
        ConflictError, match=r"is archived \(by alice\) and cannot take alias 'staging'"
    ):
        alice.promote("churn", 2, alias="staging")
    with pytest.raises(NotFoundError, match="version 2 of model 'churn' is archived"):
        alice.resolve("churn@2")
    assert alice.show("churn", 2).archived  # shown, not loadable
    alice.archive("churn", 3)
    assert alice.resolve("churn@latest").version == 1  # the newest loadable
    with pytest.raises(ConflictError, match="already archived"):
        alice.archive("churn", 3)
    restored = alice.restore("churn", 2)
    assert not restored.archived and alice.resolve("churn@2").version == 2
    assert [v.version for v in alice.versions("churn", include_archived=False)] == [1, 2]
    assert [e.action for e in alice.audit(target="churn", limit=3)] == [
        "restore",
        "archive",
        "archive",
    ]


def test_delete_only_unaliased_versions(store: MetadataStore) -> None:
    reg = _registry(store)
    _register(reg)
    reg.promote("churn", 2, alias="production")
    with pytest.raises(ConflictError, match="holds production"):
        reg.delete("churn", 2)
    gone = reg.delete("churn", 3, reason="never used")
    assert gone.version == 3
    assert [v.version for v in reg.versions("churn")] == [1, 2]
    entry = reg.audit(action="delete_version")[0]
    assert entry.details["package_sha256"] == "2" * 64
    with pytest.raises(NotFoundError):
        reg.show("churn", 3)
    # a deleted version's number is never given again: audit rows still name it
    assert reg.register("churn", package_sha256="f" * 64, run_id=None, metrics={}).version == 4


def test_audit_filters_and_order(store: MetadataStore) -> None:
    reg = _registry(store)
    _register(reg, count=2)
    reg.with_actor("bob").promote("churn", 1, alias="staging")
    reg.promote("churn", 2, alias="staging")
    assert [e.id for e in reg.audit()] == sorted((e.id for e in reg.audit()), reverse=True)
    assert [e.action for e in reg.audit(actor="bob")] == ["promote"]
    assert len(reg.audit(action="register")) == 2
    assert len(reg.audit(limit=1)) == 1
    first = reg.audit()[-1]
    assert reg.audit(since=first.at + timedelta(days=1)) == []
    assert len(reg.audit(since=first.at - timedelta(seconds=1))) == 4
    with pytest.raises(ConfigError):
        reg.audit(limit=0)


def test_the_audit_log_refuses_update_and_delete(store: MetadataStore) -> None:
    reg = _registry(store)
    _register(reg, count=1)
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.database.write() as c:
            c.execute(sa.text(statement))
    assert [e.actor for e in reg.audit()] == ["alice"]


def test_metadata_store_set_alias_still_feeds_history_and_rollback(store: MetadataStore) -> None:
    store.register_model_version("m", package_sha256="a" * 64, run_id=None, metrics={})
    store.register_model_version("m", package_sha256="b" * 64, run_id=None, metrics={})
    store.set_alias("m", "production", 1)
    store.set_alias("m", "production", 2)
    reg = _registry(store)
    assert reg.rollback("m").version == 1
