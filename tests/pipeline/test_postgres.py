"""The whole pipeline and a served model with metadata in a real PostgreSQL (CI starts one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import keel
from keel.testing import postgres_schema
from tests.pipeline.test_runner import make_project

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        POSTGRES_URL is None, reason="set KEEL_TEST_POSTGRES_URL to run against PostgreSQL"
    ),
]


def test_run_twice_and_load_with_postgres_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert POSTGRES_URL is not None
    root = make_project(tmp_path / "adult")
    with postgres_schema(POSTGRES_URL) as url:
        monkeypatch.setenv("KEEL_DB_URL", url)
        first = keel.run(root)
        second = keel.run(root)
        assert first["model"]["promoted"] and first["model"]["metrics"]["roc_auc"] > 0.9
        assert {s["status"] for s in second["steps"]} == {"cached"}
        assert keel.models(root)[0]["aliases"] == {"production": 1}
        model = keel.load_model("adult@production", project=root)
        assert model.version == 1
    assert not (root / ".keel" / "keel.db").exists()
