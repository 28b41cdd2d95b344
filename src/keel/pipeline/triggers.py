"""Event triggers: what an event schedule watches, and whether it moved since last seen.

- ``new_data``: a declared source (``data.train``, ``data.test``) changed. Files are compared by
  name, size and modification time first, then by content (a touched but unchanged file does
  not trigger); ``sql`` and ``duckdb`` sources with ``incremental:`` by their watermark, the
  highest value of the incremental column.
- ``registry``: a model version was registered or an alias set or removed (the audit log).
- ``alert``: monitoring recorded an ``alert`` event (the ``events`` table).

Each returns a JSON cursor; the scheduler stores it with the schedule and triggers a run when
the next observation differs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.config import KeelConfig, SourceConfig, load_config
from keel.errors import ConfigError, KeelError
from keel.store.schedule_tables import EVENT_KINDS, Schedule
from keel.store.schedules import ScheduleStore

__all__ = ["Observation", "check_event", "observe", "observe_event"]

_DESCRIBED = 3
"""Events or registry changes a trigger's reason names; the rest are counted."""
_ALERT_IDS = 1000
"""New alert events whose alert ids an observation carries (a retraining policy takes the
newest alert of its rule; more than this many between two passes are not listed)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What an event schedule sees now: its new cursor, and why it differs (None: it does not);
    for ``alert``, the ids of the new alerts (``keel scheduler`` hands them to the project's
    ``retrain:`` policy)."""

    cursor: dict[str, Any]
    reason: str | None
    alert_ids: tuple[int, ...] = ()


def check_event(event: str, model: str | None, root: Path) -> None:
    """Raise ConfigError unless ``event`` is a known trigger that can watch this project.

    Raises:
        ConfigError: Unknown event; ``--model`` given for ``new_data``; a ``new_data`` source
            that cannot be watched (``sql`` or ``duckdb`` without ``incremental:``).
    """
    if event not in EVENT_KINDS:
        msg = f"unknown event {event!r} for --on; expected one of {', '.join(EVENT_KINDS)}"
        raise ConfigError(msg, field="on")
    if event == "new_data":
        if model is not None:
            raise ConfigError("--model applies to --on registry and --on alert only", field="model")
        for name, source in _sources(load_config(root)).items():
            if source.format in ("sql", "duckdb") and source.incremental is None:
                msg = (
                    f"data.{name} is a {source.format} source without incremental:, so Keel "
                    "cannot tell when it has new rows. Declare incremental.column (the column "
                    "that grows with new rows), or schedule with --cron instead."
                )
                raise ConfigError(msg, field=f"data.{name}")


def observe(
    schedule: Schedule, root: Path, store: ScheduleStore, config: KeelConfig | None = None
) -> Observation:
    """Look at what event ``schedule`` watches and compare it with its stored cursor."""
    assert schedule.event is not None
    return observe_event(
        schedule.event, schedule.event_filter, root, store, schedule.cursor, config=config
    )


def observe_event(
    event: str,
    model: str | None,
    root: Path,
    store: ScheduleStore,
    previous: dict[str, Any] | None,
    *,
    config: KeelConfig | None = None,
) -> Observation:
    """What ``event`` (about ``model``) looks like now, against the ``previous`` cursor.

    With no previous cursor (a schedule being added) the observation is the baseline and has no
    reason: what exists when a schedule is added does not trigger it.
    """
    seen = previous or {}
    alert_ids: tuple[int, ...] = ()
    if event == "new_data":
        cursor, reason = _observe_data(config or load_config(root), root, seen)
    elif event == "registry":
        cursor, reason = _observe_registry(store, model, seen)
    else:
        cursor, reason, alert_ids = _observe_alerts(store, model, seen)
    if previous is None:
        return Observation(cursor, None)
    return Observation(cursor, reason, alert_ids if reason is not None else ())


