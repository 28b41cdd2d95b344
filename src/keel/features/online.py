"""Online feature stores: the latest value of every feature per entity, for serving.

Backends follow one narrow protocol (:class:`OnlineStore`: ``write`` a view's values, ``read``
some entities' features) and are chosen by URL scheme from :data:`BACKENDS`:

* ``sqlite:///path`` (the default, ``<project>/.keel/online.db``): one row per (view, entity)
  holding the view's values as one orjson blob, in a ``WITHOUT ROWID`` table keyed by
  ``(view, entity)``, WAL journal. A lookup is one primary-key probe and one ``orjson.loads``.
* ``redis://host:port/db``: a hash per entity (``keel:<namespace>:<view>:<entity>``, a field per
  feature, orjson values); a lookup of several entities is one pipelined round trip.

Entity keys are encoded canonically (``orjson`` of the key value, or of the list of values for
composite keys) after casting request values to the key's type recorded at materialization, so
``{"user_id": "7"}`` finds the entity stored as ``7``.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import pyarrow as pa

from keel.errors import BackendError, ConfigError, DataValidationError, NotFoundError
from keel.plugins import ONLINE_STORES

if TYPE_CHECKING:
    from keel.features.views import FeatureView
    from keel.project import Project

__all__ = [
    "BACKENDS",
    "OnlineStore",
    "RedisOnlineStore",
    "SQLiteOnlineStore",
    "materialize_view",
    "open_online_store",
]

#: URL scheme -> "module:Class" of the built-in backends (imported on first use); plug-ins
#: add schemes through the ``keel.online_stores`` entry-point group (see :mod:`keel.plugins`).
BACKENDS: Mapping[str, str] = ONLINE_STORES.builtins

_BATCH = 5_000
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC


class OnlineStore(Protocol):
    """What an online store does: replace a view's rows, read some entities' features."""

    def write(
        self,
        view: str,
        meta: dict[str, Any],
        entities: Sequence[str],
        values: Sequence[dict[str, Any]],
    ) -> None:
        """Replace every row of ``view``: encoded entity keys and their feature values."""
        ...

    def meta(self, view: str) -> dict[str, Any] | None:
        """What ``write`` recorded about the view (keys and their types, features, time)."""
        ...

    def read_encoded(
        self, view: str, entities: Sequence[str], features: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        """Feature values per encoded entity key; None for an unknown entity."""
        ...

    def read(
        self,
        view: str,
        keys: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
    ) -> tuple[list[list[Any]], list[dict[str, Any] | None]]:
        """Entity rows (dicts holding ``keys``) -> their key values cast to the stored types,
        and their feature values (None for an unknown entity)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def open_online_store(url: str | None, project: Project | None) -> OnlineStore:
    """The backend for ``url`` (default ``$KEEL_ONLINE_STORE``, else the project's SQLite file):
    a built-in scheme or one an installed plug-in registers.

    Raises:
        ConfigError: The scheme is unknown (the message lists the known ones), or no URL and no
            project were given.
    """
    from keel.settings import load_settings

    url = url or load_settings().online_store
    if url is None:
        if project is None:
            raise ConfigError("no online store: pass online_url= or set KEEL_ONLINE_STORE.")
        url = f"sqlite:///{project.state_dir / 'online.db'}"
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ONLINE_STORES:
        known = ", ".join(f"{s}://" for s in ONLINE_STORES.names())
        msg = (
            f"KEEL_ONLINE_STORE={url!r}: unknown scheme '{scheme}'. Known: {known}. A plug-in "
            f"adds a scheme through the '{ONLINE_STORES.group}' entry-point group."
        )
        raise ConfigError(msg, field="KEEL_ONLINE_STORE")
    backend: type[_Base] = ONLINE_STORES.load(scheme)
    namespace = project.config.project if project is not None else "default"
    return backend(url, namespace=namespace)


