"""A refusal over REST names the body's field, never a command-line flag: a REST client sends
``{"steps": "5,x"}``, not ``--steps 5,x`` (issue 16: ``POST /v1/deployments`` with bad steps
answered "--steps '5,x': write increasing percentages"). The error's ``field`` is the body's
field and the message starts with it in words; the CLI prints the same message (``keel deploy
--help`` shows each flag). California housing, two versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from keel.config import RegistryConfig
from keel.errors import ConflictError
from keel.project import Project
from keel.registry.records import PromotionRequest
from keel.registry.registry import Registry
from tests.housing import admin_client, needs_housing, two_versions

pytestmark = needs_housing


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 housing rows, `keel init --from`, two runs: version 2 holds production."""
    return two_versions(tmp_path_factory.mktemp("words"), seed=5)


@pytest.fixture(scope="module")
def admin(housing: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The server and an admin token's header."""
    with admin_client(housing) as served:
        yield served


def _refused(answer: Any, status: int, field: str, start: str) -> str:
    """The message of a refusal in Keel's shape: its field, its first words, and no flag."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["field"] == field, body
    message: str = body["message"]
    assert message.startswith(start), message
    assert " --" not in f" {message}", message  # no `--steps`, `--version`, `--to`...
    return message


CANARY_BODIES: list[tuple[dict[str, Any], str, str]] = [
    ({"steps": "5,x"}, "steps", "steps '5,x': write increasing percentages"),
    ({"steps": "50,25"}, "steps", "steps '50,25': percentages must increase"),
    ({"interval": "soon"}, "interval", "interval 'soon': write a duration"),
    ({"check": "p99_ms=5"}, "check", "bad check clause 'p99_ms=5' in check 'p99_ms=5'"),
    ({"check": " , "}, "check", "check ' , ' has no clause"),
    ({"sticky_key": "  "}, "sticky_key", "sticky key '  ' names no field"),
]


@pytest.mark.parametrize(("extra", "field", "start"), CANARY_BODIES)
def test_a_bad_canary_field_is_named_as_the_body_spells_it(
    admin: tuple[TestClient, dict[str, str]], extra: dict[str, Any], field: str, start: str
) -> None:
    client, auth = admin
    body = {"name": "housing", "kind": "canary", "version": 1, **extra}
    _refused(client.post("/v1/deployments", json=body, headers=auth), 400, field, start)
    assert client.get("/v1/deployments", headers=auth).json()["deployments"] == []


@pytest.mark.parametrize(
    ("arms", "start"),
    [
        ("1:x,2:50", "A/B arms '1:x,2:50': bad arm '1:x'"),
        ("1:0,2:50", "A/B arms '1:0,2:50': arm '1:0' needs a version >= 1"),
        ("1:50", "A/B arms '1:50': name at least two different versions"),
    ],
)
def test_bad_arms_are_named_arms(
    admin: tuple[TestClient, dict[str, str]], arms: str, start: str
) -> None:
    client, auth = admin
    body = {"name": "housing", "kind": "ab", "arms": arms}
    _refused(client.post("/v1/deployments", json=body, headers=auth), 400, "arms", start)


def test_promoting_an_ab_test_names_the_version_field(
    admin: tuple[TestClient, dict[str, str]],
) -> None:
    client, auth = admin
    made = client.post(
        "/v1/deployments", json={"name": "housing", "kind": "ab", "arms": "1:50,2:50"}, headers=auth
    )
    assert made.status_code == 200, made.text
    ref = made.json()["id"]
    try:
        unnamed = client.post(f"/v1/deployments/{ref}/promote", json={}, headers=auth)
        said = _refused(unnamed, 400, "version", f"deployment {ref} is an A/B test")
        assert said.endswith("name the winner's version, one of 1, 2 (the version to promote)."), (
            said
        )
        wrong = client.post(f"/v1/deployments/{ref}/promote", json={"version": 9}, headers=auth)
        said = _refused(wrong, 400, "version", "version 9 is not an arm")
        assert said.endswith("name one of its versions: 1, 2."), said
    finally:
        client.post(f"/v1/deployments/{ref}/abort", json={}, headers=auth)


def test_a_rollback_with_nowhere_to_go_says_promote(
    admin: tuple[TestClient, dict[str, str]],
) -> None:
    client, auth = admin
    moved = client.post(
        "/v1/registry/models/housing/aliases/words", json={"version": 1}, headers=auth
    )
    assert moved.status_code == 200, moved.text
    back = client.post("/v1/registry/models/housing/aliases/words/rollback", json={}, headers=auth)
    said = _refused(back, 409, "to", "housing@words (version 1) has no earlier holder")
    assert said.endswith("promote the version it should hold instead."), said
    never = client.post(
        "/v1/registry/models/housing/aliases/words/rollback", json={"to": 2}, headers=auth
    )
    said = _refused(never, 409, "to", "version 2 never held housing@words")
    assert said.endswith("earlier holder: promote version 2 instead."), said


def test_approving_your_own_request_names_the_actor_not_a_flag(housing: Path) -> None:
    """What ``POST /v1/registry/requests/ID/approve`` runs, as the token that requested it."""
    config = RegistryConfig(approvals={"reviewed": 1})
    with Project(housing) as project:
        registry = Registry(project.metadata.database, config, actor="token:ops")
        request = registry.promote("housing", 1, alias="reviewed")
        assert isinstance(request, PromotionRequest), request
        with pytest.raises(ConflictError) as refused:
            registry.approve(request.id)
    assert refused.value.field == "actor"
    message = refused.value.message
    assert message.endswith("approve as another actor (KEEL_ACTOR, or another token over REST).")
    assert " --" not in message, message
