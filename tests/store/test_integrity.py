"""audit_artifacts and remove_leftovers: the metadata store and the artifact store agree, on the
local disk and through fsspec (memory://)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from keel.errors import ConfigError, NotFoundError
from keel.store import ArtifactStore, MetadataStore
from keel.store.integrity import audit_artifacts, remove_leftovers
from keel.types import Artifact


@pytest.fixture(params=["local", "memory"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "artifacts", cache_dir=tmp_path / "cache")
    return ArtifactStore(f"memory://integrity-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")


@pytest.fixture
def metadata(tmp_path: Path) -> Iterator[MetadataStore]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        yield store


def recorded(metadata: MetadataStore, artifacts: ArtifactStore, data: bytes, kind: str) -> Artifact:
    artifact = artifacts.put(data, kind=kind)
    metadata.record_artifact(artifact)
    return artifact


def model_bundle(metadata: MetadataStore, artifacts: ArtifactStore) -> tuple[Artifact, str, str]:
    """A recorded package manifest listing two model files that are not recorded themselves,
    one by sha256, one as {"sha256": ...} (the two shapes Keel writes)."""
    weights = artifacts.put(b"weights", kind="model-file").sha256
    stats = artifacts.put(b"statistics", kind="model-file").sha256
    manifest = {"files": {"model.txt": weights, "statistics.json": {"sha256": stats, "size": 10}}}
    return recorded(metadata, artifacts, orjson.dumps(manifest), "model-package"), weights, stats


def age(artifacts: ArtifactStore, uri: str, seconds: float) -> None:
    """Make a local file look ``seconds`` old."""
    if "://" in artifacts.root:
        pytest.skip("memory:// has no modification times to set")
    then = time.time() - seconds
    os.utime(uri, (then, then))


def test_a_consistent_store_has_nothing_to_report(
    metadata: MetadataStore, artifacts: ArtifactStore
) -> None:
    recorded(metadata, artifacts, b"a snapshot", "snapshot")
    model_bundle(metadata, artifacts)
    run = metadata.start_run("train", cache_key="k", config_hash="c", code_version="v")
    out = artifacts.put(b"an output", kind="model")  # named by the run, not recorded
    metadata.finish_run(run.id, status="succeeded", outputs={"model": out.sha256})
    audit = audit_artifacts(metadata, artifacts)
    assert (audit.referenced, audit.verified, audit.unverified) == (5, 5, 0)
    assert (audit.missing, audit.corrupt, audit.dangling, audit.temp_files) == ((), (), (), ())


def test_missing_corrupt_and_dangling_blobs_are_found(
    metadata: MetadataStore, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    gone = recorded(metadata, artifacts, b"deleted later", "snapshot")
    _, weights, _ = model_bundle(metadata, artifacts)
    leftover = artifacts.put(b"written by a run that was killed", kind="model-file")
    artifacts.delete(gone.sha256)
    artifacts.delete(weights)
    audit = audit_artifacts(metadata, artifacts)
    assert set(audit.missing) == {gone.sha256, weights}
    assert [b.sha256 for b in audit.dangling] == [leftover.sha256]
    assert audit.dangling[0].file.size == len(b"written by a run that was killed")
    if "://" not in artifacts.root:
        damaged = recorded(metadata, artifacts, b"good bytes", "schema")
        Path(artifacts.uri(damaged.sha256)).write_bytes(b"evil bytes")
        assert audit_artifacts(metadata, artifacts).corrupt == (damaged.sha256,)


def test_large_blobs_are_only_checked_to_exist_unless_deep(
    metadata: MetadataStore, artifacts: ArtifactStore
) -> None:
    recorded(metadata, artifacts, b"x" * 100, "snapshot")
    assert audit_artifacts(metadata, artifacts, hash_limit=10).unverified == 1
    deep = audit_artifacts(metadata, artifacts, hash_limit=None)
    assert (deep.verified, deep.unverified) == (1, 0)


def test_leftovers_older_than_the_minimum_age_are_removed(
    metadata: MetadataStore, artifacts: ArtifactStore
) -> None:
    kept = recorded(metadata, artifacts, b"recorded", "snapshot")
    old = artifacts.put(b"old leftover", kind="snapshot")
    young = artifacts.put(b"young leftover", kind="snapshot")
    age(artifacts, artifacts.uri(old.sha256), 120)
    staging = Path(artifacts.root) / "sha256"
    stale_temp = staging / ".tmp-crashed"
    stale_temp.write_bytes(b"half a blob")
    age(artifacts, str(stale_temp), 120)
    (staging / ".tmp-busy").write_bytes(b"being written")
    audit = audit_artifacts(metadata, artifacts)
    assert {b.sha256 for b in audit.dangling} == {old.sha256, young.sha256}
    assert sorted(Path(t.uri).name for t in audit.temp_files) == [".tmp-busy", ".tmp-crashed"]
    removed = remove_leftovers(artifacts, audit, min_age_seconds=60)
    assert sorted(removed) == sorted([artifacts.uri(old.sha256), str(stale_temp)])
    assert artifacts.exists(kept.sha256) and artifacts.exists(young.sha256)
    assert not artifacts.exists(old.sha256) and not stale_temp.exists()
    assert [Path(t.uri).name for t in artifacts.temp_files()] == [".tmp-busy"]
    assert audit_artifacts(metadata, artifacts).missing == ()


def test_remove_leftovers_at_age_zero_clears_a_memory_store(
    metadata: MetadataStore, artifacts: ArtifactStore
) -> None:
    recorded(metadata, artifacts, b"recorded", "snapshot")
    artifacts.put(b"leftover", kind="snapshot")
    audit = audit_artifacts(metadata, artifacts)
    assert len(remove_leftovers(artifacts, audit, min_age_seconds=0)) == 1
    after = audit_artifacts(metadata, artifacts)
    assert (after.dangling, after.missing) == ((), ())


def test_stat_delete_and_temp_files(artifacts: ArtifactStore) -> None:
    art = artifacts.put(b"hello", kind="text")
    info = artifacts.stat(art.sha256)
    assert (info.uri, info.size) == (artifacts.uri(art.sha256), 5)
    assert info.modified is not None and abs(info.modified - time.time()) < 600
    assert artifacts.temp_files() == []
    with pytest.raises(ConfigError, match="not a temporary file"):
        artifacts.remove_temp_file(info.uri)
    artifacts.delete(art.sha256)
    assert not artifacts.exists(art.sha256)
    with pytest.raises(NotFoundError):
        artifacts.delete(art.sha256)
    with pytest.raises(NotFoundError):
        artifacts.stat(art.sha256)


def test_an_interrupted_upload_is_a_temp_file_on_fsspec_stores() -> None:
    import fsspec

    root = f"memory://integrity-{uuid.uuid4().hex}"
    artifacts = ArtifactStore(root)
    art = artifacts.put(b"hello", kind="text")
    fs = fsspec.filesystem("memory")
    shard = artifacts.uri(art.sha256).rsplit("/", 1)[0]
    fs.pipe(f"{shard}/.tmp-{uuid.uuid4().hex}", b"half an upload")
    [temp] = artifacts.temp_files()
    assert temp.size == len(b"half an upload") and temp.modified is not None
    assert list(artifacts.iter_hashes()) == [art.sha256]
    artifacts.remove_temp_file(temp.uri)
    assert artifacts.temp_files() == [] and artifacts.exists(art.sha256)
