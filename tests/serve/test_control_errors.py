"""The control plane answers every refusal in Keel's error shape (``{"error", "message",
"field"}``), never FastAPI's ``{"detail": ...}``: a bad kind, a mistyped field, a version that
is not a number, an unknown path or method, and fields the kind would silently ignore (a
shadow's steps and checks). A/B arms are taken as ``"2:50,1:50"`` or as a list of objects.
California housing, two versions (a trial of ``POST /v1/deployments``, issue 16).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.housing import admin_client, needs_housing, two_versions

pytestmark = needs_housing


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 housing rows, `keel init --from`, two runs: version 2 holds production."""
    return two_versions(tmp_path_factory.mktemp("control"), seed=3)


@pytest.fixture(scope="module")
def admin(housing: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The server (no models preloaded beyond the registry's) and an admin token's header."""
    with admin_client(housing) as served:
        yield served


def _refused(answer: Any, status: int, field: str | None, *words: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert "detail" not in body, body
    assert set(body) >= {"error", "message", "field"}, body
    assert body["field"] == field, body
    for word in words:
        assert word in body["message"], body["message"]
    return body


BAD_BODIES: list[tuple[dict[str, Any], str, tuple[str, ...]]] = [
    ({"name": "housing", "kind": "blue", "version": 1}, "kind",
     ("kind must be 'canary', 'shadow' or 'ab'", "'blue'")),
    ({"name": "housing", "kind": "canary", "version": "two"}, "version",
     ("version must be a whole number", "'two'")),
    ({"name": "housing", "kind": "canary", "version": 1, "stpes": "5,50"}, "stpes",
     ("unknown field 'stpes'", "did you mean 'steps'?", "/openapi.json")),
    ({"name": "housing", "kind": "ab", "arms": {"1": 50}}, "arms",
     ("arms must be a string or a list", "'3:50,4:50'")),
    ({"name": "housing", "kind": "ab", "arms": [{"version": "x", "weight": 50}]},
     "arms[0].version", ("arms[0].version", "'x'")),
    ({"kind": "canary", "version": 1}, "name", ("name is required",)),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field", "words"), BAD_BODIES)
def test_bad_bodies_answer_keels_error_shape(
    admin: tuple[TestClient, dict[str, str]], body: dict[str, Any], field: str, words: tuple[str]
) -> None:
    client, auth = admin
    answer = client.post("/v1/deployments", json=body, headers=auth)
    refused = _refused(answer, 422, field, *words)
    assert refused["error"] == "DataValidationError"
    assert refused["details"]["errors"][0]["field"] == field


def test_unknown_paths_methods_and_bad_json_answer_keels_error_shape(
    admin: tuple[TestClient, dict[str, str]],
) -> None:
    client, auth = admin
    missing = _refused(client.get("/v1/deploymentz", headers=auth), 404, "path", "no route")
    assert missing["error"] == "NotFoundError"
    wrong = client.delete("/v1/deployments", headers=auth)
    _refused(wrong, 405, "method", "DELETE /v1/deployments", "GET", "POST")
    bad = client.post(
        "/v1/deployments", content=b"{nope", headers={**auth, "content-type": "application/json"}
    )
    _refused(bad, 422, None, "not valid JSON")


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "shadow", "version": 1, "steps": "5,50", "check": "p99_ms<=1"}, "steps",
         ("steps, check do not apply to a shadow", 'send "kind": "canary"')),
        ({"kind": "ab", "arms": "1:50,2:50", "min_requests": 0}, "min_requests",
         ("min_requests does not apply to an A/B",)),
        ({"kind": "shadow", "version": 1, "sticky_key": "id"}, "sticky_key",
         ("no arm to stick to",)),
        ({"kind": "ab", "arms": "1:50,2:50", "version": 1}, "version", ("arms name",)),
        ({"kind": "shadow", "version": 1, "arms": "1:50,2:50"}, "arms", ("a shadow",)),
    ],
)  # fmt: skip
def test_fields_the_kind_ignores_are_refused_not_dropped(
    admin: tuple[TestClient, dict[str, str]], body: dict[str, Any], field: str, words: tuple[str]
) -> None:
    client, auth = admin
    answer = client.post("/v1/deployments", json={"name": "housing", **body}, headers=auth)
    _refused(answer, 422, field, *words)
    assert client.get("/v1/deployments", headers=auth).json()["deployments"] == []


def test_ab_arms_as_a_list_of_objects_or_a_string(
    admin: tuple[TestClient, dict[str, str]],
) -> None:
    client, auth = admin
    arms = [{"version": 2, "weight": 70}, {"version": 1, "weight": 30}]
    made = client.post(
        "/v1/deployments", json={"name": "housing", "kind": "ab", "arms": arms}, headers=auth
    )
    assert made.status_code == 200, made.text
    weights = {a["version"]: a["weight"] for a in made.json()["arms"]}
    assert weights == {2: pytest.approx(70.0), 1: pytest.approx(30.0)}
    ended = client.post(f"/v1/deployments/{made.json()['id']}/abort", json={}, headers=auth)
    assert ended.status_code == 200, ended.text
    twice = client.post(
        "/v1/deployments",
        json={"name": "housing", "kind": "ab", "arms": [{"version": 1, "weight": 1}] * 2},
        headers=auth,
    )
    _refused(twice, 400, "arms", "arms '1:1.0,1:1.0'", "more than once")
    again = client.post(
        "/v1/deployments", json={"name": "housing", "kind": "ab", "arms": "1:40,2:60"}, headers=auth
    )
    assert again.status_code == 200, again.text
    client.post(f"/v1/deployments/{again.json()['id']}/abort", json={}, headers=auth)
