"""A bare model name follows the project's ``registry.alias``: what ``keel run`` promotes and a
canary moves is what ``keel serve NAME``, ``keel predict NAME`` and ``keel.load_model(NAME)``
use. Outside a project (a store opened on its own) a bare name stays ``production``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

import keel
from keel.project import Project
from keel.store.metadata import MetadataStore
from tests.serve.conftest import ROW, keel_serve

PREDICT = "/v1/models/adult/predict"


def _served_version(url: str) -> str:
    response = httpx.post(f"{url}{PREDICT}", json={"instances": [ROW]}, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def _keel(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
                            text=True, capture_output=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def live_project(tmp_path: Path) -> Path:
    """The Adult example with ``registry: {alias: live}``, a quicker model and a fast reload."""
    root = keel.init(tmp_path / "adult", example="adult")
    config = root / "keel.yaml"
    text = config.read_text()
    for old, new in (
        ("  alias: production\n", "  alias: live\n"),
        ("    n_estimators: 600\n", "    n_estimators: 150\n"),
        ("    learning_rate: 0.05\n", "    learning_rate: 0.1\n"),
        ("serve:\n", "serve:\n  reload_interval_s: 0.2\n"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    config.write_text(text)
    return root


def test_bare_name_follows_registry_alias(live_project: Path, tmp_path: Path) -> None:
    root = live_project
    first = keel.run(root)
    assert first["model"]["promoted"]
    with Project(root) as project:
        assert project.metadata.list_models()[0]["aliases"] == {"live": 1}
        # A stale production alias (left from before registry.alias changed) must not win.
        project.metadata.set_alias("adult", "production", 1, actor="test", reason="stale")
        db_url = project.db_url

    with keel_serve(root, "adult") as served:
        assert _served_version(served.url) == "1"
        assert "serving adult@1 (follows @live) on http://127.0.0.1:" in served.log.read_text()

        config = root / "keel.yaml"
        config.write_text(
            config.read_text().replace("learning_rate: 0.1\n", "learning_rate: 0.08\n")
        )
        second = keel.run(root)
        assert second["model"]["promoted"]
        with Project(root) as project:
            aliases = project.metadata.list_models()[0]["aliases"]
        assert aliases == {"live": 2, "production": 1}

        deadline = time.monotonic() + 30.0  # polled every 0.2 s; load and warm-up well under 1 s
        version = _served_version(served.url)
        while version != "2":
            assert time.monotonic() < deadline, f"the server still serves adult@{version}"
            version = _served_version(served.url)

    rows = tmp_path / "rows.csv"
    pd.DataFrame([ROW] * 2).to_csv(rows, index=False)
    out = tmp_path / "scored.parquet"
    _keel("predict", "adult", "--input", str(rows), "--output", str(out), root=root)
    assert set(pq.read_table(out).column("model_version").to_pylist()) == {"2"}
    assert keel.load_model("adult", project=root).version == 2
    assert keel.load_model("adult@production", project=root).version == 1

    # Outside a project nothing names an alias: a bare name is still NAME@production.
    store = MetadataStore(db_url)
    try:
        assert store.resolve("adult").version == 1
    finally:
        store.close()


def test_bare_name_is_the_alias_else_the_newest(tmp_path: Path) -> None:
    """Until ``live`` is set a bare name is the newest version (never a stale ``production``);
    once set, it is ``live``'s version. ``keel serve --help`` says so."""
    root = keel.init(tmp_path / "adult", example="adult")
    config = root / "keel.yaml"
    config.write_text(config.read_text().replace("  alias: production\n", "  alias: live\n"))
    with Project(root) as project:
        store = project.metadata
        assert store.default_alias == "live"
        for _ in range(3):
            store.register_model_version("adult", package_sha256="0" * 64, run_id=None, metrics={})
        store.set_alias("adult", "production", 1, actor="test")
        assert store.resolve("adult").version == 3
        store.set_alias("adult", "live", 2, actor="test")
        assert store.resolve("adult").version == 2
        assert store.resolve("adult@production").version == 1
    help_text = _keel("serve", "--help", root=root).stdout
    assert "registry.alias" in help_text
