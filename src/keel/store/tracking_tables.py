"""Queries over the experiment-tracking tables: params, metrics, metric history, tags, environments.

Each function takes a connection already in a transaction; ``MetadataStore`` owns transactions
and the public API. A run's facts (``facts["params"]``, ``["metrics"]``, ``["history"]``,
``["tags"]``) land in one narrow table each, so a filter on one key is an index range scan on
``(key, value, run_id)`` and "sort by a metric, limit N" walks that index in order.
"""

from __future__ import annotations

import importlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

import sqlalchemy as sa

from keel.errors import ConfigError
from keel.store.tables import (
    KEY_LENGTH,
    VALUE_LENGTH,
    environments,
    run_metric_history,
    run_metrics,
    run_params,
    run_tags,
    runs,
    utc_now,
)
from keel.types import Run

__all__ = [
    "ATTRIBUTES",
    "Condition",
    "Order",
    "TrackedRun",
    "fact_rows",
    "insert_facts",
    "load_details",
    "record_environment",
    "search",
    "summarize",
]

Namespace = Literal["metrics", "params", "tags", "run"]
Operator = Literal["=", "!=", "<", "<=", ">", ">=", "in"]
Scalar = str | float | int | bool | datetime

ATTRIBUTES: dict[str, sa.Column[Any]] = {
    "step": runs.c.step,
    "status": runs.c.status,
    "started_at": runs.c.started_at,
    "ended_at": runs.c.ended_at,
    "duration": runs.c.duration_seconds,
    "cpu_seconds": runs.c.cpu_seconds,
    "peak_memory_mb": runs.c.peak_memory_mb,
    "code_version": runs.c.code_version,
    "cache_key": runs.c.cache_key,
    "config_hash": runs.c.config_hash,
}
"""Run columns a filter or sort may name directly (``duration`` is in seconds)."""

_MAX_FLATTEN_DEPTH = 4
_OPS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One comparison of a filter: ``metrics.roc_auc > 0.9`` is ("metrics", "roc_auc", ">", 0.9).

    For ``run`` the key is an attribute of ``ATTRIBUTES``; for ``in`` the value is a tuple.
    """

    namespace: Namespace
    key: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Order:
    """One sort key: ``metrics.roc_auc desc`` is ("metrics", "roc_auc", True)."""

    namespace: Namespace
    key: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class TrackedRun:
    """A run with its tracked facts.

    Attributes:
        run: The run itself (status, times, resources, inputs and outputs).
        duration_seconds: Wall time from start to finish, None while running.
        params: Hyper-parameters, name -> value (nested names joined with ``.``).
        metrics: Final metrics, name -> value (None for a non-finite value).
        tags: Free-form labels.
        history: Learning curves, metric -> values per iteration (loaded by ``get`` only).
        environment: Python, platform, packages and git commit (loaded by ``get`` only).
        snapshots: The run's input artifacts of kind ``snapshot``, input name -> sha256.
    """

    run: Run
    duration_seconds: float | None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    history: dict[str, list[float | None]] | None = None
    environment: dict[str, Any] | None = None
    snapshots: dict[str, str] = field(default_factory=dict)


# -- writing -----------------------------------------------------------------------------------


def record_environment(conn: sa.Connection, env_id: str, env: Mapping[str, Any]) -> None:
    """Insert an environment unless a row with this id exists (also when racing another writer:
    parallel trials on PostgreSQL start their first runs at the same moment)."""
    values = {"id": env_id, "captured_at": utc_now(), "data": dict(env)}
    if conn.dialect.name in ("sqlite", "postgresql"):
        dialect = importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}")
        conn.execute(dialect.insert(environments).values(**values).on_conflict_do_nothing())
        return
    exists = conn.scalar(sa.select(environments.c.id).where(environments.c.id == env_id))
    if exists is None:
        conn.execute(sa.insert(environments).values(**values))


def insert_facts(
    conn: sa.Connection, run_id: str, tables: Mapping[sa.Table, list[dict[str, Any]]]
) -> None:
    """Insert the rows of ``fact_rows``, replacing what the run already has under those names
    (a tag given to ``start_run`` and again in the facts)."""
    for table, rows in tables.items():
        names = [row["key"] for row in rows]
        conn.execute(sa.delete(table).where(table.c.run_id == run_id, table.c.key.in_(names)))
        conn.execute(sa.insert(table), rows)


def fact_rows(run_id: str, facts: Mapping[str, Any]) -> dict[sa.Table, list[dict[str, Any]]]:
    """The rows a run's facts become, by table (empty tables left out).

    Raises:
        ConfigError: A fact section is not a mapping, or a name is too long.
    """
    tables: dict[sa.Table, list[dict[str, Any]]] = {}
    params = _flatten(_section(facts, "params"), "params")
    if params:
        tables[run_params] = [_param_row(run_id, k, v) for k, v in params.items()]
    rows = [{"run_id": run_id, "key": k, "value": v} for k, v in _metrics(facts).items()]
    if rows:
        tables[run_metrics] = rows
    history = _flatten(_section(facts, "history"), "history")
    rows = [
        {"run_id": run_id, "key": k, "iteration": i, "value": _number(x)}
        for k, values in history.items()
        if isinstance(values, list | tuple)
        for i, x in enumerate(values, start=1)
    ]
    if rows:
        tables[run_metric_history] = rows
    tags = _section(facts, "tags")
    if tags:
        tables[run_tags] = [
            {"run_id": run_id, "key": _key(str(k), "tags"), "value": _text(v)}
            for k, v in tags.items()
        ]
    return tables


def summarize(facts: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The flat params, metrics and tags of a run (merged over ``previous``), as kept on its
    row: listing a page of runs then reads one JSON value per run instead of three tables.
    Keys are stored sorted, so reading needs no sort."""
    before = previous or {}
    tags = {_key(str(k), "tags"): _text(v) for k, v in _section(facts, "tags").items()}
    sections = {
        "params": {**before.get("params", {}), **_flatten(_section(facts, "params"), "params")},
        "metrics": {**before.get("metrics", {}), **_metrics(facts)},
        "tags": {**before.get("tags", {}), **tags},
    }
    return {name: dict(sorted(values.items())) for name, values in sections.items()}


