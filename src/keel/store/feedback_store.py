"""Stored labels (``feedback``): one live label per prediction, replaced ones kept.

A label names its prediction by request id and the instance's position in that request, or by
a hash of its key columns. :func:`store_labels` decides and writes a whole batch in one
transaction: a label for a prediction that already has a live one is a duplicate (refused, or
with ``replace`` the old one is marked replaced and points at the new one). The unique
constraints on ``(model_name, live_request, instance)`` and ``(model_name, live_key)`` make two
writers unable to store two live labels for one prediction; the loser's batch is decided again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from keel.store.database import Database
from keel.store.tables import feedback, utc_now

__all__ = ["LabelRow", "LiveLabel", "Stored", "count_live", "read_live", "store_labels"]

_CHUNK = 500  # ids per IN (...) query: below every database's parameter limit


@dataclass(frozen=True)
class LabelRow:
    """A label to store: its prediction (request id and instance, or key) and its value."""

    label: Any
    request_id: str | None = None
    instance: int = 0
    key: dict[str, Any] | None = None
    key_hash: str | None = None


@dataclass(frozen=True)
class Stored:
    """What became of one :class:`LabelRow`: stored (``id``), replacing ``previous``, or a
    duplicate of the live label ``previous`` (not stored)."""

    outcome: Literal["accepted", "replaced", "duplicate"]
    id: int | None
    previous: int | None = None


@dataclass(frozen=True)
class LiveLabel:
    """A live label as the join reads it."""

    id: int
    request_id: str | None
    instance: int
    key: dict[str, Any] | None
    label: Any


def store_labels(
    db: Database, model: str, rows: Sequence[LabelRow], *, replace: bool, source: str
) -> list[Stored]:
    """Store a batch of labels for ``model`` in one transaction; one answer per row, in order.

    A second label for a prediction (already stored, or earlier in the same batch) is a
    ``duplicate`` unless ``replace``, which marks the live one replaced and stores the new one.
    """
    try:
        return _store(db, model, rows, replace=replace, source=source)
    except sa.exc.IntegrityError:  # a concurrent writer stored a label first: decide again
        return _store(db, model, rows, replace=replace, source=source)


def _store(
    db: Database, model: str, rows: Sequence[LabelRow], *, replace: bool, source: str
) -> list[Stored]:
    now = utc_now()
    answers: list[Stored] = []
    with db.write() as conn:
        live = _live_ids(conn, model, rows)
        for row in rows:
            slot = _slot(row)
            previous = live.get(slot)
            if previous is not None and not replace:
                answers.append(Stored("duplicate", None, previous))
                continue
            if previous is not None:  # free the live slot before the new label takes it
                conn.execute(
                    feedback.update()
                    .where(feedback.c.id == previous)
                    .values(status="replaced", live_request=None, live_key=None)
                )
            inserted = conn.execute(
                feedback.insert().values(
                    model_name=model,
                    request_id=row.request_id,
                    instance=row.instance,
                    key=row.key,
                    key_hash=row.key_hash,
                    label=row.label,
                    received_at=now,
                    source=source,
                    status="accepted",
                    replaced_by=None,
                    live_request=row.request_id,
                    live_key=row.key_hash,
                )
            ).inserted_primary_key
            assert inserted is not None
            new_id = int(inserted[0])
            if previous is not None:
                conn.execute(
                    feedback.update().where(feedback.c.id == previous).values(replaced_by=new_id)
                )
            live[slot] = int(new_id)
            answers.append(
                Stored("replaced" if previous is not None else "accepted", int(new_id), previous)
            )
    return answers


def _slot(row: LabelRow) -> tuple[str, str, int]:
    if row.request_id is not None:
        return ("request", row.request_id, row.instance)
    return ("key", row.key_hash or "", 0)


def _live_ids(
    conn: sa.Connection, model: str, rows: Sequence[LabelRow]
) -> dict[tuple[str, str, int], int]:
    """The live label of each prediction the batch names, by slot."""
    found: dict[tuple[str, str, int], int] = {}
    requests = sorted({r.request_id for r in rows if r.request_id is not None})
    keys = sorted({r.key_hash for r in rows if r.request_id is None and r.key_hash})
    for chunk in _chunks(requests):
        query = sa.select(feedback.c.id, feedback.c.live_request, feedback.c.instance).where(
            feedback.c.model_name == model, feedback.c.live_request.in_(chunk)
        )
        for id_, request_id, instance in conn.execute(query):
            found[("request", request_id, int(instance))] = int(id_)
    for chunk in _chunks(keys):
        by_key = sa.select(feedback.c.id, feedback.c.live_key).where(
            feedback.c.model_name == model, feedback.c.live_key.in_(chunk)
        )
        for id_, hashed in conn.execute(by_key):
            found[("key", str(hashed), 0)] = int(id_)
    return found


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def count_live(db: Database, model: str) -> int:
    """How many live labels ``model`` has (0: realised performance has nothing to join)."""
    with db.read() as conn:
        query = sa.select(sa.func.count()).where(
            feedback.c.model_name == model, feedback.c.status == "accepted"
        )
        return int(conn.scalar(query) or 0)


def read_live(db: Database, model: str) -> list[LiveLabel]:
    """Every live label of ``model``, oldest first."""
    query = (
        sa.select(
            feedback.c.id,
            feedback.c.request_id,
            feedback.c.instance,
            feedback.c.key,
            feedback.c.label,
        )
        .where(feedback.c.model_name == model, feedback.c.status == "accepted")
        .order_by(feedback.c.id)
    )
    with db.read() as conn:
        return [
            LiveLabel(int(id_), request_id, int(instance), key, label)
            for id_, request_id, instance, key, label in conn.execute(query)
        ]
