"""The no-op rerun: ``keel run`` with nothing changed, decided and recorded without loading
SQLAlchemy, pydantic or Typer.

A ``keel run`` whose steps were all cached leaves a manifest, ``.keel/cache/last-run.json``
(written by :mod:`keel.pipeline.manifest`): the stat (size, mtime) of every file that can change
a step's cache key (the project's files, keel.yaml and its overlays, the raw data, the project's
Python code, Keel's own sources, the directories on ``sys.path`` where packages are installed),
the ``KEEL_*`` variables, the Python executable, the SQLite database and its schema revision,
the step runs of that pipeline run and the run each of them reused, and every output's sha256.

The next ``keel run`` (no option but ``--format``) calls :func:`attempt` before building
the command line. It takes the fast path only when every stat still matches, every output
still hashes to its sha256, no run is in progress (nor a dead one to reap), the database is at
the recorded schema revision and, per step, the run the cache would reuse is still the
recorded one. It then records the pipeline run as the normal path does for an all-cached run:
one ``pipeline_runs`` row (trigger ``manual``) and, per step, a ``cached`` run with its
lineage and tags, copied from the manifest's pipeline run with new ids, times and owner, in
one SQLite transaction. Anything else, or anything uncertain, falls back to the normal path
(:class:`Outcome` says why): a wrong hit is worse than a slow one.

This module reads the standard library only (and psutil for the owner's start time, as
:mod:`keel.store.leases` does).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PACKAGE_DIR",
    "Outcome",
    "attempt",
    "file_stamps",
    "manifest_path",
    "process_stamp",
]

#: The manifest beside the project's state, relative to the project directory.
MANIFEST = Path(".keel") / "cache" / "last-run.json"
#: Keel's package directory (its sources take part in every cache decision).
PACKAGE_DIR = Path(__file__).parent.parent
#: Bumped when the manifest's layout changes: an older one is ignored.
FORMAT = 1
#: A file modified this close before the run began may have changed within one mtime tick.
RACY_NS = 2_000_000_000
#: Directories of a project never fingerprinted (state, caches, other tools' trees).
SKIPPED_DIRS = frozenset(
    {".keel", ".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules",
     ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints"}
)  # fmt: skip
#: A project with more files than this is not fingerprinted (no fast path).
MAX_FILES = 5_000
#: The ``keel run`` command lines the fast path honours exactly, and the output each asks for.
FAST_ARGS: dict[tuple[str, ...], str] = {
    ("run",): "text",
    **{("run", flag, kind): kind for flag in ("--format", "-f") for kind in ("text", "json")},
}
#: Per-run tables whose rows a cached run gets (copied with the new run id).
RUN_TABLES = ("lineage", "run_params", "run_metrics", "run_metric_history", "run_tags")
_BUSY_TIMEOUT_MS = 30_000  # as keel.store.database.SQLITE_BUSY_TIMEOUT_MS
_ACTIVE = ("running", "cancel_requested")
_CHUNK = 1 << 20

Stamp = tuple[str, int, int, int, int]
"""A file's or directory's path, size, mtime and ctime in nanoseconds and inode: a file
replaced by another of the same size and mtime (``cp -p``, ``rsync -t``) still differs."""


@dataclass(frozen=True)
class Outcome:
    """What :func:`attempt` decided.

    Attributes:
        summary: The run's summary (the shape ``keel.api.run`` returns) when the fast path
            recorded it; None when the normal path must run.
        fallback: Why the fast path was not taken ("" when it was).
        format: How ``keel run`` was asked to print it: ``text`` or ``json``.
    """

    summary: dict[str, Any] | None
    fallback: str = ""
    format: str = "text"


class _Miss(Exception):
    """The fast path does not apply; the message says why."""


def manifest_path(root: Path) -> Path:
    """Where the manifest of the project at ``root`` lives."""
    return root / MANIFEST


def process_stamp() -> dict[str, Any]:
    """What this interpreter contributes to a cache decision: Keel's version, the Python
    executable and version, ``sys.path`` and a digest of Keel's settings (``KEEL_*``)."""
    from keel.settings import load_settings
    from keel.version import __version__

    return {
        "keel": __version__,
        "executable": sys.executable,
        "python": sys.version,
        "sys_path": list(sys.path),
        # a digest, not the values: the settings include secrets (signing key, serve token)
        "env": hashlib.sha256(
            json.dumps(asdict(load_settings()), sort_keys=True).encode()
        ).hexdigest(),
    }


