"""A monitoring check's reads of a SQLite metadata database through the standard library.

``keel monitor`` reads three things from the metadata database: the model version a reference
resolves to, whether the model has live labels, and the servers' traffic counts. Through
:mod:`keel.store` they cost loading SQLAlchemy (~0.2 s, a fifth of the whole command on a
compacted log). :func:`open_quick` opens the project's default SQLite file read-only with
:mod:`sqlite3` instead, when nothing is uncertain:

- the database is the default ``.keel/keel.db`` (no ``KEEL_DB_URL`` or ``store.db_url``: other
  URLs, PostgreSQL included, take the normal path) and exists;
- it is at the schema revision this Keel writes (the newest migration beside
  :mod:`keel.store`; an older database is migrated by the normal path), and that revision is
  one these queries were checked against (:data:`KNOWN_REVISIONS`: a new migration takes the
  normal path until it is added there);
- no run or pipeline run is in progress (opening the store the normal way marks the dead
  ones failed; with none in progress there is nothing to mark).

Each read answers what the SQLAlchemy path answers for a model version that resolves; anything
else (an unknown model, version or alias, an archived version) returns None so that the caller
asks the normal path, which raises its usual error. Nothing here writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import BackendError

if TYPE_CHECKING:
    from keel.project import Project

__all__ = ["KNOWN_REVISIONS", "QuickReads", "Resolved", "head_revision", "open_quick"]

#: The schema revisions whose tables these queries were checked against (0011 added
#: ``deployment_stats.rejected``, 0012 the run owners' boot ids and 0013 made token names
#: unique among live tokens only, none of which monitoring reads).
KNOWN_REVISIONS = frozenset({"0010", "0011", "0012", "0013"})
_MIGRATIONS = Path(__file__).parent.parent / "store" / "migrations" / "versions"
_DEFAULT_ALIAS = "production"  # keel.store.registry_tables.DEFAULT_ALIAS
_LATEST = "latest"
_ACTIVE = ("running", "cancel_requested")  # keel.store.pipeline_runs.ACTIVE
_BUSY_TIMEOUT_S = 30.0  # as keel.store.database.SQLITE_BUSY_TIMEOUT_MS
_MAX_KEYS = 30_000  # below SQLite's bound-parameter limit


@dataclass(frozen=True)
class Resolved:
    """The model version a reference resolved to (what a monitoring check needs of it)."""

    name: str
    version: int
    package_sha256: str


class QuickReads:
    """Read-only queries on an open SQLite metadata database (see the module's notes)."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, default_alias: str = _DEFAULT_ALIAS
    ) -> None:
        self._conn = conn
        self._path = path
        self._default_alias = default_alias  # a bare name: the project's registry.alias

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def resolve(self, ref: str) -> Resolved | None:
        """``name``, ``name@3``, ``name@latest`` or ``name@alias`` as
        :func:`keel.store.registry_tables.resolve` resolves it; None for anything it would
        refuse (the caller then asks it, for its error message)."""
        name, sep, selector = ref.partition("@")
        if not name or (sep and not selector):
            return None
        if self._one("SELECT 1 FROM models WHERE name = ?", name) is None:
            return None
        if selector.isdigit():
            try:
                number = int(selector)
            except ValueError:
                return None
            row = self._row(name, number)
            return None if row is None or row[2] is not None else Resolved(name, *row[:2])
        version: Any = None
        if sep and selector != _LATEST:
            version = self._alias(name, selector)
            if version is None:
                return None
        elif not sep:
            version = self._alias(name, self._default_alias)
        if version is None:
            version = self._one(
                "SELECT max(version) FROM model_versions WHERE name = ? AND archived_at IS NULL",
                name,
            )
            if version is None:
                return None
        row = self._row(name, int(version))
        return None if row is None else Resolved(name, *row[:2])

    def count_live(self, model: str) -> int:
        """How many live labels ``model`` has (as :func:`keel.store.feedback_store.count_live`)."""
        query = "SELECT count(*) FROM feedback WHERE model_name = ? AND status = 'accepted'"
        return int(self._one(query, model) or 0)

    def traffic_rows(
        self, name: str, since: datetime | None, until: datetime | None
    ) -> list[dict[str, Any]]:
        """The traffic rows of model ``name`` (outside and under its deployments) with
        ``since < bucket <= until``, oldest first: what
        :func:`keel.store.deployment_store.stats_of` returns (``bucket`` UTC-aware, ``latency``
        decoded)."""
        keys = [_model_stats_key(name)]
        keys += [
            row[0]
            for row in self._execute(
                "SELECT id FROM deployments WHERE model_name = ? ORDER BY created_at DESC "
                "LIMIT 100000",
                (name,),
            )
        ]
        found = []
        for start in range(0, len(keys), _MAX_KEYS):  # within SQLite's bound-parameter limit
            chunk = keys[start : start + _MAX_KEYS]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT * FROM deployment_stats WHERE deployment_id IN ({marks})"
            params: list[Any] = list(chunk)
            if since is not None:
                query += " AND bucket > ?"
                params.append(_stored_time(since))
            if until is not None:
                query += " AND bucket <= ?"
                params.append(_stored_time(until))
            cursor = self._execute(query + " ORDER BY bucket", params)
            columns = [d[0] for d in cursor.description]
            for values in cursor:
                row = dict(zip(columns, values, strict=True))
                row["bucket"] = _read_time(row["bucket"])
                row["latency"] = None if row["latency"] is None else _json(row["latency"])
                found.append(row)
        if len(keys) > _MAX_KEYS:
            found.sort(key=lambda row: row["bucket"])
        return found

    def _execute(self, query: str, params: Any) -> sqlite3.Cursor:
        """Run a query; a database failure is a BackendError, as the store's reads raise."""
        try:
            return self._conn.execute(query, params)
        except sqlite3.Error as exc:
            msg = (
                f"metadata database {self._path} failed: {exc}. Check that the database is "
                "readable, then retry."
            )
            raise BackendError(msg, details={"url": f"sqlite:///{self._path}"}) from exc

    def _one(self, query: str, *params: Any) -> Any:
        row = self._execute(query, params).fetchone()
        return None if row is None else row[0]

    def _alias(self, name: str, alias: str) -> int | None:
        version = self._one("SELECT version FROM aliases WHERE name = ? AND alias = ?", name, alias)
        return None if version is None else int(version)

    def _row(self, name: str, version: int) -> tuple[int, str, Any] | None:
        row = self._execute(
            "SELECT version, package_sha256, archived_at FROM model_versions "
            "WHERE name = ? AND version = ?",
            (name, version),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), row[2])


