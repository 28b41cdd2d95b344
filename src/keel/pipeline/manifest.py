"""The run manifest that lets the next ``keel run`` skip the normal path when nothing changed
(:mod:`keel.pipeline.noop` reads it).

:func:`begin` fingerprints the files before a run's steps decide their cache keys;
:func:`record` writes the manifest atomically after a manual ``keel run`` whose steps were all
cached, when nothing moved meanwhile and the project is one the fast path can check exactly
(a SQLite store, a local artifact store, the local executor, data files it can stat, no
champion comparison or feature views, whose inputs live in the database). Any other run
removes the manifest: the next run takes the normal path and writes a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import KeelError
from keel.pipeline.declare import StepRef, StepSpec
from keel.pipeline.noop import (
    FORMAT,
    PACKAGE_DIR,
    RACY_NS,
    Stamp,
    file_stamps,
    manifest_path,
    process_stamp,
)
from keel.project import Project

__all__ = ["Fingerprint", "begin", "forget", "record"]

_GLOB_CHARS = frozenset("*?[")
#: Steps whose cache key reads state the manifest cannot stat (an online store's views).
_UNCHECKABLE_STEPS = frozenset({"feature_views"})


@dataclass(frozen=True)
class Fingerprint:
    """The files (and process) a run started from.

    Attributes:
        began_ns: When it was taken (``time.time_ns``).
        process: :func:`keel.pipeline.noop.process_stamp`.
        files: The stats of every file a cache key can depend on.
        config: sha256 of keel.yaml and its overlays, by path.
        database: The SQLite database's path.
        artifacts: The local artifact store's root.
    """

    began_ns: int
    process: dict[str, Any]
    files: tuple[Stamp, ...]
    config: dict[str, str]
    database: str
    artifacts: Path


def begin(project: Project) -> Fingerprint | None:
    """Fingerprint the project before its steps run; None when the fast path could never
    check it (another database, a remote artifact store, data it cannot stat, too many
    files, a directory it cannot read). Never raises: the run does not depend on it."""
    try:
        return _begin(project)
    except (OSError, KeelError, ValueError):
        return None


def _begin(project: Project) -> Fingerprint | None:
    import sqlalchemy as sa

    began = time.time_ns()
    url = sa.make_url(project.db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.query:
        return None
    database = Path(url.database)
    store = project.artifacts
    blob_root = Path(store.root)
    if "://" in store.root or not database.is_absolute() or not blob_root.is_absolute():
        return None
    extra = _outside_files(project)
    if extra is None:
        return None
    skip = frozenset(
        [blob_root, *(Path(f"{database}{suffix}") for suffix in ("", "-wal", "-shm", "-journal"))]
    )
    files = file_stamps(project.root, extra, skip)
    if files is None:
        return None
    config = {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(project.root.glob("keel*.y*ml"))
        if path.is_file()
    }
    return Fingerprint(began, process_stamp(), tuple(files), config, str(database), blob_root)


def record(
    project: Project,
    before: Fingerprint | None,
    pipeline_run: str,
    results: Sequence[Any],
    *,
    steps: Sequence[StepSpec],
    eligible: bool,
) -> None:
    """Write the manifest of ``pipeline_run`` (its ``StepResult``s; ``steps``, the declared
    steps) when every step was cached, ``eligible`` holds and nothing moved since
    :func:`begin`; else remove it. Never raises for the manifest itself (a run's outcome does
    not depend on it).

    Of Keel's own files it keeps those the decision read: the modules this process loaded
    and the files of the steps declared by import path (hashed, not imported)."""
    try:
        manifest = _manifest(project, before, pipeline_run, results, steps) if eligible else None
        if manifest is None:
            forget(project.root)
            return
        _write_atomically(manifest_path(project.root), json.dumps(manifest).encode())
    except (OSError, KeelError, ValueError, ImportError):
        forget(project.root)


def forget(root: Path) -> None:
    """Remove the project's manifest (the next ``keel run`` takes the normal path)."""
    with contextlib.suppress(OSError):
        manifest_path(root).unlink(missing_ok=True)


