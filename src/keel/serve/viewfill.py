"""A file's view features, filled batch by batch for batch scoring, explanations and monitoring.

A model trained with feature views (``features.views``) read rows joined point in time onto
its entity rows. The server fills a request of entity keys from the online store
(:mod:`keel.serve.features`); ``keel predict``, ``keel explain`` and ``keel monitor --input``
fill a file of entity keys the same way, chosen once per file by ``features``:

* ``auto`` (the default): a point-in-time join as of each row's time when the file has the
  column training joined as of (``features.entity_timestamp``, e.g. ``rated_at``), else the
  latest values from the online store;
* ``as-of``: the point-in-time join (:meth:`keel.features.store.FeatureStore.historical`, the
  training join itself); a file without the time column is an error naming it;
* ``online``: the online store's values, as the server answers (an entity it has no row for
  is scored with the view's features missing, imputed as in training, and counted as an
  unknown entity); a view the store lacks is an error naming ``keel features materialize``;
* ``file``: no fill: the file must carry the view features (the old behaviour).

A view feature column the file carries keeps its values (nulls included): only the view
features a file lacks are filled, and a view whose features it all carries is not read. Each
batch is filled on its own (the join runs per batch, over the batch's rows only), so a file of
any size is never held whole; the online values are read once per distinct entity of a batch
and put back on its rows by a hash join, with no Python loop over the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import ConfigError, DataValidationError, NotFoundError

if TYPE_CHECKING:
    from keel.features.store import FeatureStore
    from keel.project import Project

__all__ = ["FEATURE_MODES", "FeatureFill", "ViewFill", "plan_fill"]

#: How a file's view features are filled (see the module docstring).
FEATURE_MODES = ("auto", "as-of", "online", "file")
#: The online store's recorded key types as DuckDB types (``other`` keys are left as read).
_ONLINE_TYPES = {"int": "BIGINT", "float": "DOUBLE", "string": "VARCHAR"}
#: Entities per online read (SQLite binds each as a parameter: at most 32,766 a statement).
_READ_ENTITIES = 10_000


@dataclass(frozen=True)
class FeatureFill:
    """How a file's view features were filled.

    Attributes:
        how: ``as-of`` (joined point in time) or ``online`` (the online store's values).
        views: The views read, in training order.
        features: The view features filled (the file lacked them).
        timestamp: The column joined as of (``as-of``), else None.
        unknown_entities: Per view, the rows whose entity the online store has no row for
            (or whose key is missing): scored with that view's features missing.
    """

    how: Literal["as-of", "online"]
    views: tuple[str, ...]
    features: tuple[str, ...]
    timestamp: str | None = None
    unknown_entities: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """``6 features of 2 views (movies, users) joined as of 'rated_at'``."""
        where = (
            f"joined as of {self.timestamp!r}" if self.how == "as-of" else "from the online store"
        )
        count = len(self.views)
        return (
            f"{len(self.features)} features of {count} view{'s' * (count != 1)} "
            f"({', '.join(self.views)}) {where}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``described`` (:meth:`describe`) and ``unknown_entities`` in all."""
        return {
            "filled": self.how,
            "views": list(self.views),
            "features": list(self.features),
            "timestamp": self.timestamp,
            "unknown_entities": dict(self.unknown_entities),
            "unknown_entity_rows": sum(self.unknown_entities.values()),
            "described": self.describe(),
        }


def plan_fill(
    project: Project, package_sha256: str, inputs: Sequence[str], columns: Sequence[str],
    mode: str, *, where: str,
) -> ViewFill | None:  # fmt: skip
    """Decide, from a file's columns, which view features to fill and how; None when there is
    nothing to fill (``file``, a model trained without views, a file that carries them all).

    Args:
        project: The open project (its feature views, online store, registry).
        package_sha256: The model package (its lineage names the views it was trained with).
        inputs: The model's input columns (only view features among them are filled).
        columns: The file's columns.
        mode: One of :data:`FEATURE_MODES`.
        where: How to name the file in messages.

    Raises:
        ConfigError: ``mode`` is unknown, or ``as-of``/``online`` for a model without views.
        DataValidationError: An entity key is missing from the file, ``as-of`` without the time
            column, or (``auto``) neither fill is possible; ``field`` is ``columns`` and
            ``details["missing"]`` the view features.
        NotFoundError: ``online`` and the online store lacks a view, or the project no longer
            declares one.
    """
    from keel.features.store import training_views

    if mode not in FEATURE_MODES:
        msg = f"features: {mode!r} is not one of {', '.join(FEATURE_MODES)}."
        raise ConfigError(msg, field="features")
    if mode == "file":
        return None
    used = training_views(project, package_sha256)
    if used is None:
        if mode == "auto":
            return None
        msg = (
            f"--features {mode}: the model was trained without feature views; there is "
            "nothing to join. Leave --features out (auto)."
        )
        raise ConfigError(msg, field="features")
    have = set(columns)
    wanted = set(inputs)
    lacking: dict[str, list[str]] = {}
    for view, spec in used["views"].items():
        names = [f for f in spec["features"] if f in wanted and f not in have]
        if names:
            lacking[view] = names
    if not lacking:
        return None
    features = [f for names in lacking.values() for f in names]
    ts = used.get("entity_timestamp")
    _check_keys(used, lacking, have, features, where)
    if mode == "as-of" or (mode == "auto" and ts in have):
        if ts not in have:
            msg = (
                f"{where}: --features as-of joins each row's view features as of its time, "
                f"column {ts!r} (as training did); the file has no such column. Add it, or "
                "pass --features online for the online store's latest values."
            )
            raise DataValidationError(msg, field="columns", details={"missing": [ts]})
        return _opened(_store(project, lacking), lacking, "as-of", ts)
    store = _store(project, lacking)
    absent = [v for v in lacking if store.online_store.meta(v) is None]
    if not absent:
        return _opened(store, lacking, "online", None)
    store.close()
    listed = ", ".join(absent)
    if mode == "online":
        msg = (
            f"{where}: --features online reads the online store, which has no feature view "
            f"{listed}. Run `keel features materialize {' '.join(absent)}` first, or add a "
            f"{ts!r} column and pass --features as-of."
        )
        raise NotFoundError(msg, field="features", details={"views": absent})
    msg = (
        f"{where}: lacks the view features {', '.join(features)} and neither fill works: no "
        f"{ts!r} column to join them as of, and the online store has no feature view {listed} "
        "(run `keel features materialize`)."
    )
    raise DataValidationError(msg, field="columns", details={"missing": features})


def _check_keys(
    used: dict[str, Any], lacking: dict[str, list[str]], have: set[str], features: list[str],
    where: str,
) -> None:  # fmt: skip
    keys = [k for v in lacking for k in used["views"][v]["entities"] if k not in have]
    if keys:
        missing = list(dict.fromkeys(keys))
        msg = (
            f"{where}: lacks the view features {', '.join(features)} and the entity key(s) "
            f"{', '.join(missing)} to look them up by. Add the keys, or the features."
        )
        raise DataValidationError(msg, field="columns", details={"missing": missing})


def _store(project: Project, lacking: dict[str, list[str]]) -> FeatureStore:
    """The project's feature store, which must still declare the views."""
    from keel.features.store import FeatureStore

    store = FeatureStore(project)
    gone = [v for v in lacking if v not in store.views]
    if gone:
        msg = (
            f"the model was trained with feature view(s) {', '.join(gone)}, which keel.yaml no "
            "longer declares; restore them under feature_views:."
        )
        raise NotFoundError(msg, field="features")
    return store


def _opened(
    store: FeatureStore,
    lacking: dict[str, list[str]],
    how: Literal["as-of", "online"],
    timestamp: str | None,
) -> ViewFill:
    """The fill over ``store`` (closed again when the fill cannot be made)."""
    try:
        return ViewFill(store, lacking, how, timestamp)
    except BaseException:
        store.close()
        raise


class ViewFill:
    """Fills each batch's missing view features one way (from :func:`plan_fill`).

    Attributes:
        filled: The view features each batch gains.
    """

    def __init__(
        self,
        store: FeatureStore,
        lacking: dict[str, list[str]],
        how: Literal["as-of", "online"],
        timestamp: str | None,
    ) -> None:
        self.store = store
        self.lacking = lacking
        self.how = how
        self.timestamp = timestamp
        self.filled = tuple(f for names in lacking.values() for f in names)
        self.unknown = dict.fromkeys(lacking, 0)
        self._types = self._key_types()
        self._schema = self._feature_types() if how == "online" else {}  # as-of: the join's

    def _key_types(self) -> dict[str, str]:
        """Each entity key's type as the fill compares it: the view source's (as-of) or the
        online store's (online), as DuckDB types; a file's text keys are cast to it."""
        types: dict[str, str] = {}
        if self.how == "online":
            for name in self.lacking:
                meta = self.store.online_store.meta(name) or {}
                for key, kind in (meta.get("keys") or {}).items():
                    if kind in _ONLINE_TYPES:
                        types.setdefault(key, _ONLINE_TYPES[kind])
            return types
        from keel.data.scan import quote_ident
        from keel.features.pit import connect

        with connect() as con:
            for view_name in self.lacking:
                view = self.store.views[view_name]
                rel = view.relation(con, self.store.project)
                keys = ", ".join(quote_ident(k) for k in view.entities)
                for row in con.execute(f"DESCRIBE SELECT {keys} FROM {rel}").fetchall():
                    types.setdefault(str(row[0]), str(row[1]))
        return types

    def _feature_types(self) -> dict[str, pa.DataType]:
        """The online values' types as the training join gives them (the join of no rows), so
        that every batch's columns agree; ``{}`` when the sources cannot be read here (the
        values keep the types the store answers with)."""
        keys = list(dict.fromkeys(k for v in self.lacking for k in self.store.views[v].entities))
        refs = [f"{v}:{f}" for v, names in self.lacking.items() for f in names]
        ts = "__keel_at"
        none = pa.table({k: pa.array([], pa.string()) for k in keys})
        try:
            entities = self._typed(none, keys).append_column(ts, pa.array([], pa.timestamp("us")))
            joined = self.store.historical(entities, refs, timestamp=ts)
        except Exception:  # a source the online fill never needed is unreadable here
            return {}
        return {name: joined.schema.field(name).type for name in self.filled}

    def restart(self) -> None:
        """Count the unknown entities from zero (a file read again from its start)."""
        self.unknown = dict.fromkeys(self.lacking, 0)

    def fill(self, table: pa.Table) -> pa.Table:
        """``table`` with the missing view features appended (its rows, in order)."""
        if self.how == "as-of":
            assert self.timestamp is not None
            refs = [f"{v}:{f}" for v, names in self.lacking.items() for f in names]
            keys = [k for v in self.lacking for k in self.store.views[v].entities]
            entities = self._typed(table, list(dict.fromkeys(keys)))
            entities = entities.append_column(self.timestamp, table.column(self.timestamp))
            joined = self.store.historical(entities, refs, timestamp=self.timestamp)
            for name in self.filled:
                table = table.append_column(name, joined.column(name))
            return table
        for view, names in self.lacking.items():
            values = self._online(table, view, names)
            for name in names:
                table = table.append_column(name, values.column(name))
        return table

    def _typed(self, table: pa.Table, keys: list[str]) -> pa.Table:
        """The keys cast to the types the fill compares (a value that does not convert: null,
        so its row joins nothing)."""
        from keel.data.scan import fetch_table, quote_ident
        from keel.features.pit import connect

        parts = [
            f"TRY_CAST({quote_ident(k)} AS {self._types[k]}) AS {quote_ident(k)}"
            if k in self._types
            else quote_ident(k)
            for k in keys
        ]
        with connect() as con:
            con.register("__keel_keys", table.select(keys))
            return fetch_table(con, f"SELECT {', '.join(parts)} FROM __keel_keys")

    def _online(self, table: pa.Table, view: str, names: list[str]) -> pa.Table:
        """The online values of ``view``'s ``names`` for each row: one read of the batch's
        distinct entities, put back on their rows by index; unknown entities counted."""
        keys = self.store.views[view].entities
        rows = self._typed(table, keys).append_column(
            "__keel_row", pa.array(np.arange(table.num_rows, dtype=np.int64))
        )
        groups = rows.group_by(keys, use_threads=False).aggregate([("__keel_row", "list")])
        members = groups.column("__keel_row_list").combine_chunks()
        index = np.empty(table.num_rows, dtype=np.int64)  # row -> its entity's group
        flat = pc.list_flatten(members).to_numpy()
        index[flat] = pc.list_parent_indices(members).to_numpy()
        valid = np.ones(groups.num_rows, dtype=bool)
        for key in keys:  # a missing key is looked up by nobody: an unknown entity
            valid &= groups.column(key).is_valid().to_numpy(zero_copy_only=False)
        wanted = groups.select(keys).filter(pa.array(valid)).to_pylist()
        found: list[dict[str, Any] | None] = [None] * groups.num_rows
        read: list[dict[str, Any] | None] = []
        for start in range(0, len(wanted), _READ_ENTITIES):
            chunk = wanted[start : start + _READ_ENTITIES]
            read += self.store.online_store.read(view, keys, chunk, names)[1]
        for at, values in zip(np.flatnonzero(valid).tolist(), read, strict=True):
            found[at] = values
        take = pa.array(index)
        hits = pa.array([row is not None for row in found], pa.bool_()).take(take)
        self.unknown[view] += table.num_rows - int(pc.sum(hits).as_py() or 0)
        columns = {}
        for name in names:  # per distinct entity, as the store answers them
            values = pa.array([None if row is None else row.get(name) for row in found])
            kind = self._schema.get(name)
            if kind is not None and values.type != kind:
                values = values.cast(kind)  # the training join's type, in every batch
            columns[name] = values.take(take)
        return pa.table(columns)

    def result(self) -> FeatureFill:
        """What the fill did so far."""
        unknown = {v: n for v, n in self.unknown.items() if n} if self.how == "online" else {}
        return FeatureFill(self.how, tuple(self.lacking), self.filled, self.timestamp, unknown)

    def close(self) -> None:
        """Close the online store's connection."""
        self.store.close()