def _metrics(facts: Mapping[str, Any]) -> dict[str, float | None]:
    """Numeric metrics by flat name; None for a non-finite one; text and lists left out."""
    flat = _flatten(_section(facts, "metrics"), "metrics")
    return {
        k: _number(v)
        for k, v in flat.items()
        if v is None or _number(v) is not None or isinstance(v, float)
    }


def _section(facts: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = facts.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = (
            f"facts[{name!r}] must be a mapping of name -> value, got {type(value).__name__}; "
            f"e.g. facts[{name!r}] = {{'roc_auc': 0.91}}"
        )
        raise ConfigError(msg, field=f"facts.{name}")
    return value


def _flatten(section: Mapping[str, Any], where: str, depth: int = 0) -> dict[str, Any]:
    """Nested mappings become dotted names: {"validation": {"auc": [...]}} -> "validation.auc"."""
    flat: dict[str, Any] = {}
    for name, value in section.items():
        key = _key(str(name), where)
        if isinstance(value, Mapping) and depth < _MAX_FLATTEN_DEPTH:
            for sub, inner in _flatten(value, where, depth + 1).items():
                flat[_key(f"{key}.{sub}", where)] = inner
        else:
            flat[key] = value
    return flat


def _key(name: str, where: str) -> str:
    if not name or len(name) > KEY_LENGTH:
        msg = f"facts[{where!r}]: name {name[:60]!r} must be 1-{KEY_LENGTH} characters"
        raise ConfigError(msg, field=f"facts.{where}")
    return name


def _number(value: Any) -> float | None:
    """A finite float for a number (facts are plain JSON by now), None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _param_row(run_id: str, key: str, value: Any) -> dict[str, Any]:
    number = None if isinstance(value, bool) else _number(value)
    return {"run_id": run_id, "key": key, "value": _text(value), "number": number}


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    return text[:VALUE_LENGTH]


# -- reading -----------------------------------------------------------------------------------


def search(
    conn: sa.Connection, conditions: Sequence[Condition], order: Sequence[Order], limit: int
) -> list[sa.RowMapping]:
    """The rows (all columns of ``runs``) of the runs matching every condition, sorted, at
    most ``limit``: the page comes back from this one query, with no second lookup by id.

    The query walks one index and probes the rest by primary key, stopping after ``limit``
    matches: the index of a selective condition (fewer than ``SELECTIVE`` matches, counted
    with a bounded index scan) when there is one, else the index of the first sort key, so
    "sort by a metric" and "newest runs matching" never sort the whole table. Sorting by a
    metric, param or tag lists only runs that have it. Comparisons are bound parameters.
    """
    where: list[Any] = [_compare(c, ATTRIBUTES[c.key]) for c in conditions if c.namespace == "run"]
    counts = {c: _count(conn, c) for c in conditions if c.namespace != "run"}
    # Probes cheapest-to-fail first: fewest matches, then equality before ranges.
    facts = sorted(counts, key=lambda c: (counts[c], _OP_RANK.get(c.op, 1)))
    driver = (facts[0].namespace, facts[0].key) if facts and counts[facts[0]] < SELECTIVE else None
    if driver is None and order and order[0].namespace != "run":
        driver = (order[0].namespace, order[0].key)
    frm: Any = runs
    alias: Any = None
    if driver is not None:
        alias = _TABLES[driver[0]].alias("d")
        frm = runs.join(alias, sa.and_(alias.c.run_id == runs.c.id, alias.c.key == driver[1]))
    for condition in facts:
        if driver == (condition.namespace, condition.key):
            where.append(_compare(condition, _fact_column(alias, condition)))
        else:
            where.append(_exists(condition))
    ordering = [term for o in order for term in _order_by(o, driver, alias, where)]
    query = (
        sa.select(runs)
        .select_from(frm)
        .where(*where)
        .order_by(*(ordering or [runs.c.started_at.desc()]))
        .limit(limit)
    )
    return list(conn.execute(query).mappings().all())


SELECTIVE = 5000
"""A condition with fewer matches than this drives the search from its index."""
_TABLES = {"metrics": run_metrics, "params": run_params, "tags": run_tags}
_OP_RANK = {"=": 0, "in": 0, "!=": 2}


def _count(conn: sa.Connection, condition: Condition) -> int:
    """How many runs match one condition, counting at most ``SELECTIVE`` (an index scan)."""
    table = _TABLES[condition.namespace]
    matching = (
        sa.select(sa.literal(1))
        .where(table.c.key == condition.key, _compare(condition, _fact_column(table, condition)))
        .limit(SELECTIVE)
        .subquery()
    )
    return conn.scalar(sa.select(sa.func.count()).select_from(matching)) or 0


def _exists(condition: Condition) -> sa.ColumnElement[bool]:
    table = _TABLES[condition.namespace]
    probe = sa.select(sa.literal(1)).where(
        table.c.run_id == runs.c.id,
        table.c.key == condition.key,
        _compare(condition, _fact_column(table, condition)),
    )
    return sa.exists(probe)


def _fact_column(table: Any, condition: Condition) -> Any:
    if condition.namespace == "params":
        value = condition.value
        sample = value[0] if isinstance(value, tuple) and value else value
        numeric = isinstance(sample, int | float) and not isinstance(sample, bool)
        return table.c.number if numeric else table.c.value
    return table.c.value


def _compare(condition: Condition, column: Any) -> sa.ColumnElement[bool]:
    value = condition.value
    if condition.op == "in":
        assert isinstance(value, tuple)
        values = [_bindable(condition.namespace, v) for v in value]
        return cast(sa.ColumnElement[bool], column.in_(values))
    bound = _bindable(condition.namespace, value)
    return cast(sa.ColumnElement[bool], _OPS[condition.op](column, bound))


def _bindable(namespace: str, value: Any) -> Any:
    if namespace in ("params", "tags") and (isinstance(value, bool) or value is None):
        return json.dumps(value)
    if namespace == "tags" and not isinstance(value, str):
        return _text(value)
    return value


def _order_by(
    order: Order, driver: tuple[str, str] | None, alias: Any, where: list[Any]
) -> list[Any]:
    """Sort terms; missing values sort last on every database (PostgreSQL puts NULL first)."""

    def direct(column: Any) -> Any:
        return column.desc() if order.descending else column.asc()

    if order.namespace == "run":
        column = ATTRIBUTES[order.key]
        return [direct(column) if not column.nullable else direct(column).nulls_last()]
    if driver == (order.namespace, order.key):
        table = alias
    else:
        # Sorting by a fact lists only the runs that have it.
        table = _TABLES[order.namespace].alias(f"s{len(where)}")
        present = [table.c.run_id == runs.c.id, table.c.key == order.key]
        if order.namespace == "metrics":
            present.append(table.c.value.is_not(None))
        where.append(sa.exists(sa.select(sa.literal(1)).where(*present)))
        scalar = sa.select(table.c.number if order.namespace == "params" else table.c.value)
        value_of = scalar.where(table.c.run_id == runs.c.id, table.c.key == order.key)
        return [direct(value_of.scalar_subquery())]
    if order.namespace == "params":
        return [direct(table.c.number).nulls_last(), direct(table.c.value)]
    # Leaving out null metrics (non-finite values) keeps the walk of the (key, value, run_id)
    # index in order on SQLite, where NULLS LAST would force a sort.
    if order.namespace == "metrics":
        where.append(table.c.value.is_not(None))
    return [direct(table.c.value)]


def load_details(
    conn: sa.Connection,
    loaded: Sequence[tuple[Run, sa.RowMapping, dict[str, str]]],
    *,
    full: bool = False,
) -> list[TrackedRun]:
    """Attach params, metrics, tags, duration and snapshots (and with ``full`` also the
    metric history and the environment) to runs loaded with their table rows and input
    snapshots, in order."""
    tracked = []
    for run, row, snapshots in loaded:
        summary = row["summary"] or {}
        tracked.append(
            TrackedRun(
                run=run,
                duration_seconds=row["duration_seconds"],
                params=summary.get("params", {}),  # sorted when written (summarize)
                metrics=summary.get("metrics", {}),
                tags=summary.get("tags", {}),
                history=_history(conn, run.id) if full else None,
                environment=_environment(conn, row["environment_id"]) if full else None,
                snapshots=dict(sorted(snapshots.items())),
            )
        )
    return tracked


def _history(conn: sa.Connection, run_id: str) -> dict[str, list[float | None]]:
    query = (
        sa.select(run_metric_history.c.key, run_metric_history.c.value)
        .where(run_metric_history.c.run_id == run_id)
        .order_by(run_metric_history.c.key, run_metric_history.c.iteration)
    )
    curves: dict[str, list[float | None]] = {}
    for key, value in conn.execute(query):
        curves.setdefault(key, []).append(value)
    return curves


def _environment(conn: sa.Connection, env_id: str | None) -> dict[str, Any] | None:
    if env_id is None:
        return None
    data = conn.scalar(sa.select(environments.c.data).where(environments.c.id == env_id))
    return dict(data) if data is not None else None
