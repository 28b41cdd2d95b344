"""Point-in-time-correct joins of feature views onto entity rows, in DuckDB.

:meth:`keel.features.store.FeatureStore.historical` returns, for each entity row (keys, time
``t``) and each requested view:

* **Columns**: the source row with the greatest event time ``<= t`` (ties: the greatest created
  time, then the last row in the source), NULL when that event is older than ``t - ttl``.
  Without a created-timestamp column this is one ``ASOF LEFT JOIN`` onto the source reduced to
  one row per (keys, event time); whether any (keys, event time) repeats is checked first,
  through sorted 64-bit hashes, because deduplicating costs more than checking. With one, the
  join is bitemporal: a row is visible from ``v = max(event, created)``; a running maximum of
  ``(event, created, row)`` ordered by ``v`` gives, at every instant, the best row visible then,
  and one ``ASOF`` on ``v`` picks it. A late correction therefore never reaches an entity row
  stamped before it was written.
* **Aggregations** ``count``/``sum``/``mean``/``min``/``max`` over ``(t - window, t]``: each
  entity row meets its key's events in the widest window (a range join), only rows created by
  ``t`` count (of several versions of one event, the latest created by ``t``), and each window
  is one ``FILTER``-ed aggregate.

Entity rows keep their order and count; times are compared as UTC ``TIMESTAMP``. The same code
computes the online values (``FeatureStore.materialize`` joins at "now"), so offline and online
features agree by construction.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from keel.config import AggregationConfig, parse_duration
from keel.data.scan import fetch_table, quote_ident
from keel.errors import DataValidationError
from keel.features.views import FeatureView
from keel.settings import load_settings

if TYPE_CHECKING:
    import duckdb

    from keel.project import Project

__all__ = ["ENTITY_TABLE", "connect", "entity_timestamp", "join_views", "load_entities"]

_MEMORY_LIMIT = "4GB"
#: Sources up to this many rows are checked for ties through sorted hashes (8 bytes a row).
_HASH_CHECK_ROWS = 16_000_000


@contextmanager
def connect() -> Iterator[duckdb.DuckDBPyConnection]:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        memory = load_settings().duckdb_memory or _MEMORY_LIMIT
        con.execute(f"SET memory_limit = '{memory}'")
        con.execute(f"SET temp_directory = '{tempfile.gettempdir()}/keel-duckdb'")
        yield con
    finally:
        con.close()


def entity_timestamp(table: pa.Table) -> str:
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
    """Whether some (keys, event time) has several rows (then the last one must be chosen).

    Exact, and cheaper than DuckDB's ``count(DISTINCT ...)`` (a hash table of every row): the
    rows' 64-bit hashes of (keys, event) are sorted in NumPy and neighbours compared. Only an
    equal pair (a tie, or a collision: about n**2 / 2**65) runs the exact count. Past
    ``_HASH_CHECK_ROWS`` rows the exact count runs directly, as it can spill to disk.
    """
    keys = ", ".join(quote_ident(k) for k in view.entities)
    exact = f"SELECT count(*) - count(DISTINCT ({keys}, __e)) FROM {source}"
    rows = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
    if rows > _HASH_CHECK_ROWS:
        return bool(con.execute(exact).fetchall()[0][0])
    hashes = con.execute(f"SELECT hash({keys}, __e) AS h FROM {source}").fetchnumpy()["h"]
    hashes = np.sort(np.asarray(hashes))
    if not np.any(hashes[1:] == hashes[:-1]):
        return False
    return bool(con.execute(exact).fetchall()[0][0])


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
