"""Token auth on a real ``keel serve --auth required``: 401, 403, 429, revocation; and the cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keel.project import Project
from keel.serve.auth import Authenticator
from keel.serve.limits import Forbidden, TooManyRequests, Unauthorized
from keel.store.tokens import create_token, revoke_token
from tests.serve.conftest import ROW, Served, copy_project, keel_serve

PREDICT = "/v1/models/adult/predict"


@dataclass(frozen=True)
class Secured:
    served: Served
    root: Path
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def secured(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = copy_project(adult_project, tmp_path_factory.mktemp("auth") / "adult")
    secrets = {}
    with Project(root) as project:
        db = project.metadata.database
        for name, scopes, limit in (("scorer", ["predict"], None), ("reader", ["read"], None),
                                    ("root", ["admin"], None), ("slow", ["predict"], 3),
                                    ("doomed", ["predict"], None)):  # fmt: skip
            _, secrets[name] = create_token(db, name, scopes, created_by="test",
                                            rate_limit_per_minute=limit)  # fmt: skip
    with keel_serve(root, "--auth", "required", "--no-reload") as server:
        yield Secured(server, root, secrets)


def _post(secured: Secured, token: str | None, path: str = PREDICT) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{secured.served.url}{path}", json={"instances": [ROW]}, headers=headers)


def _get(secured: Secured, path: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{secured.served.url}{path}", headers=headers)


def test_no_token_or_a_wrong_one_is_401(secured: Secured) -> None:
    for token in (None, "keel_not-a-real-token", "garbage"):
        response = _post(secured, token)
        assert response.status_code == 401
        assert response.json()["error"] == "Unauthorized"
        assert "keel tokens create" in response.json()["message"]
    response = httpx.post(f"{secured.served.url}{PREDICT}", json={"instances": [ROW]},
                          headers={"authorization": "Basic abc"})  # fmt: skip
    assert response.status_code == 401 and "Bearer" in response.json()["message"]


def test_scopes_403_with_the_reason(secured: Secured) -> None:
    response = _post(secured, secured.secrets["reader"])
    assert response.status_code == 403
    assert "'predict' scope" in response.json()["message"]
    assert _post(secured, secured.secrets["scorer"]).status_code == 200
    assert _post(secured, secured.secrets["root"]).status_code == 200  # admin implies predict
    assert _get(secured, "/metrics", secured.secrets["scorer"]).status_code == 403
    assert _get(secured, "/metrics", secured.secrets["reader"]).status_code == 200
    assert _get(secured, "/v2/models/adult", secured.secrets["reader"]).status_code == 200
    missing = _get(secured, "/v2/models/adult", None)  # the route's scope, not predict's
    assert missing.status_code == 401 and "'read' scope" in missing.json()["message"]
    assert "--scope read" in missing.json()["message"]
    # health stays open: load balancers and orchestrators carry no token
    assert _get(secured, "/v2/health/ready", None).status_code == 200
    assert _get(secured, "/v2/health/live", None).status_code == 200


def test_rate_limit_is_429_with_retry_after(secured: Secured) -> None:
    codes = [_post(secured, secured.secrets["slow"]).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    response = _post(secured, secured.secrets["slow"])
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 20  # 3/min: one every 20 s
    assert "3 requests per minute" in response.json()["message"]
    assert _post(secured, secured.secrets["scorer"]).status_code == 200  # others unaffected


def test_a_revoked_token_stops_working_within_seconds(secured: Secured) -> None:
    assert _post(secured, secured.secrets["doomed"]).status_code == 200
    with Project(secured.root) as project:
        revoke_token(project.metadata.database, "doomed", actor="test")
    deadline = time.monotonic() + 10  # the server trusts a verification for 5 s
    while _post(secured, secured.secrets["doomed"]).status_code == 200:
        assert time.monotonic() < deadline, "the revoked token still works after 10 s"
        time.sleep(0.2)
    assert _post(secured, secured.secrets["doomed"]).status_code == 401


@dataclass(frozen=True)
class FakeToken:
    id: str
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None = None


def test_the_cache_asks_the_verifier_once_per_ttl() -> None:
    now = [0.0]
    calls: list[str] = []
    tokens = {"keel_a": FakeToken("1", "a", ("predict",), rate_limit_per_minute=120)}

    def verify(secret: str) -> FakeToken | None:
        calls.append(secret)
        return tokens.get(secret)

    auth = Authenticator(verify, ttl=5.0, clock=lambda: now[0])
    for _ in range(100):
        auth.check(b"Bearer keel_a", "predict")
        now[0] += 0.01
    assert calls == ["keel_a"]  # 100 requests in 1 s: one verification
    with pytest.raises(Forbidden):
        auth.check(b"Bearer keel_a", "read")
    for _ in range(20):  # the bucket (120/min) had 120 tokens; 100 spent, 1 s refilled 2
        auth.check(b"Bearer keel_a", "predict")
    with pytest.raises(TooManyRequests) as caught:
        for _ in range(10):
            auth.check(b"Bearer keel_a", "predict")
    assert caught.value.retry_after == 1
    for header in (None, b"Bearer keel_unknown"):  # a missing or unknown token: the scope
        with pytest.raises(Unauthorized, match=r"'read' scope.*--scope read"):
            auth.check(header, "read")
    calls.remove("keel_unknown")
    del tokens["keel_a"]  # revoked
    now[0] += 5.0
    with pytest.raises(Unauthorized):
        auth.check(b"Bearer keel_a", "predict")
    assert calls == ["keel_a", "keel_a"]
    for index in range(20):  # unknown secrets are cached too: guessing is no database load
        with pytest.raises(Unauthorized):
            auth.check(f"Bearer guess{index % 2}".encode(), "predict")
    assert len(calls) == 4