def file_stamps(root: Path, extra: list[Path], skip: frozenset[Path]) -> list[Stamp] | None:
    """The stat of every file and directory under ``root`` (except :data:`SKIPPED_DIRS` and
    ``skip``), of Keel's package, of the ``sys.path`` directories and of ``extra`` (files
    outside the project, e.g. raw data). None when there are more than :data:`MAX_FILES`.
    A missing path is stamped with -1s."""
    found: list[Stamp] = []
    for tree in (root, PACKAGE_DIR):
        for path in _walk(tree, skip):
            found.append(_stamp(path))
            if len(found) > MAX_FILES:
                return None
    for entry in sys.path:
        found.append(_stamp(Path(entry or ".").absolute()))
    for path in extra:
        found += [_stamp(path), _stamp(path.parent)]
    return found


def attempt(args: list[str], cwd: Path | None = None) -> Outcome:
    """Take the fast path for ``keel run`` with ``args`` from ``cwd`` if it applies.

    Returns:
        The recorded run's summary, or why the normal path must run (it then records the
        run as usual; nothing was written here).
    """
    output = FAST_ARGS.get(tuple(args))
    if output is None:
        return Outcome(None, "only 'keel run' without options (but --format) takes the fast path")
    try:
        return Outcome(_fast_run(Path.cwd() if cwd is None else cwd), format=output)
    except _Miss as miss:
        return Outcome(None, str(miss))
    except (OSError, ValueError, KeyError, TypeError, IndexError, sqlite3.Error) as exc:
        return Outcome(None, f"the manifest could not be checked ({type(exc).__name__}: {exc})")


def _fast_run(cwd: Path) -> dict[str, Any]:
    root = _find_root(cwd)
    try:
        manifest = json.loads(manifest_path(root).read_bytes())
    except FileNotFoundError as exc:
        raise _Miss("no manifest: the last run was not an all-cached keel run") from exc
    if manifest.get("format") != FORMAT or manifest.get("root") != str(root):
        raise _Miss("the manifest is of another format or project")
    now = process_stamp()
    for name, value in manifest["process"].items():
        if now.get(name) != value:
            raise _Miss(f"the process's {name} changed since the last run")
    for stamp in manifest["files"]:
        path = stamp[0]
        if list(_stamp(Path(path))) != stamp:
            raise _Miss(f"{path} changed since the last run")
    for path, digest in manifest["config"].items():
        if hashlib.sha256(Path(path).read_bytes()).hexdigest() != digest:
            raise _Miss(f"{path} changed since the last run")
    verified: dict[str, float] = {}  # each step's outputs re-hashed, as the normal path does
    for step in manifest["steps"]:
        began = time.perf_counter()
        for sha in step["outputs"].values():
            if _sha256_file(Path(manifest["artifacts"][sha])) != sha:
                raise _Miss(f"artifact {sha[:12]} is missing or corrupt in the artifact store")
        verified[step["step"]] = time.perf_counter() - began
    from keel.store.environment import capture_environment, environment_id

    env_id = environment_id(capture_environment(root))
    with _connect(manifest["database"]) as conn:
        return _record(conn, manifest, env_id, verified)


def _find_root(cwd: Path) -> Path:
    """As :func:`keel.project.find_project` finds it."""
    here = cwd.resolve()
    for candidate in (here, *here.parents):
        if (candidate / "keel.yaml").exists():
            return candidate
    raise _Miss("no keel.yaml here or above")


