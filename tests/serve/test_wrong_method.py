"""A known path asked with a method it does not take answers 405 with ``Allow``, whatever the
token's scopes (a predict-only token GETting the predict path was 403 "lacks the 'read'
scope"); a missing or unknown token is still 401 where auth is required (authentication comes
before routing, as behind Starlette's AuthenticationMiddleware or a KServe ingress: who may not
call the server learns nothing of its routes)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keel.project import Project
from keel.serve.middleware import classify
from keel.store.tokens import create_token
from tests.serve.conftest import ROW, Served, copy_project, keel_serve

PREDICT = "/v1/models/adult/predict"


@dataclass(frozen=True)
class Secured:
    served: Served
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def secured(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = copy_project(adult_project, tmp_path_factory.mktemp("methods") / "adult")
    secrets = {}
    with Project(root) as project:
        for name, scopes in (("scorer", ["predict"]), ("reader", ["read"])):
            _, secrets[name] = create_token(project.metadata.database, name, scopes,
                                            created_by="test")  # fmt: skip
    with keel_serve(root, "--auth", "required", "--no-reload") as server:
        yield Secured(server, secrets)


def _ask(secured: Secured, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {secured.secrets[token]}"} if token else {}
    return httpx.request(method, f"{secured.served.url}{path}", headers=headers, timeout=30)


@pytest.mark.parametrize("token", ["scorer", "reader"])
@pytest.mark.parametrize(
    "path",
    [PREDICT, "/v1/models/adult/versions/1/predict", "/v2/models/adult/infer", "/v1/features"],
)
def test_get_on_a_post_route_is_405_for_any_token(secured: Secured, path: str, token: str) -> None:
    answer = _ask(secured, "GET", path, token)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"] == "MethodNotAllowed"


@pytest.mark.parametrize("path", ["/metrics", "/v2/models/adult"])
def test_post_on_a_get_route_is_405_for_a_predict_token(secured: Secured, path: str) -> None:
    answer = _ask(secured, "POST", path, "scorer")
    assert answer.status_code == 405, answer.text
    assert "GET" in answer.headers["allow"]


def test_no_token_is_still_401_and_scopes_still_hold(secured: Secured) -> None:
    assert _ask(secured, "GET", PREDICT, None).status_code == 401
    assert _ask(secured, "GET", "/metrics", "scorer").status_code == 403  # the right method
    headers = {"authorization": f"Bearer {secured.secrets['scorer']}"}
    posted = httpx.post(f"{secured.served.url}{PREDICT}", json={"instances": [ROW]},
                        headers=headers, timeout=30)  # fmt: skip
    assert posted.status_code == 200, posted.text


def test_classify_marks_wrong_methods() -> None:
    assert classify("GET", PREDICT).wrong_method
    assert classify("DELETE", "/v2/models/m/versions/2/infer").wrong_method
    assert classify("POST", "/v2/models/m/ready").wrong_method
    assert not classify("POST", PREDICT).wrong_method
    assert not classify("GET", "/v2/models/m").wrong_method
    assert classify("POST", "/v2/health/live").scope is None  # open: the app answers 405
