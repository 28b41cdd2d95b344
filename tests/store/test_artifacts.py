"""ArtifactStore: the public contract over each backend, plus crash safety on the local disk."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

import keel
from keel.errors import ConfigError, IntegrityError, NotFoundError
from keel.store import ArtifactStore
from keel.store.artifacts import CHUNK_SIZE
from keel.testing import ArtifactStoreContract, check_artifact_store


class TestLocalArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore(str(tmp_path / "artifacts"))


class TestFileUrlArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore((tmp_path / "artifacts").as_uri())


class TestMemoryArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ArtifactStore]:
        root = f"memory://keel-test-{uuid.uuid4().hex}"
        yield ArtifactStore(root, cache_dir=tmp_path / "cache")
        fs, path = fsspec.core.url_to_fs(root)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def test_contract_runs_without_pytest(tmp_path: Path) -> None:
    roots = iter(range(100))
    check_artifact_store(lambda: ArtifactStore(str(tmp_path / f"root{next(roots)}")))


def test_blob_layout(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    art = store.put(b"layout", kind="test")
    blob = tmp_path / "sha256" / art.sha256[:2] / art.sha256
    assert art.uri == str(blob)
    assert blob.read_bytes() == b"layout"
    assert store.local_path(art.sha256) == blob


def test_relative_root_gives_absolute_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    art = ArtifactStore("rel/artifacts").put(b"x", kind="test")
    assert Path(art.uri).is_absolute()
    assert Path(art.uri).read_bytes() == b"x"


def test_failed_put_cleans_up_its_temp_file(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))

    class Broken:
        def read(self, size: int, /) -> bytes:
            raise OSError("disk went away")

    with pytest.raises(Exception, match="disk went away"):
        store.put(Broken(), kind="test")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_put_missing_file_or_directory(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    with pytest.raises(NotFoundError, match="no file at"):
        store.put(tmp_path / "missing.csv", kind="snapshot")
    with pytest.raises(ConfigError, match="is a directory"):
        store.put(tmp_path, kind="snapshot")
    with pytest.raises(ConfigError, match="kind"):
        store.put(b"x", kind="")


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchscheme"):
        ArtifactStore("nosuchscheme://bucket/path")


def test_remote_local_path_refetches_a_damaged_cache(tmp_path: Path) -> None:
    root = f"memory://keel-test-{uuid.uuid4().hex}"
    store = ArtifactStore(root, cache_dir=tmp_path / "cache")
    try:
        art = store.put(b"remote bytes", kind="test")
        cached = store.local_path(art.sha256)
        assert cached.is_relative_to(tmp_path / "cache")
        cached.write_bytes(b"tampered")
        assert store.local_path(art.sha256).read_bytes() == b"remote bytes"
    finally:
        fs, path = fsspec.core.url_to_fs(root)
        fs.rm(path, recursive=True)


def test_local_path_of_corrupt_blob(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    art = store.put(b"abc", kind="test")
    Path(art.uri).write_bytes(b"abd")
    with pytest.raises(IntegrityError, match="delete it and re-run"):
        store.local_path(art.sha256)


def test_putting_the_same_bytes_again_repairs_a_corrupt_blob(tmp_path: Path) -> None:
    """A damaged blob is not kept because its name matches: the next put of the true bytes
    (a step that re-runs because its output failed verification) replaces it."""
    store = ArtifactStore(str(tmp_path))
    art = store.put(b"model bytes", kind="test")
    Path(art.uri).write_bytes(b"model bytez")
    with pytest.raises(IntegrityError):
        store.verify(art.sha256)
    store.put(b"model bytes", kind="test")
    store.verify(art.sha256)
    Path(art.uri).write_bytes(b"model")  # truncated, then put from a file
    source = tmp_path / "source.bin"
    source.write_bytes(b"model bytes")
    store.put(source, kind="test")
    assert store.get(art.sha256) == b"model bytes"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_kill_9_in_the_middle_of_a_put_leaves_no_visible_blob(tmp_path: Path) -> None:
    root, feed = tmp_path / "artifacts", tmp_path / "feed"
    os.mkfifo(feed)
    src = str(Path(keel.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    script = (
        "import pathlib, sys\n"
        "from keel.store import ArtifactStore\n"
        "ArtifactStore(sys.argv[1]).put(pathlib.Path(sys.argv[2]), kind='snapshot')\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(root), str(feed)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        fd = _open_fifo_for_writing(feed, child)
        try:
            # Three chunks go in, and the pipe stays open: the child is stuck mid-put.
            _write_all(fd, os.urandom(3 * CHUNK_SIZE))
            _wait_for_partial_temp_file(root / "sha256", child)
            child.kill()
            child.wait(timeout=30)
        finally:
            os.close(fd)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -9
    store = ArtifactStore(str(root))
    assert list(store.iter_hashes()) == []
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    art = store.put(b"after the crash", kind="test")
    assert list(store.iter_hashes()) == [art.sha256]
    assert hashlib.sha256(store.get(art.sha256)).hexdigest() == art.sha256


def _open_fifo_for_writing(feed: Path, child: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            fd = os.open(feed, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: the child has not opened the pipe yet
            assert child.poll() is None, child.communicate()[1].decode()
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd
    raise AssertionError("the child never opened the pipe")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:65536]) :]


def _wait_for_partial_temp_file(staging: Path, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        temps = list(staging.glob(".tmp-*")) if staging.is_dir() else []
        if temps and temps[0].stat().st_size >= CHUNK_SIZE:
            return
        assert child.poll() is None, child.communicate()[1].decode()
        time.sleep(0.01)
    raise AssertionError("the child never started writing its temporary file")