def _observe_data(
    config: KeelConfig, root: Path, previous: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    before = previous.get("sources", {})
    now: dict[str, Any] = {}
    changed = []
    for name, source in _sources(config).items():
        seen = before.get(name) or {}
        now[name] = _look(source, root, seen)
        if now[name].get("data") != seen.get("data"):
            where = source.path or source.format
            changed.append(f"data.{name} ({where})")
    reason = f"new data in {', '.join(changed)}" if changed else None
    return {"sources": now}, reason


def _look(source: SourceConfig, root: Path, seen: dict[str, Any]) -> dict[str, Any]:
    """``{"stat": ..., "data": ...}`` for a file source, ``{"data": watermark}`` otherwise."""
    if source.format in ("sql", "duckdb"):
        if source.incremental is None:
            return {"data": None}
        return {"data": _watermark(source, root)}
    from keel.data.fingerprint import resolve_files, source_fingerprint

    try:
        files = resolve_files(source, root)
    except ConfigError:
        return {"stat": "missing", "data": "missing"}
    stat = hashlib.sha256()
    for file in files:
        info = file.stat()
        stat.update(f"{file}\n{info.st_size}\n{info.st_mtime_ns}\n".encode())
    digest = stat.hexdigest()
    if digest == seen.get("stat") and "data" in seen:
        return seen  # nothing was written: skip reading the content
    try:
        content = source_fingerprint(source, root)
    except (ConfigError, OSError):  # removed or replaced while we looked
        return {"stat": "missing", "data": "missing"}
    return {"stat": digest, "data": content}


def _watermark(source: SourceConfig, root: Path) -> str | None:
    """The highest value of the incremental column, as text (None: no rows)."""
    assert source.incremental is not None and source.query is not None
    column, inner = source.incremental.column, source.query.strip().rstrip(";")
    if source.format == "duckdb":
        import tempfile

        from keel.data.scan import connect, quote_ident, sql

        with tempfile.TemporaryDirectory(prefix="keel-watch-") as tmp, connect(Path(tmp)) as con:
            con.execute(f"SET file_search_path = {sql(str(root))}")
            row = con.execute(f"SELECT max({quote_ident(column)}) FROM ({inner})").fetchone()
        return None if row is None or row[0] is None else str(row[0])
    import sqlalchemy as sa

    assert source.url is not None
    engine = sa.create_engine(source.url)
    try:
        with engine.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(column)
            value = conn.scalar(sa.text(f"SELECT max({quoted}) FROM ({inner}) AS keel_source"))
    except sa.exc.DBAPIError as exc:
        from keel.data.sqlsource import safe_url

        msg = f"{safe_url(source.url)}: cannot read the watermark of data source: {exc.orig}"
        raise KeelError(msg) from exc
    finally:
        engine.dispose()
    return None if value is None else str(value)


def _observe_registry(
    store: ScheduleStore, model: str | None, previous: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    after = int(previous.get("audit_id", 0))
    newest = store.newest_registry_change(model)
    if newest <= after:
        return {"audit_id": max(newest, after)}, None
    rows = store.registry_changes_after(after, model=model, limit=_DESCRIBED + 1)
    parts = [_describe_change(row) for row in rows[:_DESCRIBED]]
    more = " and more" if len(rows) > _DESCRIBED else ""
    return {"audit_id": newest}, f"registry: {'; '.join(parts)}{more}"


def _describe_change(row: dict[str, Any]) -> str:
    details = row.get("details") or {}
    if row["action"] == "register":
        return f"{row['target']} version {details.get('version')} registered"
    if row["action"] in ("set_alias", "promote", "rollback"):
        return f"{row['target']}@{details.get('alias')} -> version {details.get('version')}"
    return f"{row['target']}@{details.get('alias')} removed"


def _observe_alerts(
    store: ScheduleStore, model: str | None, previous: dict[str, Any]
) -> tuple[dict[str, Any], str | None, tuple[int, ...]]:
    after = int(previous.get("event_id", 0))
    newest = store.newest_event_id("alert", model)
    if newest <= after:
        return {"event_id": max(newest, after)}, None, ()
    found = store.events_after("alert", after, subject=model, limit=_ALERT_IDS)
    parts = [
        f"{e.subject}: {e.payload.get('message') or e.payload.get('rule') or 'alert'}"
        for e in found[:_DESCRIBED]
    ]
    more = " and more" if len(found) > _DESCRIBED else ""
    ids = tuple(int(e.payload["alert_id"]) for e in found
                if isinstance(e.payload.get("alert_id"), int))  # fmt: skip
    return {"event_id": newest}, f"alert: {'; '.join(parts)}{more}", ids


def _sources(config: KeelConfig) -> dict[str, SourceConfig]:
    found = {"train": config.data.train}
    if config.data.test is not None:
        found["test"] = config.data.test
    return found
