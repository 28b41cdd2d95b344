"""Ready means routed: the server follows the active deployments before it answers.

What a new user hit (penguins, ``keel deploy penguins --ab 1:50,2:50``, then ``keel serve``):
``/v2/health/ready`` said ready before the deployer's first pass, and the first 14 requests
all went to the primary (uncounted for the A/B too). A first pass that fails leaves the server
up and degraded, naming why, until a later pass succeeds. California housing, two versions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from starlette.testclient import TestClient

import keel
from keel.errors import BackendError
from keel.project import Project
from keel.registry.rollout import Rollouts
from keel.serve.app import create_app
from tests.housing import needs_housing, two_versions
from tests.serve.conftest import keel_serve

pytestmark = needs_housing


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions, an active 50/50 A/B, and a server that follows the registry only every
    30 s (so only a first pass before ready can route the first requests)."""
    root = two_versions(tmp_path_factory.mktemp("first"), seed=5)
    path = root / "keel.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("serve", {})["reload_interval_s"] = 30
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    keel.deploy("housing", ab="1:50,2:50", project=root, reason="first pass test")
    return root


def _row(root: Path) -> dict[str, Any]:
    rows = pd.read_csv(root.parent / "h.csv").drop(columns="median_house_value").dropna()
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in rows.iloc[0].items()}


def test_the_first_requests_after_ready_are_split_between_the_arms(housing: Path) -> None:
    body = {"instances": [_row(housing)]}
    with keel_serve(housing) as served, httpx.Client(timeout=10) as http:
        ready = http.get(f"{served.url}/v2/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        versions: Counter[str] = Counter()
        for _ in range(30):  # all on one arm by chance: 2 in 2**30
            answer = http.post(f"{served.url}/v1/models/housing/predict", json=body)
            assert answer.status_code == 200, answer.text
            versions[answer.json()["model_version"]] += 1
    assert set(versions) == {"1", "2"}, versions


def test_a_failed_first_pass_leaves_the_server_up_and_degraded(
    housing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(self: Rollouts) -> list[Any]:
        raise BackendError("database is locked")

    monkeypatch.setattr(Rollouts, "active", unreadable)
    with Project(housing) as project, TestClient(create_app(project)) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 200, ready.text
        shown = ready.json()
        assert shown["status"] == "degraded", shown
        (reason,) = shown["reasons"]
        assert "could not read the active deployments" in reason, reason
        assert "database is locked" in reason and "serving the primaries alone" in reason
        scored = client.post("/v1/models/housing/predict", json={"instances": [_row(housing)]})
        assert scored.status_code == 200, scored.text
        monkeypatch.undo()  # the database answers again: the next pass clears the reason
        server = client.app
        assert server.deployer is not None
        client.portal.call(server.deployer.step)  # type: ignore[union-attr]
        again = client.get("/v2/health/ready").json()
        assert again["status"] == "ready", again
