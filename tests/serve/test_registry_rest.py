"""The registry over REST on a real ``keel serve`` bound to loopback with auth off: reading is
open like the rest of the server, every change needs an admin token all the same, is audited
under the token's name, and the running server follows the alias it moved."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keel.project import Project
from keel.store.tokens import create_token
from tests.serve.conftest import ROW, Served, copy_project, keel_serve

BASE = "/v1/registry"


@dataclass(frozen=True)
class Registry:
    served: Served
    admin: dict[str, str]
    reader: dict[str, str]


@pytest.fixture(scope="module")
def rest(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = copy_project(adult_project, tmp_path_factory.mktemp("registry-rest") / "adult",
                        serve="  reload_interval_s: 0.2\n")  # fmt: skip
    with Project(root) as project:
        db = project.metadata.database
        _, admin = create_token(db, "release-bot", ["admin"], created_by="test")
        _, reader = create_token(db, "dashboard", ["read"], created_by="test")
        # version 2: the same package registered again, so the alias has somewhere to move
        from keel.registry.registry import Registry as Reg

        reg = Reg(db, project.config.registry, actor="test")
        package = reg.show("adult", 1).package_sha256
        reg.register("adult", package_sha256=package, run_id=None, metrics={})
    with keel_serve(root) as served:
        yield Registry(served, {"authorization": f"Bearer {admin}"},
                       {"authorization": f"Bearer {reader}"})  # fmt: skip


def _url(rest: Registry, path: str) -> str:
    return f"{rest.served.url}{BASE}{path}"


def test_reading_lists_models_versions_and_aliases(rest: Registry) -> None:
    models = httpx.get(_url(rest, "/models")).json()["models"]
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in models] == [
        ("adult", 2, {"production": 1})
    ]
    versions = httpx.get(_url(rest, "/models/adult")).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    alias = httpx.get(_url(rest, "/models/adult/aliases/production")).json()
    assert alias["version"] == 1 and len(alias["package_sha256"]) == 64
    missing = httpx.get(_url(rest, "/models/nope"))
    assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError"


def test_a_change_without_an_admin_token_is_refused(rest: Registry) -> None:
    body = {"version": 2, "reason": "try"}
    anonymous = httpx.post(_url(rest, "/models/adult/aliases/production"), json=body)
    assert anonymous.status_code == 401, anonymous.text
    reader = httpx.post(_url(rest, "/models/adult/aliases/production"), json=body,
                        headers=rest.reader)  # fmt: skip
    assert reader.status_code == 403 and "admin" in reader.json()["message"]
    bad = httpx.post(_url(rest, "/models/adult/aliases/production"), json={"version": "two"},
                     headers=rest.admin)  # fmt: skip
    assert bad.status_code == 422
    aliases = httpx.get(_url(rest, "/models")).json()["models"][0]["aliases"]
    assert aliases == {"production": 1}, "nothing moved"


def test_promote_and_rollback_move_the_alias_the_server_follows(rest: Registry) -> None:
    moved = httpx.post(_url(rest, "/models/adult/aliases/production"), headers=rest.admin,
                       json={"version": 2, "reason": "canary looked fine"})  # fmt: skip
    assert moved.status_code == 200, moved.text
    assert moved.json()["move"]["actor"] == "token:release-bot"
    assert _served_version_becomes(rest, "2")
    stale = httpx.post(_url(rest, "/models/adult/aliases/production"), headers=rest.admin,
                       json={"version": 2, "expected_version": 1})  # fmt: skip
    assert stale.status_code == 409, stale.text  # it moved to 2 since the caller looked
    back = httpx.post(_url(rest, "/models/adult/aliases/production/rollback"),
                      headers=rest.admin, json={"reason": "v2 regressed"})  # fmt: skip
    assert back.status_code == 200 and back.json()["move"]["version"] == 1
    assert _served_version_becomes(rest, "1")
    audit = httpx.get(_url(rest, "/audit"), params={"actor": "token:release-bot"}).json()
    assert [e["action"] for e in audit["entries"]] == ["rollback", "promote"]


def test_archive_restore_and_the_openapi_document(rest: Registry) -> None:
    blocked = httpx.post(_url(rest, "/models/adult/versions/1/archive"), headers=rest.admin,
                         json={})  # fmt: skip
    assert blocked.status_code == 409, "version 1 holds production"
    paths = httpx.get(f"{rest.served.url}/openapi.json").json()["paths"]
    assert f"{BASE}/models/{{name}}/aliases/{{alias}}" in paths
    assert "requestBody" in paths[f"{BASE}/models/{{name}}/aliases/{{alias}}"]["post"]


def _served_version_becomes(rest: Registry, version: str, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = httpx.post(f"{rest.served.url}/v1/models/adult/predict",
                            json={"instances": [ROW]})  # fmt: skip
        assert answer.status_code == 200, answer.text
        if answer.headers["keel-model-version"] == version:
            return True
        time.sleep(0.05)  # polling the served version, with the deadline above
    return False
