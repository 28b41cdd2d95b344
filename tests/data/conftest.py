"""Fixtures for the data tests: real stores in a temporary directory, a file writer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.store.artifacts import ArtifactStore
from keel.store.metadata import MetadataStore


@dataclass
class Stores:
    artifacts: ArtifactStore
    metadata: MetadataStore


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    """An artifact store and a SQLite metadata store under tmp_path/.keel."""
    state = tmp_path / ".keel"
    state.mkdir()
    with MetadataStore(f"sqlite:///{state / 'keel.db'}") as metadata:
        yield Stores(ArtifactStore(state / "artifacts"), metadata)
