"""Live labels as columns, for joining to the prediction log in bounded memory.

A label is held as a few dozen bytes in Arrow and NumPy arrays, never as a Python object: its
join key (request id and instance, :func:`~keel.monitor.labelled.joined_key`) in a
:class:`~keel.monitor.labelled.Lookup` built once, and its value (class name or number) in one
column. :func:`read_label_table` streams the ``feedback`` table in chunks of
:data:`CHUNK_ROWS` straight into those columns, so a million labels take about 100 MB, not the
gigabyte that a list of row objects took; with a ``since`` it reads only labels received after
the earliest selected prediction (a label is accepted only for a prediction already logged).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from keel.monitor.counts import strings
from keel.monitor.feedback import LabelSpec
from keel.monitor.labelled import Lookup, canonical_value, joined_key
from keel.validate.arrays import from_numpy, numbers

if TYPE_CHECKING:
    from keel.store.database import Database
    from keel.store.feedback_store import LiveLabel

__all__ = ["CHUNK_ROWS", "CLOCK_SKEW_SECONDS", "LabelColumns", "LabelTable", "read_label_table"]

CHUNK_ROWS = 65_536  # labels fetched and converted at a time
CLOCK_SKEW_SECONDS = 3_600  # a label's receipt may be stamped this much before its prediction


@dataclass(frozen=True)
class LabelTable:
    """Every live label of a model, in columns; a label's index is its position (oldest first).

    ``by_id`` finds labels given by request id and instance, ``by_key`` (None when there are
    none, or the model has no key columns) those given by key columns; ``values`` holds each
    label: class names as an Arrow string array, regression values as float64 (NaN for a stored
    label that is not a number)."""

    by_id: Lookup
    by_key: Lookup | None
    values: pa.Array | np.ndarray
    count: int

    @classmethod
    def of(cls, labels: Sequence[LiveLabel], spec: LabelSpec) -> LabelTable:
        """The table of label rows already read (:func:`keel.store.feedback_store.read_live`)."""
        columns = LabelColumns(spec)
        columns.add(
            [label.request_id for label in labels],
            [label.instance for label in labels],
            [label.key for label in labels],
            [label.label for label in labels],
        )
        return columns.table()

    def take(self, index: np.ndarray) -> np.ndarray:
        """The labels at these indices: class names (object) or float64 values."""
        if isinstance(self.values, np.ndarray):
            return np.asarray(self.values[index], dtype=np.float64)
        if not len(index):
            return np.zeros(0, dtype=object)
        # one Python string per distinct class, shared by every row (8 bytes a row)
        encoded = self.values.take(from_numpy(index.astype(np.int64))).dictionary_encode()
        names = np.empty(len(encoded.dictionary), dtype=object)
        names[:] = encoded.dictionary.to_pylist()
        return np.asarray(names[numbers(encoded.indices).astype(np.int64)], dtype=object)


class LabelColumns:
    """Builds a :class:`LabelTable` chunk by chunk: each chunk becomes arrays at once."""

    def __init__(self, spec: LabelSpec) -> None:
        self._spec = spec
        self._regression = spec.task == "regression"
        self._ids: list[pa.Array] = []
        self._id_index: list[np.ndarray] = []
        self._keys: list[list[pa.Array]] = []
        self._key_index: list[np.ndarray] = []
        self._values: list[Any] = []
        self._count = 0

    def add(
        self,
        request_ids: Sequence[str | None],
        instances: Sequence[int],
        keys: Sequence[dict[str, Any] | None],
        labels: Sequence[Any],
    ) -> None:
        """One chunk of labels, in order (the columns of the ``feedback`` rows)."""
        n = len(labels)
        if None in request_ids:
            by_id = [i for i, r in enumerate(request_ids) if r is not None]
            position = np.asarray(by_id, dtype=np.int64)
            ids = strings([str(request_ids[i]) for i in by_id])
        else:  # every label of the chunk is by request id (what the database query gives)
            by_id = list(range(n))
            position = np.arange(n, dtype=np.int64)
            ids = _texts(request_ids)
        if by_id:
            at = from_numpy(np.asarray(instances, dtype=np.int64)[position])
            self._ids.append(joined_key([ids, at]))
            self._id_index.append(position + self._count)
        if self._spec.key:
            by_key = [i for i, r in enumerate(request_ids) if r is None and keys[i]]
            if by_key:
                self._keys.append(
                    [
                        pa.array([canonical_value((keys[i] or {}).get(name), t) for i in by_key], t)
                        for name, t in self._spec.key.items()
                    ]
                )
                self._key_index.append(np.asarray(by_key, dtype=np.int64) + self._count)
        if self._regression:
            self._values.append(np.array([_number(v) for v in labels], dtype=np.float64))
        else:
            self._values.append(_texts(labels))
        self._count += n

    def table(self) -> LabelTable:
        """The labels added so far."""
        empty = np.zeros(0, dtype=np.int64)
        by_id = Lookup(
            pa.concat_arrays(self._ids) if self._ids else strings([]),
            np.concatenate(self._id_index) if self._id_index else empty,
        )
        by_key = None
        if self._keys:
            columns = [pa.concat_arrays(list(c)) for c in zip(*self._keys, strict=True)]
            by_key = Lookup(joined_key(columns), np.concatenate(self._key_index))
        values: pa.Array | np.ndarray
        if self._regression:
            values = np.concatenate(self._values) if self._values else np.zeros(0)
        else:
            values = pa.concat_arrays(self._values) if self._values else strings([])
        return LabelTable(by_id, by_key, values, self._count)


def _texts(values: Sequence[Any]) -> pa.Array:
    """Values as an Arrow string array (``str`` of each that is not text already)."""
    try:
        return strings(values)  # type: ignore[arg-type]
    except TypeError:  # a value that is not text (a number or bool stored as a class)
        return strings([str(v) for v in values])


def _number(value: Any) -> float:
    """A stored regression label (NaN when a label stored for another task is not one)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_label_table(db: Database, spec: LabelSpec, *, since: float | None = None) -> LabelTable:
    """The live labels of ``spec.model``, streamed from the database in chunks.

    Labels given by request id come first, then (for a model with key columns) those given by
    key; a label's JSON is read as text and parsed a chunk at a time. ``since`` (seconds since
    the epoch): only labels received at or after it, less :data:`CLOCK_SKEW_SECONDS` (labels
    of earlier predictions cannot match a selection that starts then).
    """
    import sqlalchemy as sa

    from keel.store.tables import feedback

    live = [feedback.c.model_name == spec.model, feedback.c.status == "accepted"]
    if since is not None:
        start = datetime.fromtimestamp(max(since - CLOCK_SKEW_SECONDS, 0), UTC)
        live.append(feedback.c.received_at >= start)
    label = sa.cast(feedback.c.label, sa.Text)
    columns = LabelColumns(spec)
    with db.read() as conn:
        by_id = sa.select(feedback.c.request_id, feedback.c.instance, label).where(
            *live, feedback.c.request_id.is_not(None)
        )
        for chunk in _chunks(conn, by_id.order_by(feedback.c.id)):
            ids, instances, texts = zip(*chunk, strict=True)
            columns.add(ids, instances, [None] * len(ids), _parsed(texts))
        if spec.key:
            by_key = sa.select(feedback.c.key, label).where(*live, feedback.c.request_id.is_(None))
            for chunk in _chunks(conn, by_key.order_by(feedback.c.id)):
                keys, texts = zip(*chunk, strict=True)
                keys = tuple(orjson.loads(k) if isinstance(k, str | bytes) else k for k in keys)
                columns.add([None] * len(keys), [0] * len(keys), keys, _parsed(texts))
    return columns.table()


