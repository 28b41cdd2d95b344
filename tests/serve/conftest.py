from __future__ import annotations

from pathlib import Path

import pytest

import keel


@pytest.fixture(scope="session")
def adult_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with the Adult model trained and registered as adult@production."""
    root = keel.init(tmp_path_factory.mktemp("served") / "adult", example="adult")
    summary = keel.run(root)
    assert summary["model"]["promoted"]
    return root
