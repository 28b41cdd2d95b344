"""The offline feature store: point-in-time-correct joins of feature views, in DuckDB.

``FeatureStore(project).historical(entities, features=["view:feature", ...])`` returns, for each
entity row (keys, time ``t``) and each requested view:

* **Columns**: the source row with the greatest event time ``<= t`` (ties: the greatest created
  time, then the last row in the source), NULL when that event is older than ``t - ttl``.
  Without a created-timestamp column this is one ``ASOF LEFT JOIN`` onto the source reduced to
  one row per (keys, event time). With one, the join is bitemporal: a row is visible from
  ``v = max(event, created)``; a running maximum of ``(event, created, row)`` ordered by ``v``
  gives, at every instant, the best row visible then, and one ``ASOF`` on ``v`` picks it. A late
  correction therefore never reaches an entity row stamped before it was written.
* **Aggregations** ``count``/``sum``/``mean``/``min``/``max`` over ``(t - window, t]``: each
  entity row meets its key's events in the widest window (a range join), only rows created by
  ``t`` count (of several versions of one event, the latest created by ``t``), and each window
  is one ``FILTER``-ed aggregate.

Entity rows keep their order and count; times are compared as UTC ``TIMESTAMP``. The same code
computes the online values (:meth:`FeatureStore.materialize` joins at "now"), so offline and
online features agree by construction.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from keel.config import AggregationConfig, parse_duration
from keel.data.scan import fetch_table, quote_ident
from keel.errors import ConfigError, DataValidationError, NotFoundError
from keel.features.views import FeatureView, _as_arrow, parse_refs

if TYPE_CHECKING:
    import duckdb

    from keel.features.online import OnlineStore
    from keel.project import Project
    from keel.types import Artifact

__all__ = ["FeatureStore", "join_feature_views", "join_views", "training_views"]

_MEMORY_LIMIT = "4GB"


class FeatureStore:
    """Feature views of a project: point-in-time joins offline, low-latency lookups online.

    Args:
        project: A :class:`~keel.project.Project`, its directory, or None for the nearest one;
            pass ``project=False`` to use only ``views`` (no keel.yaml, no online store file).
        views: Extra views declared in Python (:class:`~keel.features.views.FeatureView`).
        online_url: The online store (``sqlite:///path`` or ``redis://...``); default
            ``$KEEL_ONLINE_STORE``, else ``sqlite:///<project>/.keel/online.db``.

    Example:
        >>> store = FeatureStore("my-project")
        >>> train = store.historical(labels_df, features=["user_stats:rating_mean_30d"])
        >>> store.materialize()
        >>> store.online([{"user_id": 7}], ["user_stats:rating_mean_30d"])
    """

    def __init__(
        self,
        project: Any = None,
        *,
        views: Sequence[FeatureView] = (),
        online_url: str | None = None,
    ) -> None:
        from keel.project import Project

        self.project: Project | None
        if project is False:
            self.project = None
        else:
            self.project = project if isinstance(project, Project) else Project(project)
        self.views: dict[str, FeatureView] = {}
        if self.project is not None:
            for cfg in self.project.config.feature_views:
                self.views[cfg.name] = FeatureView.from_config(cfg)
        for view in views:
            if view.name in self.views:
                raise ConfigError(f"feature view '{view.name}' is declared twice.", field="views")
            self.views[view.name] = view
        self._online_url = online_url
        self._online: OnlineStore | None = None
        self._plans: dict[tuple[str, ...], list[tuple[FeatureView, list[str]]]] = {}

    def list_views(self) -> list[dict[str, Any]]:
        """The declared views as plain data."""
        return [view.describe() for view in self.views.values()]

    def view(self, name: str) -> FeatureView:
        """One view by name. NotFoundError lists the declared ones."""
        found = self.views.get(name)
        if found is None:
            known = ", ".join(sorted(self.views)) or "none declared in keel.yaml"
            raise NotFoundError(f"unknown feature view '{name}'. Views: {known}.", field="view")
        return found

    # --- offline ---------------------------------------------------------------------------

    def historical(
        self,
        entities: Any,
        features: Sequence[str],
        *,
        timestamp: str | None = None,
        full_names: bool = False,
    ) -> Any:
        """Point-in-time-correct features for each entity row (see the module docstring).

        Args:
            entities: Entity keys + an event-timestamp column (Arrow table, pandas DataFrame,
                list of dicts).
            features: ``"view:feature"`` (or ``"view:*"``) references.
            timestamp: The entities' timestamp column; default the only date/timestamp column.
            full_names: Name feature columns ``view__feature`` instead of ``feature``.

        Returns:
            The entity rows in their order with the feature columns appended: a pandas
            DataFrame when ``entities`` is one, else an Arrow table.

        Raises:
            ConfigError: A reference names an unknown view or feature, or names collide.
            DataValidationError: A key or the timestamp column is missing from the entities, or
                a view's source lacks a declared column.
        """
        table = _as_arrow(entities, "entities")
        joined = self._historical_table(table, features, timestamp, full_names)
        if type(entities).__name__ == "DataFrame":
            return joined.to_pandas()
        return joined

    def _historical_table(
        self, table: pa.Table, features: Sequence[str], timestamp: str | None, full_names: bool
    ) -> pa.Table:
        plan = parse_refs(features, self.views)
        ts = timestamp or _timestamp_column(table)
        keys = [k for view, _ in plan for k in view.entities]
        out = table
        with _duckdb() as con:
            load_entities(con, table, keys, ts)
            values = join_views(con, plan, self.project)
            for view, names in plan:
                for name in names:
                    column = f"{view.name}__{name}" if full_names else name
                    if column in out.column_names:
                        msg = (
                            f"feature '{view.name}:{name}' would be column '{column}', which "
                            "the entity rows (or another view) already have. Rename the entity "
                            "column, or pass full_names=True for 'view__feature' columns."
                        )
                        raise ConfigError(msg, field="features")
                    out = out.append_column(column, values[view.name, name])
        return out

    # --- online ----------------------------------------------------------------------------

    @property
    def online_store(self) -> OnlineStore:
        """The online store (opened on first use)."""
        if self._online is None:
            from keel.features.online import open_online_store

            self._online = open_online_store(self._online_url, self.project)
        return self._online

    def materialize(
        self, views: Sequence[str] | None = None, *, at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Copy each view's values as of ``at`` (default now; naive means UTC) for every entity to
        the online store.

        The values are :meth:`historical` at ``at`` for every entity key in the source, so
        online and offline agree. Returns one summary per view (rows, features, seconds).
        """
        from keel.features.online import materialize_view

        names = list(views) if views else list(self.views)
        when = at or datetime.now(UTC)
        if when.tzinfo is not None:  # naive times are UTC already
            when = when.astimezone(UTC).replace(tzinfo=None)
        done = []
        for name in names:
            view = self.view(name)
            with _duckdb() as con:
                rel = view.relation(con, self.project)
                key_list = ", ".join(quote_ident(k) for k in view.entities)
                keys = fetch_table(con, f"SELECT DISTINCT {key_list} FROM {rel}")
            entities = keys.append_column(
                "__keel_at", pa.array(np.full(keys.num_rows, when, dtype="datetime64[us]"))
            )
            table = self._historical_table(
                entities, [f"{name}:*"], "__keel_at", full_names=False
            ).drop_columns(["__keel_at"])
            done.append(materialize_view(self.online_store, view, table, when))
        return done

    def online(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        *,
        full_names: bool = False,
    ) -> list[dict[str, Any]]:
        """The materialized values for each entity row: a dict of its keys and the features.

        Unknown entities get None values.

        Raises:
            ConfigError: A reference names an unknown view or feature.
            DataValidationError: An entity row lacks a key of a requested view.
            NotFoundError: A requested view has not been materialized.
        """
        plan = self._plans.get(tuple(features))
        if plan is None:
            plan = parse_refs(features, self.views)
            self._plans[tuple(features)] = plan
        store = self.online_store
        results: list[dict[str, Any]] = [{} for _ in entity_rows]
        for view, names in plan:
            typed, values = store.read(view.name, view.entities, entity_rows, names)
            for result, keys, found in zip(results, typed, values, strict=True):
                for key, value in zip(view.entities, keys, strict=True):
                    result[key] = value
                for name in names:
                    value = None if found is None else found.get(name)
                    result[f"{view.name}__{name}" if full_names else name] = value
        return results

    def close(self) -> None:
        """Close the online store connection."""
        if self._online is not None:
            self._online.close()
            self._online = None

    # --- lineage ---------------------------------------------------------------------------

    def impact(self, view: str) -> list[dict[str, Any]]:
        """Model versions (with their aliases) whose packages were trained with ``view``."""
        if self.project is None:
            raise ConfigError("impact needs a project (its registry).")
        if view not in self.views:
            self.view(view)
        found = []
        meta = self.project.metadata
        for model in meta.list_models():
            for version in meta.list_versions(model["name"]):
                used = training_views(self.project, version.package_sha256)
                if used is None or view not in used["views"]:
                    continue
                found.append(
                    {
                        "model": version.name,
                        "version": version.version,
                        "aliases": list(version.aliases),
                        "features": [r for r in used["refs"] if r.split(":")[0] == view],
                        "package_sha256": version.package_sha256,
                        "created_at": version.created_at.isoformat(),
                    }
                )
        return found


def training_views(project: Project, package_sha256: str) -> dict[str, Any] | None:
    """The feature views a model package was trained with, from its lineage; None if none.

    The training-set step stores ``feature_views`` (refs, views with their entity keys, the
    entity timestamp) in the metadata of the snapshots it writes; the package's lineage names
    those snapshots.
    """
    manifest = orjson.loads(project.artifacts.get(package_sha256))
    for sha in _shas_in(manifest.get("lineage", {})):
        try:
            artifact = project.metadata.get_artifact(sha)
        except (NotFoundError, ConfigError):
            continue
        found = artifact.metadata.get("feature_views")
        if isinstance(found, dict):
            return found
    return None


def _shas_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _shas_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _shas_in(item)
    elif isinstance(value, str) and len(value) == 64:
        yield value


# --- the training-set step -------------------------------------------------------------------


def join_feature_views(ctx: Any) -> dict[str, Artifact]:
    """Join ``features.views`` point-in-time onto the train and test snapshots.

    Each snapshot's rows are entity rows (keys + ``features.entity_timestamp``); the joined
    tables become the ``train_snapshot``/``test_snapshot`` the later steps read, and their
    metadata records the views and references for the model package's lineage.
    """
    from keel.data import read_snapshot

    project = ctx.project
    cfg = project.config.features
    store = FeatureStore(project)
    plan = parse_refs(cfg.views, store.views)
    refs = [f"{view.name}:{name}" for view, names in plan for name in names]
    outputs = {}
    for split in ("train", "test"):
        source = ctx.inputs[f"{split}_snapshot"]
        table = read_snapshot(project.artifacts, source)
        ts = cfg.entity_timestamp or _default_timestamp(plan, table)
        joined = store._historical_table(table, refs, ts, full_names=False)
        info = {
            "refs": refs,
            "entity_timestamp": ts,
            "views": {v.name: {"entities": v.entities, "features": n} for v, n in plan},
        }
        outputs[f"{split}_snapshot"] = _put_table(project, joined, split, source, info)
        ctx.facts[f"{split}_rows"] = joined.num_rows
    ctx.facts.update(views=len(plan), features=len(refs), refs=refs)
    return outputs


def _default_timestamp(plan: list[tuple[FeatureView, list[str]]], table: pa.Table) -> str:
    for view, _ in plan:
        if view.config.timestamp in table.column_names:
            return view.config.timestamp
    msg = (
        "features.views: the training data has no column named like a view's timestamp "
        f"(columns: {table.column_names}). Set features.entity_timestamp to the column that "
        "holds each row's point in time."
    )
    raise ConfigError(msg, field="features.entity_timestamp")


def _put_table(
    project: Project, table: pa.Table, split: str, parent: Artifact, info: dict[str, Any]
) -> Artifact:
    import pyarrow.parquet as pq

    from keel.data.snapshots import schema_fingerprint

    with tempfile.TemporaryDirectory(prefix="keel-views-") as tmp:
        path = Path(tmp) / "snapshot.parquet"
        pq.write_table(table, path, row_group_size=122_880)
        metadata = {
            "rows": table.num_rows,
            "columns": table.column_names,
            "schema_fingerprint": schema_fingerprint(table.schema),
            "split": split,
            "source": "feature_views:" + ",".join(sorted(info["views"])),
            "parent": parent.sha256,
            "feature_views": info,
        }
        return project.artifacts.put(path, kind="snapshot", metadata=metadata)


def views_fingerprint(project: Project, inputs: Mapping[str, Any]) -> str:
    """A cache key part that changes when a referenced view's source data may have changed."""
    import hashlib

    from keel.data import source_fingerprint

    digest = hashlib.sha256()
    wanted = {ref.split(":")[0] for ref in project.config.features.views}
    for cfg in project.config.feature_views:
        if cfg.name not in wanted:
            continue
        part = cfg.snapshot or (
            source_fingerprint(cfg.source, project.root) if cfg.source is not None else ""
        )
        digest.update(f"{cfg.name}={part}\n".encode())
    return digest.hexdigest()


# --- the joins -------------------------------------------------------------------------------


@contextmanager
def _duckdb() -> Iterator[duckdb.DuckDBPyConnection]:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = '{os.environ.get('KEEL_DUCKDB_MEMORY', _MEMORY_LIMIT)}'")
        con.execute(f"SET temp_directory = '{tempfile.gettempdir()}/keel-duckdb'")
        yield con
    finally:
        con.close()


def _timestamp_column(table: pa.Table) -> str:
    found: list[str] = [
        f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)
    ]
    if len(found) != 1:
        what = "no" if not found else f"several ({found})"
        msg = (
            f"entity rows have {what} date/timestamp columns; pass timestamp='column' to name "
            "the one that holds each row's point in time."
        )
        raise DataValidationError(msg, field="timestamp")
    return found[0]