def _chunks(conn: Any, query: Any) -> Iterator[Sequence[tuple[Any, ...]]]:
    """The query's rows, :data:`CHUNK_ROWS` at a time. On SQLite (whose cursor steps through
    the rows as they are fetched) straight from the driver's cursor: the columns read need no
    conversion (text and integers), and building a row object each cost more than the query."""
    if conn.dialect.name != "sqlite":
        result = conn.execution_options(yield_per=CHUNK_ROWS).execute(query)
        for part in result.partitions(CHUNK_ROWS):
            yield [tuple(row) for row in part]
        return
    compiled = query.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    for name, bind in compiled.binds.items():  # the column types' own conversion of values
        convert = bind.type.bind_processor(conn.dialect)
        if convert is not None and name in params:
            params[name] = convert(params[name])
    args = [params[name] for name in compiled.positiontup] if compiled.positional else params
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(compiled), args)
        while chunk := cursor.fetchmany(CHUNK_ROWS):
            yield chunk
    finally:
        cursor.close()


def _parsed(texts: Sequence[Any]) -> list[Any]:
    """Labels stored as JSON text, parsed in one call per chunk (a driver that already parsed
    them gives the values)."""
    try:
        return list(orjson.loads("[" + ",".join(texts) + "]"))
    except (TypeError, orjson.JSONDecodeError):
        return [orjson.loads(t) if isinstance(t, str | bytes) else t for t in texts]