class _Connection:
    """A sqlite3 connection set up as Keel's engine sets one up (busy timeout, WAL,
    synchronous NORMAL, foreign keys), with transactions begun explicitly."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise _Miss(f"the metadata database {path} is gone")
        self.conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        for pragma in (
            f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
        ):
            self.conn.execute(pragma)
        mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            self.conn.close()
            raise _Miss("the metadata database is not in WAL mode")

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc_info: object) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.conn.close()


def _connect(path: str) -> _Connection:
    return _Connection(path)


def _record(
    conn: sqlite3.Connection,
    manifest: Mapping[str, Any],
    env_id: str,
    verified: Mapping[str, float],
) -> dict[str, Any]:
    """Check the store and record the pipeline run in one write transaction (``verified``:
    the seconds each step's outputs took to re-hash, part of its time)."""
    revision = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    if revision != [manifest["schema"]]:
        raise _Miss(f"the database's schema revision {revision} is not {manifest['schema']!r}")
    conn.execute("BEGIN IMMEDIATE")  # as Keel's writes: wait for the write lock, then decide
    active = conn.execute(
        "SELECT (SELECT count(*) FROM runs WHERE status = 'running') + (SELECT count(*) "
        "FROM pipeline_runs WHERE status IN (?, ?))",
        _ACTIVE,
    ).fetchone()[0]
    if active:
        raise _Miss("a run is in progress (or a dead one awaits reaping)")
    template = manifest["pipeline_run"]
    row = conn.execute("SELECT * FROM pipeline_runs WHERE id = ?", (template,)).fetchone()
    if row is None or row["status"] != "succeeded":
        raise _Miss(f"pipeline run {template[:12]} of the manifest is gone")
    owner = _owner()
    host, pid = owner[0], owner[1]
    pipeline_run = uuid.uuid4().hex
    outcomes: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    run_started = _now()
    for step in manifest["steps"]:
        step_started = time.perf_counter()
        reused = _cached_run(conn, step["cache_key"])
        if reused != step["reused_run"]:
            raise _Miss(f"step {step['step']}: the cache would reuse another run now")
        source = conn.execute("SELECT * FROM runs WHERE id = ?", (step["run_id"],)).fetchone()
        if source is None or source["status"] != "cached" or source["environment_id"] != env_id:
            raise _Miss(f"step {step['step']}: its run in the manifest differs")
        run_id = uuid.uuid4().hex
        _copy_run(conn, source, run_id, pipeline_run, owner)
        seconds = time.perf_counter() - step_started + verified[step["step"]]
        outcomes.append(
            {"attempt": 1, "step": step["step"], "run_id": run_id, "status": "cached",
             "cache": "hit", "seconds": round(seconds, 4), "cpu_seconds": None,
             "peak_rss_mb": None}
        )  # fmt: skip
        results.append(
            {"step": step["step"], "status": "cached", "seconds": round(seconds, 4),
             "run_id": run_id, "outputs": step["outputs"], "facts": step["facts"],
             "warnings": step["warnings"], "explain": "", "attempt": 1}
        )  # fmt: skip
    conn.execute(
        "INSERT INTO pipeline_runs (id, config_hash, \"trigger\", reason, status, started_at, "
        "ended_at, steps, error, owner_host, owner_pid, owner_started_at, owner_boot_id) "
        "VALUES (?, ?, 'manual', NULL, 'succeeded', ?, ?, ?, NULL, ?, ?, ?, ?)",
        (pipeline_run, row["config_hash"], _sql_time(run_started), _sql_time(_now()),
         json.dumps(outcomes), host[:255], pid, owner[2], owner[3]),
    )  # fmt: skip
    summary = _summary(manifest, pipeline_run, results)  # nothing can fail after the commit
    conn.execute("COMMIT")
    return summary


def _cached_run(conn: sqlite3.Connection, cache_key: str) -> str | None:
    """As :meth:`keel.store.metadata.MetadataStore.find_cached_run` finds it: the newest
    succeeded run with the key whose outputs are all recorded artifacts."""
    found = conn.execute(
        "SELECT runs.id FROM runs WHERE runs.cache_key = ? AND runs.status = 'succeeded' AND "
        "NOT (EXISTS (SELECT lineage.sha256 FROM lineage LEFT OUTER JOIN artifacts ON "
        "artifacts.sha256 = lineage.sha256 WHERE lineage.run_id = runs.id AND "
        "lineage.direction = 'output' AND artifacts.sha256 IS NULL)) "
        "ORDER BY runs.started_at DESC LIMIT 1",
        (cache_key,),
    ).fetchone()
    return None if found is None else str(found[0])


def _copy_run(
    conn: sqlite3.Connection,
    source: sqlite3.Row,
    run_id: str,
    pipeline_run: str,
    owner: tuple[str, int, float | None, str | None],
) -> None:
    """Insert a copy of the cached run ``source`` as ``run_id`` of ``pipeline_run``: new times
    and owner, the same params, lineage and tags but the pipeline run's."""
    began = _now()
    summary = json.loads(source["summary"])
    summary["tags"]["pipeline_run"] = pipeline_run
    ended = _now()
    values = dict(source)
    values.update(
        id=run_id,
        started_at=_sql_time(began),
        ended_at=_sql_time(ended),
        duration_seconds=max((ended - began).total_seconds(), 0.0),
        summary=json.dumps(summary),
        owner_host=owner[0][:255],
        owner_pid=owner[1],
        owner_started_at=owner[2],
        owner_boot_id=owner[3],
        lease_expires_at=None,
    )
    _insert(conn, "runs", values)
    for table in RUN_TABLES:
        rows = conn.execute(f"SELECT * FROM {table} WHERE run_id = ?", (source["id"],)).fetchall()
        for found in rows:
            copied = dict(found) | {"run_id": run_id}
            if table == "run_tags" and copied["key"] == "pipeline_run":
                copied["value"] = pipeline_run
            _insert(conn, table, copied)


def _insert(conn: sqlite3.Connection, table: str, values: Mapping[str, Any]) -> None:
    names = ", ".join(f'"{c}"' for c in values)
    marks = ", ".join("?" * len(values))
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(values.values()))