ENTITY_TABLE = "__keel_entities"
_SQL_FN = {"count": "count", "sum": "sum", "mean": "avg", "min": "min", "max": "max"}


def load_entities(
    con: duckdb.DuckDBPyConnection, table: pa.Table, keys: Sequence[str], timestamp: str
) -> None:
    """Register the entity rows as a temp table of keys, ``__t`` (UTC) and ``__row`` (order)."""
    import duckdb

    missing = [c for c in [*keys, timestamp] if c not in table.column_names]
    if missing:
        msg = (
            f"entity rows lack column(s) {missing} (columns: {table.column_names}); they need "
            "every entity key of the requested views and the timestamp column."
        )
        raise DataValidationError(msg, field=missing[0])
    columns = {k: table.column(k) for k in dict.fromkeys(keys)}
    columns["__t"] = table.column(timestamp)
    columns["__row"] = pa.array(np.arange(table.num_rows, dtype=np.int64))
    con.register("__keel_entity_src", pa.table(columns))
    selected = ", ".join(quote_ident(k) for k in dict.fromkeys(keys))
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {ENTITY_TABLE} AS SELECT {selected}, "
            "CAST(__t AS TIMESTAMP) AS __t, __row FROM __keel_entity_src"
        )
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        msg = f"entity column '{timestamp}' is not a timestamp or date ({first})."
        raise DataValidationError(msg, field=timestamp) from exc
    con.unregister("__keel_entity_src")


