"""Content-addressed blob storage on the local disk or any fsspec filesystem.

A blob lives at ``{root}/sha256/{h[:2]}/{h}`` where ``h`` is the sha256 of its bytes. Writes
stream into a temporary ``.tmp-<uuid>`` file while hashing, are flushed and fsynced, then
renamed into place, so a reader never sees a partial blob under a sha256 name: a crash leaves
at most a ``.tmp-*`` file, which nothing lists. An existing blob is never rewritten, and every
read re-hashes the bytes (``IntegrityError`` on a mismatch).

The backend is chosen from the root's URL scheme in ``_open_backend``: a plain path or
``file://`` is the local disk; anything else (``memory://``, ``s3://``, ``gs://``, ...) goes
through fsspec.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from keel.errors import BackendError, ConfigError, IntegrityError, NotFoundError
from keel.types import Artifact

__all__ = ["CHUNK_SIZE", "ArtifactStore", "ByteSource", "StoredFile"]

CHUNK_SIZE = 1 << 20
TMP_PREFIX = ".tmp-"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LOCAL_SCHEMES = frozenset({"file", "local"})
# "s3://bucket", "file:///tmp", "simplecache::s3://b": a local path needs no fsspec (100 ms to
# import), so the scheme is read here and fsspec imported only for another filesystem
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)(://|::)")
_CACHE_NAME = "keel-artifact-cache"


@dataclass(frozen=True)
class StoredFile:
    """A file in an artifact store: a blob, or a temporary file a writer left behind.

    Attributes:
        uri: Where it is.
        size: Its size in bytes.
        modified: When it was last written, in seconds since the epoch (None: the
            filesystem does not say).
    """

    uri: str
    size: int
    modified: float | None


class ByteSource(Protocol):
    """Anything with ``read(size) -> bytes``: an open binary file, a socket reader, ..."""

    def read(self, size: int, /) -> bytes:
        """Return up to ``size`` bytes; ``b""`` at the end."""
        ...


class ArtifactStore:
    """Immutable blobs addressed by their sha256, on a local path or an fsspec URL.

    Args:
        root: A local directory or an fsspec URL (``file://``, ``memory://``, ``s3://``, ...).
        cache_dir: Where blobs of a remote store are downloaded for ``local_path``; defaults
            to ``<tmp>/keel-artifact-cache``.

    Raises:
        ConfigError: The URL scheme is unknown or its fsspec package is not installed.

    Example:
        >>> store = ArtifactStore("memory://doc-example")
        >>> art = store.put(b"hello", kind="text")
        >>> store.get(art.sha256)
        b'hello'
    """

    def __init__(
        self, root: str | os.PathLike[str], *, cache_dir: str | Path | None = None
    ) -> None:
        self._root = os.fspath(root)
        cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / _CACHE_NAME
        self._backend = _open_backend(self._root, cache)

    @property
    def root(self) -> str:
        """The root as given."""
        return self._root

    def __repr__(self) -> str:
        return f"ArtifactStore({self._root!r})"

    def uri(self, sha256: str) -> str:
        """Where the blob with this sha256 lives (or would live)."""
        return self._backend.uri(_key(_check_sha(sha256)))

    def put(
        self,
        data: bytes | Path | ByteSource,
        *,
        kind: str,
        metadata: dict[str, Any] | None = None,
    ) -> Artifact:
        """Store bytes, a local file or a readable stream, and return its artifact.

        Files and streams are copied in chunks while hashing; they are never read whole. If
        a blob with the same sha256 exists and still hashes to it, it is left untouched; a
        damaged one (bit rot, a truncated copy) is replaced by the new bytes.

        Args:
            data: The bytes, a local file path, or an object with ``read(size)``.
            kind: What the bytes are (``snapshot``, ``model-package``, ...).
            metadata: Small JSON-able facts to carry on the returned artifact.

        Returns:
            The artifact; record it with ``MetadataStore.record_artifact``.

        Raises:
            NotFoundError: ``data`` is a path that does not exist.
            BackendError: The store cannot be written.
        """
        if not kind or not isinstance(kind, str):
            raise ConfigError(f"put: kind must be a non-empty string, got {kind!r}", field="kind")
        if isinstance(data, bytes):
            sha = hashlib.sha256(data).hexdigest()
            if self._intact(sha):
                return self._artifact(kind, sha, len(data), metadata)
        with _open_source(data) as source, self._stage(source) as (staged, sha, size):
            key = _key(sha)
            with self._writing():
                if not self._intact(sha):
                    self._backend.commit(staged, key)
        return self._artifact(kind, sha, size, metadata)

    def get(self, sha256: str) -> bytes:
        """The blob's bytes, after checking they still hash to ``sha256``.

        Raises:
            NotFoundError: No blob has this sha256.
            IntegrityError: The stored bytes were modified or damaged.
        """
        key = _key(_check_sha(sha256))
        with self._reading(key):
            data = self._backend.read_bytes(key)
        self._check(key, hashlib.sha256(data).hexdigest())
        return data

    def local_path(self, sha256: str) -> Path:
        """A verified local file with the blob's bytes; do not modify it.

        For a local store this is the blob itself; a remote blob is downloaded into the
        cache directory first. Either way the bytes are re-hashed before returning.

        Raises:
            NotFoundError: No blob has this sha256.
            IntegrityError: The stored bytes were modified or damaged.
        """
        key = _key(_check_sha(sha256))
        with self._reading(key):
            path = self._backend.local_file(key, refresh=False)
            actual = _hash_file(path)
            if actual != _sha_of(key):
                # A remote store's cached copy may be the damaged one: fetch it again first.
                path = self._backend.local_file(key, refresh=True)
                actual = _hash_file(path)
        self._check(key, actual)
        return path

    def exists(self, sha256: str) -> bool:
        """Whether a blob with this sha256 is stored (without verifying it)."""
        return self._backend.exists(_key(_check_sha(sha256)))

    def verify(self, sha256: str) -> None:
        """Re-hash the stored blob, streaming it.

        Raises:
            NotFoundError: No blob has this sha256.
            IntegrityError: The stored bytes do not hash to ``sha256``.
        """
        key = _key(_check_sha(sha256))
        with self._reading(key), self._backend.open(key) as stream:
            actual = _hash_stream(stream)
        self._check(key, actual)

    def _intact(self, sha256: str) -> bool:
        """Whether a blob with this sha256 is stored and its bytes still hash to it."""
        key = _key(sha256)
        if not self._backend.exists(key):
            return False
        with self._backend.open(key) as stream:
            return _hash_stream(stream) == sha256

    def iter_hashes(self) -> Iterator[str]:
        """The sha256 of every complete blob in the store (temporary files excluded)."""
        for key in self._backend.blob_keys():
            yield key.rsplit("/", 1)[-1]

    def stat(self, sha256: str) -> StoredFile:
        """Where a blob is, its size and when it was written (without reading it).

        Raises:
            NotFoundError: No blob has this sha256.
        """
        key = _key(_check_sha(sha256))
        with self._reading(key):
            size, modified = self._backend.stat(key)
        return StoredFile(self._backend.uri(key), size, modified)

    def delete(self, sha256: str) -> None:
        """Remove a blob. Only for blobs nothing refers to (``keel doctor --fix`` removes those
        an interrupted run left); deleting a blob a run or model refers to breaks it.

        Raises:
            NotFoundError: No blob has this sha256.
        """
        key = _key(_check_sha(sha256))
        with self._reading(key):
            self._backend.delete(key)

    def temp_files(self) -> list[StoredFile]:
        """The temporary files writers left behind (a crash between staging and renaming);
        a writer still busy has one too, so look at ``modified`` before removing any."""
        with self._writing():
            return [StoredFile(uri, size, mtime) for uri, size, mtime in self._backend.temps()]

    def remove_temp_file(self, uri: str) -> None:
        """Remove one of :meth:`temp_files`; anything else is refused.

        Raises:
            ConfigError: ``uri`` is not a temporary file of this store.
        """
        if not any(uri == found.uri for found in self.temp_files()):
            msg = f"{uri} is not a temporary file of artifact store {self._root}; not removed"
            raise ConfigError(msg, field="uri")
        with self._writing():
            self._backend.remove_temp(uri)

    def _artifact(self, kind: str, sha: str, size: int, meta: dict[str, Any] | None) -> Artifact:
        uri = self._backend.uri(_key(sha))
        return Artifact(kind=kind, uri=uri, sha256=sha, size=size, metadata=dict(meta or {}))

    @contextlib.contextmanager
    def _stage(self, source: ByteSource) -> Iterator[tuple[Path, str, int]]:
        """Copy ``source`` into a fsynced temporary file while hashing it; removed on exit.

        Errors from the source propagate unchanged; errors writing the store become
        BackendError.
        """
        with self._writing():
            staging = self._backend.staging_dir()
            staging.mkdir(parents=True, exist_ok=True)
            tmp = staging / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            out = open(tmp, "xb")  # noqa: SIM115 - closed by the `with out:` below
        try:
            digest, size = hashlib.sha256(), 0
            with out:
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    with self._writing():
                        out.write(chunk)
                    size += len(chunk)
                with self._writing():
                    out.flush()
                    os.fsync(out.fileno())
            yield tmp, digest.hexdigest(), size
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            msg = (
                f"cannot write to artifact store {self._root}: {exc}. "
                "Check that it exists, is writable and has free space."
            )
            raise BackendError(msg, details={"root": self._root}) from exc

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            msg = (
                f"no artifact {_sha_of(key)} in artifact store {self._root} "
                f"(looked for {self._backend.uri(key)}). Check the hash, or re-run the step "
                "that produces it."
            )
            raise NotFoundError(msg, field="sha256") from exc
        except OSError as exc:
            msg = f"cannot read {self._backend.uri(key)}: {exc}. Check that the store is reachable."
            raise BackendError(msg, details={"root": self._root}) from exc

    def _check(self, key: str, actual: str) -> None:
        expected = _sha_of(key)
        if actual == expected:
            return
        uri = self._backend.uri(key)
        msg = (
            f"artifact {expected} at {uri} is corrupt: its bytes hash to {actual}. "
            "The stored blob was modified or damaged; delete it and re-run the step that "
            "produced it (or put the original bytes again)."
        )
        raise IntegrityError(msg, details={"sha256": expected, "uri": uri, "actual": actual})


class _Backend(Protocol):
    """The narrow byte seam under ArtifactStore; keys look like ``sha256/ab/ab12...``."""

    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def open(self, key: str) -> IO[bytes]: ...
    def read_bytes(self, key: str) -> bytes: ...
    def local_file(self, key: str, *, refresh: bool) -> Path: ...
    def staging_dir(self) -> Path: ...
    def commit(self, staged: Path, key: str) -> None: ...
    def blob_keys(self) -> Iterator[str]: ...
    def stat(self, key: str) -> tuple[int, float | None]: ...
    def delete(self, key: str) -> None: ...
    def temps(self) -> Iterator[tuple[str, int, float | None]]: ...
    def remove_temp(self, uri: str) -> None: ...


class _LocalBackend:
    """Blobs in a local directory; commits are ``os.replace`` of an fsynced file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def open(self, key: str) -> IO[bytes]:
        return open(self.root / key, "rb")

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def local_file(self, key: str, *, refresh: bool) -> Path:
        path = self.root / key
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return path

    def staging_dir(self) -> Path:
        # Same filesystem as every blob, so the final rename is atomic.
        return self.root / "sha256"

    def commit(self, staged: Path, key: str) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
        _fsync_dir(dest.parent)

    def blob_keys(self) -> Iterator[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for shard in sorted(os.scandir(base), key=lambda e: e.name):
            if len(shard.name) != 2 or not shard.is_dir():
                continue
            for entry in sorted(os.scandir(shard.path), key=lambda e: e.name):
                if _SHA256.fullmatch(entry.name) and entry.name[:2] == shard.name:
                    yield f"sha256/{shard.name}/{entry.name}"

    def stat(self, key: str) -> tuple[int, float | None]:
        info = (self.root / key).stat()
        return info.st_size, info.st_mtime

    def delete(self, key: str) -> None:
        (self.root / key).unlink()

    def temps(self) -> Iterator[tuple[str, int, float | None]]:
        staging = self.staging_dir()
        if not staging.is_dir():
            return
        for entry in sorted(os.scandir(staging), key=lambda e: e.name):
            if entry.name.startswith(TMP_PREFIX) and entry.is_file():
                info = entry.stat()
                yield str(staging / entry.name), info.st_size, info.st_mtime

    def remove_temp(self, uri: str) -> None:
        Path(uri).unlink(missing_ok=True)


class _FsspecBackend:
    """Blobs on any fsspec filesystem; writes upload a temporary object, then move it."""

    def __init__(self, fs: Any, root: str, cache_dir: Path) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.cache_dir = cache_dir

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def uri(self, key: str) -> str:
        return str(self.fs.unstrip_protocol(self._path(key)))

    def exists(self, key: str) -> bool:
        return bool(self.fs.isfile(self._path(key)))

    def open(self, key: str) -> IO[bytes]:
        stream: IO[bytes] = self.fs.open(self._path(key), "rb")
        return stream

    def read_bytes(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def local_file(self, key: str, *, refresh: bool) -> Path:
        cached = self.cache_dir / key
        if cached.is_file() and not refresh:
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            self.fs.get_file(self._path(key), str(tmp))
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached

    def staging_dir(self) -> Path:
        return self.cache_dir / "staging"

    def commit(self, staged: Path, key: str) -> None:
        dest = self._path(key)
        parent = dest.rsplit("/", 1)[0]
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}"
        self.fs.makedirs(parent, exist_ok=True)
        self.fs.put_file(str(staged), tmp)
        try:
            self.fs.mv(tmp, dest)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def blob_keys(self) -> Iterator[str]:
        base = self._path("sha256")
        if not self.fs.isdir(base):
            return
        for path in sorted(self.fs.find(base)):
            parts = str(path).rstrip("/").split("/")
            name, shard = parts[-1], parts[-2]
            if _SHA256.fullmatch(name) and name[:2] == shard:
                yield f"sha256/{shard}/{name}"

    def stat(self, key: str) -> tuple[int, float | None]:
        info = self.fs.info(self._path(key))
        return int(info.get("size") or 0), _modified(info)

    def delete(self, key: str) -> None:
        self.fs.rm(self._path(key))

    def temps(self) -> Iterator[tuple[str, int, float | None]]:
        # Uploads in flight are renamed from beside their blob (see commit).
        base = self._path("sha256")
        if not self.fs.isdir(base):
            return
        for path, info in sorted(self.fs.find(base, detail=True).items()):
            if str(path).rstrip("/").rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                uri = str(self.fs.unstrip_protocol(path))
                yield uri, int(info.get("size") or 0), _modified(info)

    def remove_temp(self, uri: str) -> None:
        self.fs.rm(self.fs._strip_protocol(uri))


def _open_backend(root: str, cache_dir: Path) -> _Backend:
    """Choose the backend for ``root`` by its URL scheme: the one place that does."""
    scheme = _SCHEME.match(root)
    if scheme is None or (scheme[1].lower() in _LOCAL_SCHEMES and scheme[2] == "://"):
        path = root[scheme.end() :] if scheme else root
        return _LocalBackend(Path(path).expanduser().absolute())
    import fsspec

    protocol = scheme[1]
    try:
        fs, fs_path = fsspec.core.url_to_fs(root)
    except ValueError as exc:
        msg = (
            f"artifact store {root!r}: unknown URL scheme {protocol!r}; use a local path, "
            "file://, memory://, s3://, gs://, az:// or another fsspec protocol"
        )
        raise ConfigError(msg, field="artifacts") from exc
    except ImportError as exc:
        msg = f"artifact store {root!r} needs a package that is not installed: {exc}"
        raise ConfigError(msg, field="artifacts") from exc
    return _FsspecBackend(fs, str(fs_path), cache_dir)


@contextlib.contextmanager
def _open_source(data: bytes | Path | ByteSource) -> Iterator[ByteSource]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield io.BytesIO(data)
    elif isinstance(data, os.PathLike):
        path = Path(data)
        if path.is_dir():
            msg = f"put: {path} is a directory; archive it or put its files one by one"
            raise ConfigError(msg, field="data")
        if not path.exists():
            raise NotFoundError(f"put: no file at {path}", field="data")
        with open(path, "rb") as stream:
            yield stream
    elif callable(getattr(data, "read", None)):
        yield data
    else:
        msg = f"put: expected bytes, a pathlib.Path or a readable stream, got {type(data).__name__}"
        raise ConfigError(msg, field="data")


def _check_sha(sha256: str) -> str:
    sha = sha256.lower() if isinstance(sha256, str) else ""
    if not _SHA256.fullmatch(sha):
        raise ConfigError(f"{sha256!r} is not a sha256: expected 64 hex digits", field="sha256")
    return sha


def _key(sha: str) -> str:
    return f"sha256/{sha[:2]}/{sha}"


def _sha_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _hash_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


def _hash_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return _hash_stream(stream)


def _modified(info: dict[str, Any]) -> float | None:
    """An fsspec ``info()``'s last-modified time, whichever name the filesystem gives it."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; not every platform can open a directory, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
