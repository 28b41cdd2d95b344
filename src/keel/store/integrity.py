"""Do the two stores agree? Every blob the metadata refers to is there with its hash; no blob is
there that nothing refers to.

A reference is a recorded artifact, a run's input or output, a registered model package, or a
file a recorded model bundle or package manifest lists (``{"files": {name: sha256 | {"sha256":
...}}}``): model files are stored as blobs but recorded only through their manifest. A blob no
reference reaches is *dangling*: an interrupted run wrote it and died before recording it.
Temporary files are writes that never finished.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from keel.errors import IntegrityError, NotFoundError
from keel.store.artifacts import ArtifactStore, StoredFile
from keel.store.metadata import MetadataStore

__all__ = [
    "DEFAULT_HASH_LIMIT",
    "ArtifactAudit",
    "Blob",
    "audit_artifacts",
    "remove_leftovers",
]

DEFAULT_HASH_LIMIT = 64 << 20
"""Blobs up to this size are re-hashed by default; larger ones are only checked to exist."""
# Manifests are small JSON documents; a larger blob is never read to look for one.
_MANIFEST_LIMIT = 4 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Blob:
    """A blob in the artifact store that nothing refers to.

    Attributes:
        sha256: Its hash.
        file: Where it is, its size and when it was written.
    """

    sha256: str
    file: StoredFile


@dataclass(frozen=True)
class ArtifactAudit:
    """What :func:`audit_artifacts` found.

    Attributes:
        referenced: How many blobs the metadata refers to.
        verified: How many of them were re-hashed and matched.
        unverified: How many were only checked to exist (larger than the hash limit).
        missing: The sha256 of referenced blobs that are not in the artifact store.
        corrupt: The sha256 of referenced blobs whose bytes no longer hash to it.
        dangling: Blobs nothing refers to.
        temp_files: Temporary files of unfinished writes.
    """

    referenced: int
    verified: int
    unverified: int
    missing: tuple[str, ...]
    corrupt: tuple[str, ...]
    dangling: tuple[Blob, ...]
    temp_files: tuple[StoredFile, ...]


def audit_artifacts(
    metadata: MetadataStore,
    artifacts: ArtifactStore,
    *,
    hash_limit: int | None = DEFAULT_HASH_LIMIT,
) -> ArtifactAudit:
    """Check every referenced blob (present, and re-hashed up to ``hash_limit`` bytes), and list
    the blobs nothing refers to and the temporary files of unfinished writes.

    Args:
        metadata: The metadata store.
        artifacts: The artifact store.
        hash_limit: Re-hash blobs up to this many bytes; None re-hashes every one.

    Raises:
        BackendError: A store cannot be read.
    """
    kinds = metadata.artifact_references()
    pending = sorted(kinds)
    seen: set[str] = set(pending)
    verified = unverified = 0
    missing: list[str] = []
    corrupt: list[str] = []
    while pending:
        sha = pending.pop()
        try:
            size = artifacts.stat(sha).size
            if size <= _MANIFEST_LIMIT and (hash_limit is None or size <= hash_limit):
                listed = _manifest_files(artifacts.get(sha))
                verified += 1
            elif hash_limit is None or size <= hash_limit:
                artifacts.verify(sha)
                listed, verified = [], verified + 1
            else:
                listed, unverified = [], unverified + 1
        except NotFoundError:
            missing.append(sha)
            continue
        except IntegrityError:
            corrupt.append(sha)
            continue
        fresh = [s for s in listed if s not in seen]
        seen.update(fresh)
        pending.extend(fresh)
    dangling = tuple(
        Blob(sha, artifacts.stat(sha)) for sha in artifacts.iter_hashes() if sha not in seen
    )
    return ArtifactAudit(
        referenced=len(seen),
        verified=verified,
        unverified=unverified,
        missing=tuple(sorted(missing)),
        corrupt=tuple(sorted(corrupt)),
        dangling=dangling,
        temp_files=tuple(artifacts.temp_files()),
    )


def remove_leftovers(
    artifacts: ArtifactStore, audit: ArtifactAudit, *, min_age_seconds: float = 60.0
) -> list[str]:
    """Remove the dangling blobs and temporary files of ``audit`` older than
    ``min_age_seconds`` (younger ones may belong to a write still in progress).

    Call it only while no run is in progress: a running step's outputs are not recorded yet, so
    they look dangling until it finishes.

    Returns:
        The uris removed.
    """
    removed = []
    for blob in _old(audit.dangling, min_age_seconds):
        try:
            artifacts.delete(blob.sha256)
        except NotFoundError:
            continue  # someone else removed it first
        removed.append(blob.file.uri)
    for temp in _old(audit.temp_files, min_age_seconds):
        artifacts.remove_temp_file(temp.uri)
        removed.append(temp.uri)
    return removed


def age_seconds(file: StoredFile) -> float | None:
    """How long ago the file was last written; None when the filesystem does not say."""
    return None if file.modified is None else max(time.time() - file.modified, 0.0)


def _old(items: Iterable[Any], min_age: float) -> Iterator[Any]:
    for item in items:
        file = item.file if isinstance(item, Blob) else item
        age = age_seconds(file)
        if age is not None and age >= min_age:
            yield item


def _manifest_files(data: bytes) -> list[str]:
    """The blobs a model bundle or package manifest lists; [] for any other blob."""
    if data.lstrip()[:1] != b"{":
        return []
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict):
        return []
    found = []
    for spec in files.values():
        sha = spec.get("sha256") if isinstance(spec, dict) else spec
        if isinstance(sha, str) and _SHA256.fullmatch(sha.lower()):
            found.append(sha.lower())
    return found