def join_views(
    con: duckdb.DuckDBPyConnection,
    plan: Sequence[tuple[FeatureView, Sequence[str]]],
    project: Project | None,
) -> dict[tuple[str, str], pa.ChunkedArray]:
    """The requested features of every view for the loaded entity rows, in entity row order.

    Column features of all views come from one query (one ASOF LEFT JOIN per view, one sort);
    each view's window aggregations from one more.
    """
    row = con.execute(f"SELECT min(__t), max(__t) FROM {ENTITY_TABLE}").fetchall()[0]
    # literals, not subqueries: the planner prunes the source scans with them
    bounds = tuple("NULL" if v is None else f"TIMESTAMP '{v.isoformat(sep=' ')}'" for v in row)
    selects: list[str] = []
    joins: list[str] = []
    named: dict[str, tuple[str, str]] = {}
    out: dict[tuple[str, str], pa.ChunkedArray] = {}
    for i, (view, names) in enumerate(plan):
        rel = view.relation(con, project)
        columns = [c for c in view.columns() if c in names]
        aggregations = [a for a in view.aggregations() if a.feature_name in names]
        if columns:
            alias = f"__s{i}"
            ttl = view.config.ttl_seconds
            keep = (
                f"{alias}.__e >= e.__t - to_seconds({ttl})" if ttl else f"{alias}.__e IS NOT NULL"
            )
            for j, c in enumerate(columns):
                named[f"__f{i}_{j}"] = (view.name, c)
                selects.append(f"CASE WHEN {keep} THEN {alias}.{quote_ident(c)} END AS __f{i}_{j}")
            on = " AND ".join(
                f"e.{quote_ident(k)} = {alias}.{quote_ident(k)}" for k in view.entities
            )
            timeline = _timeline(con, view, rel, columns, bounds)
            joins.append(f"ASOF LEFT JOIN ({timeline}) {alias} ON {on} AND e.__t >= {alias}.__at")
        if aggregations:
            part = fetch_table(con, _window_sql(view, rel, aggregations, bounds))
            for agg in aggregations:
                out[view.name, agg.feature_name] = part.column(agg.feature_name)
    if joins:
        # DuckDB's parallel sort on the row number puts the rows back in entity order (cheaper
        # than a scatter and take on the fetched columns)
        query = (
            f"SELECT e.__row, {', '.join(selects)} FROM {ENTITY_TABLE} e {' '.join(joins)} "
            "ORDER BY e.__row"
        )
        part = fetch_table(con, query)
        for column, key in named.items():
            out[key] = part.column(column)
    return out