def open_quick(project: Project) -> QuickReads | None:
    """Read-only reads of ``project``'s metadata database through :mod:`sqlite3`, or None when
    the normal path must run (another database URL, no database yet, another schema revision,
    a run in progress, or any error opening or checking it)."""
    from keel.project import STATE_DIR
    from keel.settings import load_settings

    if load_settings().db_url or project.config.store.db_url:
        return None
    path = Path(project.root) / STATE_DIR / "keel.db"
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return None
    try:
        revision = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        active = conn.execute(
            "SELECT (SELECT count(*) FROM runs WHERE status = 'running') + (SELECT count(*) "
            "FROM pipeline_runs WHERE status IN (?, ?))",
            _ACTIVE,
        ).fetchone()[0]
    except sqlite3.Error:
        conn.close()
        return None
    if revision != [head_revision()] or revision[0] not in KNOWN_REVISIONS or active:
        conn.close()
        return None
    return QuickReads(conn, path, project.config.registry.alias)


def head_revision() -> str | None:
    """The newest migration's revision (``NNNN_name.py`` names revision ``NNNN``): what
    ``keel.store.database.HEAD_REVISION`` says, without importing SQLAlchemy."""
    names = [p.name[:4] for p in _MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.py")]
    return max(names, default=None)


def _model_stats_key(name: str) -> str:
    """As :func:`keel.store.deployment_store.model_stats_key`."""
    return "m-" + hashlib.blake2b(name.encode(), digest_size=15).hexdigest()


def _stored_time(moment: datetime) -> str:
    """A timestamp as SQLAlchemy stores it in SQLite (naive UTC text, microseconds)."""
    naive = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f")


def _read_time(text: Any) -> datetime:
    moment = datetime.fromisoformat(str(text))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json(text: str | bytes) -> Any:
    """As the store's JSON columns decode (orjson, json for NaN and Infinity)."""
    import orjson

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