def _manifest(
    project: Project,
    before: Fingerprint | None,
    pipeline_run: str,
    results: Sequence[Any],
    steps: Sequence[StepSpec],
) -> dict[str, Any] | None:
    from keel.store.database import HEAD_REVISION

    if before is None or not results:
        return None
    if any(r.status != "cached" or r.attempt != 1 or r.step in _UNCHECKABLE_STEPS for r in results):
        return None
    if project.config.evaluate.challenger_vs_champion is not None:
        return None  # the evaluate step's key holds the champion of the moment
    names = {r.step for r in results}
    if "evaluate" not in names:
        return None
    files = _read_by_the_decision(before.files, steps)
    if any(max(s[2], s[3]) > before.began_ns - RACY_NS for s in files):
        return None  # modified within an mtime tick of the run: a later change may not show
    after = file_stamps(project.root, _outside_files(project) or [], _skipped(before))
    if after is None or process_stamp() != before.process:
        return None
    if _read_by_the_decision(after, steps) != files:
        return None  # something changed while the run decided its hits
    meta = project.metadata
    recorded = []
    artifacts: dict[str, str] = {}
    for result in results:
        run = meta.get_run(result.run_id)
        reused = run.params.get("reused_run")
        if not reused:
            return None
        recorded.append(
            {"step": result.step, "run_id": result.run_id, "cache_key": run.cache_key,
             "reused_run": reused, "outputs": dict(result.outputs), "facts": result.facts,
             "warnings": list(result.warnings)}
        )  # fmt: skip
        for sha in result.outputs.values():
            artifacts[sha] = project.artifacts.uri(sha)
    return {
        "format": FORMAT,
        "root": str(project.root),
        "project": str(project.root),
        "model": project.config.model.name,
        "process": before.process,
        "files": [list(stamp) for stamp in files],
        "config": before.config,
        "database": before.database,
        "schema": HEAD_REVISION,
        "pipeline_run": pipeline_run,
        "steps": recorded,
        "artifacts": artifacts,
    }


def _read_by_the_decision(files: Sequence[Stamp], steps: Sequence[StepSpec]) -> list[Stamp]:
    """``files`` without those of Keel's package that no module loaded in this process and no
    step's source is: editing an unused module (or adding one) keeps the fast path."""
    package = str(PACKAGE_DIR) + os.sep
    read = {
        str(getattr(module, "__file__", ""))
        for name, module in list(sys.modules.items())
        if name == "keel" or name.startswith("keel.")
    }
    for spec in steps:
        if isinstance(spec.fn, StepRef):
            found = importlib.util.find_spec(spec.fn.module)
            read.add(str(found.origin if found is not None else ""))
    return [s for s in files if not s[0].startswith(package) or s[0] in read]


def _skipped(before: Fingerprint) -> frozenset[Path]:
    database = before.database
    suffixes = ("", "-wal", "-shm", "-journal")
    return frozenset([before.artifacts, *(Path(f"{database}{s}") for s in suffixes)])


def _outside_files(project: Project) -> list[Path] | None:
    """Files a cache key reads that live outside the project directory: raw data files and
    the modules of custom steps and features. None when one cannot be stat-checked (a URL,
    a database query, a glob outside the project, a module not imported)."""
    root = project.root
    config = project.config
    found: list[Path] = []
    for source in (config.data.train, config.data.test):
        if source is None:
            continue
        if source.format in ("sql", "duckdb") or source.path is None or "://" in source.path:
            return None
        path = Path(source.path).expanduser()
        path = (path if path.is_absolute() else root / path).absolute()
        if path.resolve().is_relative_to(root) and ".." not in Path(source.path).parts:
            continue
        if not _GLOB_CHARS.isdisjoint(source.path):
            return None
        found.append(path)
    functions = [s.function for s in config.pipeline.steps]
    functions += [c.function for c in config.features.custom]
    for function in functions:
        module = sys.modules.get(function.partition(":")[0])
        file = getattr(module, "__file__", None)
        if file is None:
            return None
        if not Path(file).resolve().is_relative_to(root):
            found.append(Path(file).absolute())
    return found


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file unique to this writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