def _source_sql(view: FeatureView, rel: str, columns: Sequence[str], *, rid: bool = True) -> str:
    """The view's source as keys, ``__e`` (event), ``__c`` (created), ``__rid`` (source order,
    when ``rid``: a window over the whole source, so only where ties must be broken) and
    columns."""
    cfg = view.config
    event = f"CAST({quote_ident(cfg.timestamp)} AS TIMESTAMP)"
    created = (
        f"CAST(coalesce({quote_ident(cfg.created_timestamp)}, {quote_ident(cfg.timestamp)}) "
        "AS TIMESTAMP)"
        if cfg.created_timestamp
        else event
    )
    keys = ", ".join(quote_ident(k) for k in cfg.entities)
    values = "".join(f", {quote_ident(c)}" for c in dict.fromkeys(columns))
    order = "row_number() OVER () AS __rid" if rid else "NULL AS __rid"
    return (
        f"SELECT {keys}, {event} AS __e, {created} AS __c, {order}{values} FROM {rel} "
        f"WHERE {quote_ident(cfg.timestamp)} IS NOT NULL"
    )


def _bound_filter(ttl: int, bounds: tuple[str, ...]) -> str:
    """Prune source rows no entity row can see (after max t; before min t - ttl)."""
    lower = f" AND __e >= {bounds[0]} - to_seconds({ttl})" if ttl else ""
    return f"greatest(__e, __c) <= {bounds[1]}{lower}"


