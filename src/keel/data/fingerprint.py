"""Which files a source names, and a fingerprint of their content, without reading them as data.

Every cache key of an ingest step (and every ``on: new_data`` trigger) asks this, so it imports
neither DuckDB nor Arrow: a cached ``keel run`` should not pay for the engines it does not use.
"""

from __future__ import annotations

import glob
import hashlib
import uuid
from pathlib import Path

from keel.config import SourceConfig
from keel.errors import ConfigError

__all__ = ["resolve_files", "source_fingerprint", "source_identity"]

_GLOB_CHARS = frozenset("*?[")


def resolve_files(source: SourceConfig, root: Path) -> list[Path]:
    """The files a path or glob names, relative to ``root`` unless absolute, sorted.

    Raises:
        ConfigError: The source has no path, or nothing matches it.
    """
    if source.path is None:
        raise ConfigError(f"a {source.format} source has no 'path'.", field="path")
    path = Path(source.path).expanduser()
    path = path if path.is_absolute() else root / path
    if _GLOB_CHARS.isdisjoint(source.path):
        if not path.exists():
            msg = f"{path}: data file not found (data source path '{source.path}')."
            raise ConfigError(msg, field="path")
        return [path]
    files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        msg = f"{path}: no file matches the data source glob '{source.path}'. Check the pattern."
        raise ConfigError(msg, field="path")
    return files


def source_identity(source: SourceConfig) -> str:
    """What names a source across ingestions: its path (or glob) as declared, or for ``sql``
    and ``duckdb`` sources a digest of URL and query (the password never appears)."""
    if source.format in ("sql", "duckdb"):
        from keel.data.sqlsource import safe_url

        url = safe_url(source.url) if source.url else "duckdb"
        digest = hashlib.sha256(f"{source.url}\n{source.query}".encode()).hexdigest()[:16]
        return f"{source.format}:{url}#{digest}"
    assert source.path is not None  # checked by SourceConfig
    return source.path


def source_fingerprint(source: SourceConfig, root: Path) -> str:
    """A sha256 that changes when the source's data may have changed, for cache keys.

    Files (and every file a glob matches) are hashed by content, with their names. ``sql`` and
    ``duckdb`` sources cannot be fingerprinted without reading them, so they get a fresh value
    every call: the ingest step always runs (incremental ingestion keeps that cheap).

    Raises:
        ConfigError: A file is missing or a glob matches nothing.
    """
    digest = hashlib.sha256(source_identity(source).encode())
    if source.format in ("sql", "duckdb"):
        digest.update(uuid.uuid4().bytes)
        return digest.hexdigest()
    for file in resolve_files(source, root):
        digest.update(f"\n{file.name}\n".encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
