"""Opening the metadata database: URL checks, engine setup, SQLite pragmas, migrations.

Every backend-specific decision about the database lives here, so ``metadata.py`` only writes
portable SQLAlchemy Core.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import StaticPool

from keel.errors import BackendError, ConfigError

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "Database", "anchor_sqlite_url"]

HEAD_REVISION = "0013"
"""The newest migration; opening skips Alembic entirely when the database is already here."""

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 65_536
_WRITE = "keel_write"
# Any constant works; it only has to be the same in every process that migrates.
_PG_LOCK = 0x6B65656C
_URL_EXAMPLES = "sqlite:///.keel/keel.db or postgresql+psycopg://user:password@host:5432/keel"


class Database:
    """An engine on a migrated metadata database, with read and write transactions.

    Args:
        url: A SQLAlchemy URL. ``postgresql://`` without a driver means psycopg 3.

    Raises:
        ConfigError: The URL is malformed, names an unknown dialect or a driver not installed.
        BackendError: The database cannot be reached or migrated.
    """

    def __init__(self, url: str) -> None:
        self.url = _parse_url(url)
        self.display_url = self.url.render_as_string(hide_password=True)
        self.engine = _create_engine(self.url, self.display_url)
        # Same pool and events, but transactions on it take SQLite's write lock up front.
        self._writer = self.engine.execution_options(**{_WRITE: True})
        try:
            self._migrate()
        except BaseException:
            self.engine.dispose()
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection for queries; its implicit transaction is rolled back on exit."""
        with self._translate_errors(), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        with self._translate_errors(), self._writer.begin() as conn:
            yield conn

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.OperationalError as exc:
            msg = (
                f"metadata database {self.display_url} failed: {_first_line(exc.orig)}. "
                "Check that the database is running and reachable and that Keel may write "
                "to it, then retry."
            )
            raise BackendError(msg, details={"url": self.display_url}) from exc

    def _migrate(self) -> None:
        with self._translate_errors():
            current = _current_revision(self.engine)
            if current == HEAD_REVISION:
                return
            # Imported here: a database already at head never pays for importing Alembic.
            from alembic import command
            from alembic.config import Config
            from alembic.util import CommandError

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.set_main_option("path_separator", "os")
            with self._writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Two processes opening a fresh database at once must not both create it.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
                cfg.attributes["connection"] = conn
                try:
                    command.upgrade(cfg, "head")
                except CommandError as exc:
                    msg = (
                        f"metadata database {self.display_url} is at schema revision "
                        f"{current!r}, which this Keel does not know (its newest is "
                        f"{HEAD_REVISION!r}): {exc}. Upgrade Keel, or use another database."
                    )
                    raise ConfigError(msg, field="db_url") from exc


def anchor_sqlite_url(url: str, root: Path) -> str:
    """A SQLite URL whose relative file path is taken from ``root`` (the project directory), not
    from wherever the command runs; ``~`` is expanded. Other URLs (PostgreSQL, absolute or
    in-memory SQLite, a malformed URL the store will report) come back unchanged.

    Example:
        >>> anchor_sqlite_url("sqlite:///.keel/keel.db", Path("/srv/proj"))
        'sqlite:////srv/proj/.keel/keel.db'
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return url
    if parsed.get_backend_name() != "sqlite" or _is_sqlite_memory(parsed):
        return url
    assert parsed.database is not None  # not in memory
    path = Path(parsed.database).expanduser()
    if path.is_absolute() and parsed.database == str(path):
        return url
    anchored = path if path.is_absolute() else Path(root).expanduser().absolute() / path
    return parsed.set(database=str(anchored)).render_as_string(hide_password=False)


def _current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
        revisions = list(rows)
    return revisions[0] if len(revisions) == 1 else None


def _parse_url(url: str) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        msg = (
            f"metadata database URL {url!r} is not a SQLAlchemy URL; expected e.g. {_URL_EXAMPLES}"
        )
        raise ConfigError(msg, field="db_url") from exc
    if parsed.drivername == "postgresql":
        # Keel's postgres extra installs psycopg 3, not SQLAlchemy's default psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _json_loads(text: str | bytes) -> Any:
    """JSON columns decoded by orjson (several times faster than json: listing 100 runs decodes
    200 documents); values json.dumps wrote that orjson refuses (NaN, Infinity) still load."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _create_engine(url: sa.URL, display_url: str) -> sa.Engine:
    kwargs: dict[str, Any] = {"json_deserializer": _json_loads}
    if url.get_backend_name() == "sqlite":
        if _is_sqlite_memory(url):
            # One shared connection, or every pooled connection would see its own empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        elif url.database:
            _make_parent_dir(Path(url.database), display_url)
    try:
        engine = sa.create_engine(url, **kwargs)
    except sa.exc.NoSuchModuleError as exc:
        msg = (
            f"metadata database URL {display_url!r} names an unknown database or driver "
            f"{url.drivername!r}; expected e.g. {_URL_EXAMPLES}"
        )
        raise ConfigError(msg, field="db_url") from exc
    except ImportError as exc:
        msg = (
            f"the driver for metadata database {display_url!r} is not installed ({exc}). "
            "For PostgreSQL run: pip install 'keel[postgres]'"
        )
        raise ConfigError(msg, field="db_url") from exc
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine)
    return engine


def _is_sqlite_memory(url: sa.URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _make_parent_dir(path: Path, display_url: str) -> None:
    try:
        path.expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = (
            f"cannot create the directory for metadata database {display_url}: {exc}. "
            "Check the path and its permissions."
        )
        raise BackendError(msg) from exc


def _install_sqlite_hooks(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Keel emits BEGIN itself (below), the pattern SQLAlchemy documents for pysqlite.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # 64 MiB of page cache (the default is 2 MiB): listing runs from a store of
            # 100,000 re-reads the same index pages, and the OS round trip halves its speed.
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY
        # when another writer got there first; IMMEDIATE waits for the lock instead.
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enable_wal(cursor: Any) -> None:
    """Put the database in WAL mode (a setting kept in the file), retrying while it is locked.

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once, without
    its busy handler, while another connection is switching the same fresh file: four threads or
    processes opening a new store together failed here now and then.
    """
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else "unknown error"
    return text.splitlines()[0] if text else type(exc).__name__
