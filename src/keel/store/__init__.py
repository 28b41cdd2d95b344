"""Keel's ground floor: the content-addressed artifact store and the metadata store.

``ArtifactStore`` keeps immutable blobs by sha256 on a local path or any fsspec URL;
``MetadataStore`` keeps runs, artifacts, lineage, the model registry and the audit log in any
SQLAlchemy database (SQLite by default, PostgreSQL to scale out). Both are imported lazily so
that importing one does not pay for the other's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.store.artifacts import ArtifactStore, ByteSource
    from keel.store.metadata import MetadataStore

__all__ = ["ArtifactStore", "ByteSource", "MetadataStore"]

_LAZY = {
    "ArtifactStore": "keel.store.artifacts",
    "ByteSource": "keel.store.artifacts",
    "MetadataStore": "keel.store.metadata",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
