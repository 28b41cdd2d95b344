"""/openapi.json describes every route the server answers, and only those: the fast routes
(predict, explain, infer, each also pinned to ``/versions/{version}``; features) are written
by hand beside FastAPI's, so a served path could be left out (``POST
/v1/models/{name}/versions/{version}/predict`` was)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from keel.project import Project
from keel.serve.app import create_app

#: Path shapes a client might try: each one the server answers must be in the document.
_BASES = ("/v1/models/{name}", "/v1/models/{name}/versions/{version}", "/v2/models/{name}",
          "/v2/models/{name}/versions/{version}")  # fmt: skip
_TAILS = ("", "/predict", "/explain", "/infer", "/feedback", "/ready", "/metadata")
CANDIDATES = [base + tail for base in _BASES for tail in _TAILS] + ["/v1/features", "/v1/models"]
_PARAMETER = re.compile(r"\{[^}]+\}")


@pytest.fixture
def client(adult_project: Path) -> Iterator[TestClient]:
    with Project(adult_project) as project, TestClient(create_app(project)) as test_client:
        yield test_client


def _answers(client: TestClient, method: str, template: str) -> bool:
    """Whether the server routes ``method template`` (any answer but no-route 404 or 405)."""
    path = template.replace("{name}", "adult").replace("{version}", "1")
    path = _PARAMETER.sub("x", path)  # other parameters: any value reaches the route
    answer = client.request(method, path, json={} if method == "POST" else None)
    if answer.status_code == 405:
        return False
    return not (answer.status_code == 404 and answer.json()["message"].startswith("no route"))


def test_every_route_answered_is_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    missing = [
        f"{method} {template}"
        for template in CANDIDATES
        for method in ("GET", "POST")
        if _answers(client, method, template) and method.lower() not in paths.get(template, {})
    ]
    assert missing == []
    assert "post" in paths["/v1/models/{name}/versions/{version}/predict"]


def test_every_documented_route_is_answered(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    unanswered = [
        f"{method.upper()} {template}"
        for template, item in paths.items()
        for method in item
        if method in ("get", "post") and not _answers(client, method.upper(), template)
    ]
    assert unanswered == []