def materialize_view(
    store: OnlineStore, view: FeatureView, table: pa.Table, at: datetime
) -> dict[str, Any]:
    """Write a view's values (one row per entity: keys + features) to ``store``."""
    import time

    started = time.perf_counter()
    keys, features = view.entities, view.feature_names()
    key_types = {k: _key_type(table.schema.field(k).type) for k in keys}
    key_values = [table.column(k).to_pylist() for k in keys]
    encoded = [
        _encode(v) for v in (zip(*key_values, strict=True) if len(keys) > 1 else key_values[0])
    ]
    values = table.select(features).to_pylist()
    meta = {"keys": key_types, "features": features, "materialized_at": at.isoformat()}
    store.write(view.name, meta, encoded, values)
    return {
        "view": view.name,
        "entities": len(encoded),
        "features": len(features),
        "at": at.isoformat(),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _key_type(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    return "other"


def _encode(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC).decode()


_CASTS: dict[str, Any] = {"int": int, "float": float, "string": str}


class _Base(ABC):
    """Shared lookup logic: cast request keys to their stored types, encode, read."""

    def __init__(self, url: str, *, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._meta: dict[str, dict[str, Any]] = {}

    @abstractmethod
    def write(
        self,
        view: str,
        meta: dict[str, Any],
        entities: Sequence[str],
        values: Sequence[dict[str, Any]],
    ) -> None:
        """Replace every row of ``view``."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abstractmethod
    def meta(self, view: str) -> dict[str, Any] | None:
        """What ``write`` recorded about the view, or None."""

    @abstractmethod
    def read_encoded(
        self, view: str, entities: Sequence[str], features: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        """Feature values per encoded entity key; None for an unknown entity."""

    def _view_meta(self, view: str) -> dict[str, Any]:
        found = self._meta.get(view)
        if found is None:
            found = self.meta(view)
            if found is None:
                msg = (
                    f"feature view '{view}' is not in the online store ({_safe(self.url)}). "
                    f"Run 'keel features materialize {view}'."
                )
                raise NotFoundError(msg, field="features")
            self._meta[view] = found
        return found

    def read(
        self,
        view: str,
        keys: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
    ) -> tuple[list[list[Any]], list[dict[str, Any] | None]]:
        types = self._view_meta(view)["keys"]
        encoded = []
        typed = []
        for i, row in enumerate(rows):
            values = []
            for key in keys:
                if not isinstance(row, Mapping) or key not in row:
                    msg = f"entities[{i}] lacks the entity key '{key}' of view '{view}'."
                    raise DataValidationError(msg, field=f"entities[{i}].{key}")
                values.append(_cast(row[key], types.get(key, "other"), key, i))
            typed.append(values)
            encoded.append(_encode(values[0] if len(values) == 1 else tuple(values)))
        return typed, self.read_encoded(view, encoded, features)


def _cast(value: Any, kind: str, key: str, i: int) -> Any:
    cast = _CASTS.get(kind)
    if cast is None or type(value) is cast or value is None:
        return value
    try:
        return cast(value)
    except (TypeError, ValueError) as exc:
        msg = f"entities[{i}].{key} = {value!r} is not a {kind} like the stored keys."
        raise DataValidationError(msg, field=f"entities[{i}].{key}") from exc


def _safe(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class SQLiteOnlineStore(_Base):
    """The default online store: a SQLite file in WAL mode (see the module docstring)."""

    def __init__(self, url: str, *, namespace: str) -> None:
        super().__init__(url, namespace=namespace)
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            msg = f"{url!r}: write sqlite:///relative/path or sqlite:////absolute/path."
            raise ConfigError(msg, field="KEEL_ONLINE_STORE")
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()

    @property
    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute(
                    "CREATE TABLE IF NOT EXISTS keel_features (view TEXT NOT NULL, entity TEXT "
                    "NOT NULL, value BLOB NOT NULL, PRIMARY KEY (view, entity)) WITHOUT ROWID"
                )
                con.execute(
                    "CREATE TABLE IF NOT EXISTS keel_views (view TEXT PRIMARY KEY, meta BLOB)"
                )
            except sqlite3.Error as exc:
                raise BackendError(f"online store {self.path}: cannot open it ({exc}).") from exc
            self._local.con = con
        return con

    def write(
        self,
        view: str,
        meta: dict[str, Any],
        entities: Sequence[str],
        values: Sequence[dict[str, Any]],
    ) -> None:
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM keel_features WHERE view = ?", (view,))
            for start in range(0, len(entities), _BATCH):
                stop = start + _BATCH
                con.executemany(
                    "INSERT INTO keel_features VALUES (?, ?, ?)",
                    [
                        (view, e, orjson.dumps(v, option=_OPTIONS))
                        for e, v in zip(entities[start:stop], values[start:stop], strict=True)
                    ],
                )
            con.execute(
                "INSERT OR REPLACE INTO keel_views VALUES (?, ?)", (view, orjson.dumps(meta))
            )
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            con.execute("ROLLBACK")
            raise BackendError(f"online store {self.path}: write failed ({exc}).") from exc
        self._meta.pop(view, None)

    def meta(self, view: str) -> dict[str, Any] | None:
        row = self._con.execute("SELECT meta FROM keel_views WHERE view = ?", (view,)).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def read_encoded(
        self, view: str, entities: Sequence[str], features: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        con = self._con
        if len(entities) == 1:
            row = con.execute(
                "SELECT value FROM keel_features WHERE view = ? AND entity = ?",
                (view, entities[0]),
            ).fetchone()
            return [None if row is None else _pick(orjson.loads(row[0]), features)]
        marks = ",".join("?" * len(entities))
        found = dict(
            con.execute(
                f"SELECT entity, value FROM keel_features WHERE view = ? AND entity IN ({marks})",
                (view, *entities),
            ).fetchall()
        )
        return [
            None if (blob := found.get(e)) is None else _pick(orjson.loads(blob), features)
            for e in entities
        ]

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _pick(values: dict[str, Any], features: Sequence[str]) -> dict[str, Any]:
    return {f: values.get(f) for f in features}


class RedisOnlineStore(_Base):
    """The Redis online store: a hash per entity (see the module docstring)."""

    def __init__(self, url: str, *, namespace: str) -> None:
        super().__init__(url, namespace=namespace)
        try:
            import redis
        except ImportError as exc:
            msg = (
                "KEEL_ONLINE_STORE is a redis:// URL but the redis package is not installed: "
                "pip install 'keel[redis]'."
            )
            raise ConfigError(msg) from exc
        self._redis = redis
        self._client = redis.Redis.from_url(url)
        self._local = threading.local()

    def _key(self, view: str, entity: str) -> str:
        return f"keel:{self.namespace}:{view}:{entity}"

    def write(
        self,
        view: str,
        meta: dict[str, Any],
        entities: Sequence[str],
        values: Sequence[dict[str, Any]],
    ) -> None:
        prefix = self._key(view, "")
        fresh = {self._key(view, e) for e in entities}
        dumps = orjson.dumps
        try:
            stale = [
                k
                for k in self._client.scan_iter(match=prefix + "*", count=10_000)
                if k.decode() not in fresh
            ]
            for start in range(0, len(entities), _BATCH):
                stop = start + _BATCH
                pipe = self._client.pipeline(transaction=False)
                for entity, row in zip(entities[start:stop], values[start:stop], strict=True):
                    key = self._key(view, entity)
                    pipe.delete(key)
                    if row:
                        pipe.hset(
                            key, mapping={f: dumps(v, option=_OPTIONS) for f, v in row.items()}
                        )
                pipe.execute()
            for start in range(0, len(stale), _BATCH):
                self._client.delete(*stale[start : start + _BATCH])
            self._client.set(f"keel:{self.namespace}:__views__:{view}", orjson.dumps(meta))
        except self._redis.RedisError as exc:
            raise BackendError(f"online store {_safe(self.url)}: write failed ({exc}).") from exc
        self._meta.pop(view, None)

    def meta(self, view: str) -> dict[str, Any] | None:
        try:
            blob = self._client.get(f"keel:{self.namespace}:__views__:{view}")
        except self._redis.RedisError as exc:
            raise BackendError(f"online store {_safe(self.url)}: {exc}.") from exc
        return None if blob is None else dict(orjson.loads(blob))

    def read_encoded(
        self, view: str, entities: Sequence[str], features: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        commands = [("HMGET", self._key(view, entity), *features) for entity in entities]
        try:
            replies = self._round_trip(commands)
        except self._redis.RedisError as exc:
            raise BackendError(f"online store {_safe(self.url)}: {exc}.") from exc
        out: list[dict[str, Any] | None] = []
        loads = orjson.loads
        for reply in replies:
            if all(v is None for v in reply):
                out.append(None)
            else:
                out.append(
                    {
                        f: None if v is None else loads(v)
                        for f, v in zip(features, reply, strict=True)
                    }
                )
        return out

    def _round_trip(self, commands: Sequence[tuple[str, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies, on this thread's connection.

        A lookup writes to a connection held by the thread rather than through the client
        (``send_command``/``read_response`` of redis-py's own ``Connection``, which still does
        the authentication, TLS, database selection and hiredis parsing): the client's pool
        checkout, retry wrapper and event hooks cost ~14 us of a ~30 us lookup. A dropped
        connection is reopened and the commands sent once more.
        """
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._client.connection_pool.make_connection()
            self._local.connection = connection
        errors = (self._redis.ConnectionError, self._redis.TimeoutError)
        for attempt in (1, 2):
            try:
                if len(commands) == 1:
                    connection.send_command(*commands[0])
                else:
                    connection.send_packed_command(connection.pack_commands(commands))
                replies = [connection.read_response() for _ in commands]
            except errors:
                connection.disconnect()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                connection.disconnect()  # replies may be left unread: never reuse it
                raise
            for reply in replies:
                if isinstance(reply, self._redis.ResponseError):
                    raise reply
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.disconnect()
            self._local.connection = None
        self._client.close()