def _summary(
    manifest: Mapping[str, Any], pipeline_run: str, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    """The summary ``keel.api.run`` returns for the same run."""
    register: dict[str, Any] = next((s["facts"] for s in steps if s["step"] == "register"), {})
    evaluate = next(s["facts"] for s in steps if s["step"] == "evaluate")
    return {
        "project": manifest["project"],
        "pipeline_run": pipeline_run,
        "trigger": "manual",
        "resumes": None,
        "steps": steps,
        "model": {
            "name": manifest["model"],
            "version": register.get("version"),
            "promoted": register.get("promoted"),
            "alias": register.get("alias"),
            "pending_request": register.get("pending_request"),
            "gates": register.get("gates", []),
            "metrics": evaluate.get("metrics", {}),
        },
    }


def _owner() -> tuple[str, int, float | None, str | None]:
    """This process as :meth:`keel.store.leases.Owner.current` records it."""
    from keel.store.processes import identity, this_host

    pid = os.getpid()
    started_at, boot_id = identity(pid)
    return this_host(), pid, started_at, boot_id


def _now() -> datetime:
    return datetime.now(UTC)


def _sql_time(value: datetime) -> str:
    """A UTC time as Keel's ``UtcDateTime`` stores it in SQLite (naive, microseconds)."""
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _walk(tree: Path, skip: frozenset[Path]) -> Iterator[Path]:
    """Every file and directory under ``tree``, sorted, without the skipped ones."""
    pending = [tree]
    while pending:
        current = pending.pop()
        yield current
        with os.scandir(current) as entries:
            children = sorted(entries, key=lambda e: e.name)
        for entry in children:
            path = Path(entry.path)
            if entry.name in SKIPPED_DIRS or path in skip:
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            else:
                yield path


def _stamp(path: Path) -> Stamp:
    try:
        found = path.stat()
    except OSError:
        return str(path), -1, -1, -1, -1
    return str(path), found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return ""
    return digest.hexdigest()
