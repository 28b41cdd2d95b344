"""Relative store locations (``KEEL_DB_URL``, ``store.db_url``, ``store.artifacts``) are paths in
the project directory, whichever directory a command runs from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import keel
from keel.project import Project
from keel.store.database import anchor_sqlite_url


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = keel.init(tmp_path / "adult", example="adult")
    (root / "data" / "sub").mkdir(parents=True, exist_ok=True)
    return root


def test_relative_sqlite_url_from_the_environment_is_in_the_project(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_DB_URL", "sqlite:///meta/keel.db")
    monkeypatch.chdir(project / "data" / "sub")  # a command run from below the project
    with Project() as proj:
        proj.metadata.start_run("s", cache_key="k", config_hash="c", code_version="v")
    assert (project / "meta" / "keel.db").exists()
    assert not (project / "data" / "sub" / "meta").exists()


def test_relative_store_paths_in_keel_yaml_are_in_the_project(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load((project / "keel.yaml").read_text())
    config["store"] = {"db_url": "sqlite:///state/runs.db", "artifacts": "state/blobs"}
    (project / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.delenv("KEEL_DB_URL", raising=False)
    monkeypatch.delenv("KEEL_ARTIFACTS", raising=False)
    monkeypatch.chdir(project / "data")
    with Project() as proj:
        proj.metadata.start_run("s", cache_key="k", config_hash="c", code_version="v")
        artifact = proj.artifacts.put(b"x", kind="test")
        assert Path(proj.artifacts.local_path(artifact.sha256)).is_relative_to(project / "state")
    assert (project / "state" / "runs.db").exists()
    assert not (project / "data" / "state").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///rel/k.db", "sqlite:////proj/rel/k.db"),
        ("sqlite:///rel/k.db?timeout=5", "sqlite:////proj/rel/k.db?timeout=5"),
        ("sqlite:////abs/k.db", "sqlite:////abs/k.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql+psycopg://u:secret@host/keel", "postgresql+psycopg://u:secret@host/keel"),
        ("not a url", "not a url"),
    ],
)
def test_anchor_sqlite_url(url: str, expected: str) -> None:
    assert anchor_sqlite_url(url, Path("/proj")) == expected