def _has_ties(con: duckdb.DuckDBPyConnection, view: FeatureView, source: str) -> bool:
    """Whether some (keys, event time) has several rows (then the last one must be chosen)."""
    keys = ", ".join(quote_ident(k) for k in view.entities)
    query = f"SELECT count(*) - count(DISTINCT ({keys}, __e)) FROM {source}"
    return bool(con.execute(query).fetchall()[0][0])


def _timeline(
    con: duckdb.DuckDBPyConnection,
    view: FeatureView,
    rel: str,
    columns: Sequence[str],
    bounds: tuple[str, ...],
) -> str:
    """Rows to ASOF-join on ``__at``: keys, ``__at`` (visible from), ``__e`` and the columns."""
    cfg = view.config
    keys = [quote_ident(k) for k in cfg.entities]
    ttl = cfg.ttl_seconds
    source = f"({_source_sql(view, rel, columns)}) WHERE {_bound_filter(ttl, bounds)}"
    plain = f"({_source_sql(view, rel, columns, rid=False)}) WHERE {_bound_filter(ttl, bounds)}"
    struct = ", ".join(f"{quote_ident(c)}: {quote_ident(c)}" for c in columns)
    unpack = ", ".join(f"__v.{quote_ident(c)} AS {quote_ident(c)}" for c in columns)
    key_list = ", ".join(keys)
    if not cfg.created_timestamp and not _has_ties(con, view, plain):
        # the usual case, checked first because it is cheaper than deduplicating
        timeline = f"SELECT * EXCLUDE (__rid), __e AS __at FROM {plain}"
    elif not cfg.created_timestamp:
        # one row per (keys, event): the last one in the source wins
        timeline = (
            f"SELECT {key_list}, __e, __e AS __at, {unpack} FROM ("
            f"SELECT {key_list}, __e, arg_max({{{struct}}}, __rid) AS __v "
            f"FROM (SELECT * FROM {source}) GROUP BY ALL)"
        )
    else:
        best = (
            f"max({{'e': __e, 'c': __c, 'r': __rid}}) OVER (PARTITION BY {key_list} "
            "ORDER BY greatest(__e, __c) RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )
        timeline = (
            f"WITH src AS (SELECT * FROM {source}), "
            f"steps AS (SELECT DISTINCT ON ({key_list}, __at) {key_list}, "
            f"greatest(__e, __c) AS __at, {best} AS __best FROM src) "
            f"SELECT steps.__at, src.* EXCLUDE (__c, __rid) FROM steps "
            "JOIN src ON src.__rid = steps.__best.r"
        )
    return timeline


def _window_sql(
    view: FeatureView, rel: str, aggregations: Sequence[AggregationConfig], bounds: tuple[str, ...]
) -> str:
    cfg = view.config
    keys = [quote_ident(k) for k in cfg.entities]
    on = " AND ".join(f"e.{k} = s.{k}" for k in keys)
    widest = max(parse_duration(a.window) for a in aggregations)
    columns = [a.column for a in aggregations if a.column is not None]
    source = (
        f"({_source_sql(view, rel, columns)}) WHERE greatest(__e, __c) <= {bounds[1]} "
        f"AND __e > {bounds[0]} - to_seconds({widest})"
    )
    values = "".join(f", s.{quote_ident(c)}" for c in dict.fromkeys(columns))
    joined = (
        f"SELECT e.__row, e.__t, s.__e{values} FROM {ENTITY_TABLE} e "
        f"JOIN (SELECT * FROM {source}) s ON {on} AND s.__e <= e.__t "
        f"AND s.__e > e.__t - to_seconds({widest}) AND s.__c <= e.__t"
    )
    if cfg.created_timestamp:
        # several versions of one event: the latest created by t counts, once
        joined += (
            " QUALIFY row_number() OVER (PARTITION BY e.__row, s.__e "
            "ORDER BY s.__c DESC, s.__rid DESC) = 1"
        )
    selects = []
    for agg in aggregations:
        inside = f"__e > __t - to_seconds({parse_duration(agg.window)})"
        arg = "*" if agg.column is None else quote_ident(agg.column)
        expr = f"{_SQL_FN[agg.function]}({arg}) FILTER (WHERE {inside})"
        if agg.function in ("sum", "mean"):
            expr = f"CAST({expr} AS DOUBLE)"
        selects.append((agg, expr))
    inner = ", ".join(f"{expr} AS {quote_ident(a.feature_name)}" for a, expr in selects)
    outer = ", ".join(
        f"coalesce(w.{quote_ident(a.feature_name)}, 0) AS {quote_ident(a.feature_name)}"
        if a.function == "count"
        else f"w.{quote_ident(a.feature_name)}"
        for a, _ in selects
    )
    return (
        f"SELECT e.__row, {outer} FROM {ENTITY_TABLE} e LEFT JOIN "
        f"(SELECT __row, {inner} FROM ({joined}) GROUP BY __row) w USING (__row) "
        "ORDER BY e.__row"
    )
