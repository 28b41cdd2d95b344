"""Delayed labels: a batch of ground-truth labels checked, joined to predictions and stored.

Each item names its prediction by ``request_id`` (and ``instance``, its position in a request of
several instances, default 0) or by ``key`` (the columns of ``monitor.feedback.key``), and
carries a ``label``. :func:`submit_labels` answers every item on its own, in order:

- ``accepted``: stored as the prediction's label;
- ``replaced``: a second label for a prediction when ``on_duplicate`` is ``replace`` (the first
  is kept in the store, marked replaced);
- ``rejected`` with the reason: a missing or unknown field, a label outside the target's values
  (not a number, for regression), a request id or key no logged prediction has, an instance
  past the request's, or a second label when ``on_duplicate`` is ``reject``.

A rejected item is never stored, so nothing it carries reaches a window. Whether a request id
is known is answered first by the server's :class:`RecentIds` (ids it issued lately, bounded),
then by streaming the prediction log's request ids (only the day folders within
``monitor.feedback.max_delay`` of now; one block in memory at a time).
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import DataValidationError
from keel.monitor.counts import booleans, strings
from keel.monitor.labelled import Lookup, canonical_value, joined_key, key_hash, read_logged
from keel.monitor.window import LogFilter, parse_window
from keel.store.database import Database
from keel.store.feedback_store import LabelRow, store_labels
from keel.validate.arrays import from_numpy

__all__ = [
    "MAX_ITEMS",
    "FeedbackResult",
    "ItemResult",
    "LabelSpec",
    "RecentIds",
    "delay_seconds",
    "submit_labels",
]

MAX_ITEMS = 10_000  # labels per batch
RECENT_IDS = 100_000  # requests a server remembers (a ring of about 1.4 MB for its own ids)
_FIELDS = frozenset({"request_id", "instance", "key", "label"})
_MAX_ID = 200


@dataclass(frozen=True)
class LabelSpec:
    """What a label must fit: the model, its task and classes, and the key columns' types."""

    model: str
    task: str
    classes: tuple[str, ...]
    key: Mapping[str, pa.DataType]

    @classmethod
    def of(
        cls,
        model: str,
        task: str,
        classes: Sequence[str],
        inputs: Mapping[str, str],
        key: Sequence[str],
    ) -> LabelSpec:
        """From a model's inputs (name -> kind) and ``monitor.feedback.key``.

        Raises:
            DataValidationError: A key column is not one of the model's inputs.
        """
        from keel.monitor.labelled import key_arrow_types

        unknown = [k for k in key if k not in inputs]
        if unknown:
            msg = (
                f"monitor.feedback.key: {unknown} are not inputs of {model}; its inputs: "
                f"{list(inputs)}."
            )
            raise DataValidationError(msg, field="monitor.feedback.key")
        return cls(model, task, tuple(classes), key_arrow_types(dict(inputs), tuple(key)))


@dataclass(frozen=True)
class ItemResult:
    """One item's answer: its position in the batch, status, and why (when rejected)."""

    index: int
    status: Literal["accepted", "replaced", "rejected"]
    reason: str = ""
    id: int | None = None
    replaced: int | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``reason`` only when rejected, ``replaced`` only when replaced)."""
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.request_id is not None:
            out["request_id"] = self.request_id
        if self.id is not None:
            out["id"] = self.id
        if self.replaced is not None:
            out["replaced"] = self.replaced
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class FeedbackResult:
    """A batch's answers, one per item in order."""

    model: str
    items: tuple[ItemResult, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Items per status."""
        out = {"accepted": 0, "replaced": 0, "rejected": 0}
        for item in self.items:
            out[item.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "model": self.model,
            "counts": self.counts,
            "items": [item.to_dict() for item in self.items],
        }


class RecentIds:
    """The request ids (and key hashes) a server issued lately: bounded, oldest forgotten first.

    The ids the server made itself (``serial``: :meth:`keel.serve.request_ids.RequestIds.serial`)
    go in a ring indexed by their serial: three preallocated arrays (serial, instance count,
    model), one slot written per request, no object kept per id, so remembering costs a few
    writes to memory that stays warm instead of an ever-churning table of strings. Other ids
    (a client's own ``Keel-Request-Id``) and key hashes go in two generations of dicts: the
    newer one fills to half the capacity, then the older is dropped and the newer becomes it.
    Either way the last ``capacity // 2`` requests at least are remembered, ``capacity`` at
    most. Safe to call from the server's worker threads.

    Args:
        capacity: how many requests to remember.
        serial: the serial of an id this server made, else None (without it: dicts only).
    """

    def __init__(
        self, capacity: int = RECENT_IDS, serial: Callable[[str], int | None] | None = None
    ) -> None:
        self.capacity = capacity
        self._serial = serial
        slots = capacity if serial is not None else 0  # no ring without serials
        self._serials = array("q", [0]) * slots
        self._counts = array("I", [0]) * slots
        self._models = array("H", [0]) * slots
        self._model_index: dict[str, int] = {}
        self._model_names: list[str] = []
        self._top = 0  # the highest serial in the ring
        self._half = max(1, capacity // 2)
        self._ids: tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]] = ({}, {})
        self._keys: tuple[set[tuple[str, str]], set[tuple[str, str]]] = (set(), set())
        self._lock = threading.Lock()

    def add(
        self,
        model: str,
        request_id: str,
        instances: Sequence[Any],
        key: Mapping[str, pa.DataType] | None = None,
    ) -> None:
        """Remember a served request: its id, instance count and (with ``key``) key hashes."""
        self.add_many(model, [(request_id, instances)], key)

    def add_many(
        self,
        model: str,
        served: Sequence[tuple[str, Sequence[Any]]],
        key: Mapping[str, pa.DataType] | None = None,
    ) -> None:
        """Remember served requests, as (request id, instances), with one lock."""
        hashes: list[str] = []
        if key:
            for _, instances in served:
                for row in instances:
                    values = _key_values(row, key) if isinstance(row, Mapping) else None
                    if values is not None:
                        hashes.append(key_hash(values))
        serial, capacity = self._serial, self.capacity
        with self._lock:
            index = self._model_index.get(model)
            if index is None:
                index = self._model_index[model] = len(self._model_names)
                self._model_names.append(model)
            if index >= 65_536:  # past what a slot's model field holds: dicts only
                serial = None
            for request_id, instances in served:
                number = serial(request_id) if serial is not None else None
                if number is not None and number > self._top - capacity:
                    slot = number % capacity
                    self._serials[slot] = number
                    self._counts[slot] = len(instances)
                    self._models[slot] = index
                    if number > self._top:
                        self._top = number
                else:
                    self._remember_id((model, request_id), len(instances))
            for hashed in hashes:
                self._remember_key((model, hashed))

    def _remember_id(self, entry: tuple[str, str], count: int) -> None:
        newer, older = self._ids
        newer[entry] = count
        older.pop(entry, None)  # newer alone holds it: the generations' sizes stay bounded
        if len(newer) >= self._half:
            self._ids = ({}, newer)

    def _remember_key(self, entry: tuple[str, str]) -> None:
        newer, older = self._keys
        newer.add(entry)
        older.discard(entry)
        if len(newer) >= self._half:
            self._keys = (set(), newer)

    def instances(self, model: str, request_id: str) -> int | None:
        """The instance count of a remembered request, else None."""
        with self._lock:
            number = self._serial(request_id) if self._serial is not None else None
            if number is not None and number > self._top - self.capacity:
                slot = number % self.capacity
                if self._serials[slot] == number and self._model_names[self._models[slot]] == model:
                    return int(self._counts[slot])
            newer, older = self._ids
            entry = (model, request_id)
            found = newer.get(entry)
            return older.get(entry) if found is None else found

    def has_key(self, model: str, hashed: str) -> bool:
        """Whether a served instance had this key hash lately."""
        entry = (model, hashed)
        newer, older = self._keys
        return entry in newer or entry in older


def delay_seconds(max_delay: str) -> int:
    """``monitor.feedback.max_delay`` in seconds."""
    return parse_window(max_delay, field="monitor.feedback.max_delay").size


@dataclass
class _Item:
    index: int
    row: LabelRow | None = None
    reason: str = ""


def submit_labels(
    db: Database,
    spec: LabelSpec,
    items: Sequence[Any],
    *,
    log_dir: Path,
    on_duplicate: Literal["reject", "replace"] = "reject",
    max_delay: str = "30d",
    recent: RecentIds | None = None,
    source: str = "api",
    now: float | None = None,
) -> FeedbackResult:
    """Check, join and store a batch of labels; every item gets its own answer.

    Args:
        db: The metadata database (labels are stored there).
        spec: What a label must fit (:meth:`LabelSpec.of`).
        items: ``{"request_id", "label"[, "instance"]}`` or ``{"key": {...}, "label"}`` each.
        log_dir: The prediction log's root (unknown ids are looked up there).
        on_duplicate: A second label for a prediction: ``reject`` it or ``replace`` the first.
        max_delay: How far back the log is searched (``30d``).
        recent: The server's recently issued request ids, searched before the log.
        source: Where the labels came from (``http``, ``file``, ``api``), stored with them.
        now: The current time (seconds; tests pass their own).

    Raises:
        DataValidationError: More than :data:`MAX_ITEMS` items (split the batch).
    """
    if len(items) > MAX_ITEMS:
        msg = (
            f"at most {MAX_ITEMS} labels per batch; got {len(items)}. Send them in smaller "
            "batches (keel feedback splits a file for you)."
        )
        raise DataValidationError(msg, field="labels")
    parsed = [_parse(i, item, spec) for i, item in enumerate(items)]
    since = (time.time() if now is None else now) - delay_seconds(max_delay)
    _check_known(parsed, spec, log_dir, recent, since)
    valid = [p for p in parsed if p.row is not None and not p.reason]
    stored = store_labels(
        db,
        spec.model,
        [p.row for p in valid if p.row is not None],
        replace=on_duplicate == "replace",
        source=source,
    )
    answers: dict[int, ItemResult] = {}
    for item, outcome in zip(valid, stored, strict=True):
        rid = item.row.request_id if item.row is not None else None
        if outcome.outcome == "duplicate":
            reason = (
                f"this prediction already has a label (feedback id {outcome.previous}); "
                "monitor.feedback.on_duplicate is 'reject' (set 'replace' to overwrite)."
            )
            answers[item.index] = ItemResult(item.index, "rejected", reason, request_id=rid)
        else:
            answers[item.index] = ItemResult(
                item.index, outcome.outcome, "", outcome.id, outcome.previous, rid
            )
    results = [
        answers.get(p.index)
        or ItemResult(p.index, "rejected", p.reason, request_id=_rid(items[p.index]))
        for p in parsed
    ]
    return FeedbackResult(spec.model, tuple(results))


def _rid(item: Any) -> str | None:
    value = item.get("request_id") if isinstance(item, Mapping) else None
    return value if isinstance(value, str) and len(value) <= _MAX_ID else None


def _parse(index: int, item: Any, spec: LabelSpec) -> _Item:
    """An item's fields checked; ``reason`` says what is wrong."""
    if not isinstance(item, Mapping):
        return _Item(index, reason='an item must be an object: {"request_id": ..., "label": ...}.')
    unknown = sorted(str(k) for k in item if k not in _FIELDS)
    if unknown:
        return _Item(index, reason=f"unknown field(s) {unknown}; an item has {sorted(_FIELDS)}.")
    if "label" not in item:
        return _Item(index, reason=f"missing field 'label'; {_accepted(spec)}.")
    if item["label"] is None:
        return _Item(
            index,
            reason=f"'label' is null: a label is the outcome observed; {_accepted(spec)} "
            "(send the item once the outcome is known).",
        )
    label, problem = _label(item["label"], spec)
    if problem:
        return _Item(index, reason=problem)
    has_id, has_key = item.get("request_id") is not None, item.get("key") is not None
    if has_id == has_key:
        return _Item(index, reason="give either 'request_id' or 'key' (not both, not neither).")
    if has_id:
        rid = item["request_id"]
        if not isinstance(rid, str) or not rid or len(rid) > _MAX_ID:
            return _Item(index, reason=f"'request_id' must be text of 1-{_MAX_ID} characters.")
        instance = item.get("instance", 0)
        if isinstance(instance, bool) or not isinstance(instance, int) or instance < 0:
            return _Item(index, reason=f"'instance' must be a whole number >= 0; got {instance!r}.")
        return _Item(index, LabelRow(label, request_id=rid, instance=instance))
    key = item["key"]
    if not spec.key:
        return _Item(
            index,
            reason=f"{spec.model} takes labels by request id only: set monitor.feedback.key "
            "in keel.yaml to join labels by key columns.",
        )
    if not isinstance(key, Mapping) or set(key) != set(spec.key):
        return _Item(index, reason=f"'key' must name exactly the columns {list(spec.key)}.")
    values = _key_values(key, spec.key)
    if values is None:
        bad = next(n for n, t in spec.key.items() if canonical_value(key[n], t) is None)
        kind = {"double": "number", "bool": "true or false"}.get(str(spec.key[bad]), "text")
        return _Item(index, reason=f"key.{bad}: {key[bad]!r} is not a {kind} (or is missing).")
    canonical = dict(zip(spec.key, values, strict=True))
    return _Item(index, LabelRow(label, key=canonical, key_hash=key_hash(values)))


def _key_values(row: Mapping[str, Any], key: Mapping[str, pa.DataType]) -> list[Any] | None:
    values = [canonical_value(row.get(name), t) for name, t in key.items()]
    return None if any(v is None for v in values) else values


def _accepted(spec: LabelSpec) -> str:
    """What a label may be, for a message."""
    if spec.task == "regression":
        return "it takes a finite number (the target is a regression)"
    shown = ", ".join(spec.classes[:20]) + (", ..." if len(spec.classes) > 20 else "")
    return f"it takes one of the target's values ({shown})"


def _label(value: Any, spec: LabelSpec) -> tuple[Any, str]:
    """The label as stored (a class name, or a float), or the reason it is refused."""
    if spec.task == "regression":
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            return None, f"label {value!r} is not a finite number (the target is a regression)."
        return number, ""
    if isinstance(value, Mapping | list):
        return None, f"label must be one of the target's values {list(spec.classes)}."
    text = canonical_value(value, pa.string())
    if text in spec.classes:
        return text, ""
    folded = {c.lower(): c for c in spec.classes}
    if isinstance(text, str) and text.lower() in folded:
        return folded[text.lower()], ""
    shown = ", ".join(spec.classes[:20])
    return None, f"label {value!r} is not one of the target's values ({shown})."


def _check_known(
    items: list[_Item],
    spec: LabelSpec,
    log_dir: Path,
    recent: RecentIds | None,
    since: float,
) -> None:
    """Reject items whose prediction no logged (or recently served) request has."""
    wanted_ids: dict[str, int] = {}
    wanted_keys: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.row is None:
            continue
        if item.row.request_id is not None:
            known = None if recent is None else recent.instances(spec.model, item.row.request_id)
            wanted_ids.setdefault(item.row.request_id, -1 if known is None else known)
        elif (
            item.row.key_hash is not None
            and item.row.key is not None
            and (recent is None or not recent.has_key(spec.model, item.row.key_hash))
        ):
            wanted_keys[item.row.key_hash] = item.row.key
    missing = [rid for rid, n in wanted_ids.items() if n < 0]
    found_keys: set[str] = set()
    if missing or wanted_keys:
        found_ids, found_keys = _search_log(spec, log_dir, missing, wanted_keys, since)
        wanted_ids.update(found_ids)
    for item in items:
        row = item.row
        if row is None:
            continue
        if row.request_id is not None:
            count = wanted_ids.get(row.request_id, -1)
            if count < 0:
                item.reason = (
                    f"unknown request id '{row.request_id}': no prediction of {spec.model} "
                    "within monitor.feedback.max_delay has it."
                )
            elif row.instance >= count:
                item.reason = (
                    f"request '{row.request_id}' had {count} instance(s); instance "
                    f"{row.instance} is out of range."
                )
        elif row.key_hash in wanted_keys and row.key_hash not in found_keys:
            item.reason = (
                f"no prediction of {spec.model} within monitor.feedback.max_delay has the key "
                f"{row.key}."
            )


def _search_log(
    spec: LabelSpec,
    log_dir: Path,
    ids: list[str],
    keys: dict[str, dict[str, Any]],
    since: float,
) -> tuple[dict[str, int], set[str]]:
    """Stream the log since ``since``: each wanted id's instance count, and the keys found."""
    found: dict[str, int] = {}
    found_keys: set[str] = set()
    id_set = strings(ids) if ids else None
    hashes = list(keys)
    key_lookup = None
    if hashes:
        columns = [pa.array([keys[h][name] for h in hashes], t) for name, t in spec.key.items()]
        key_lookup = Lookup(joined_key(columns), np.arange(len(hashes), dtype=np.int64))
    blocks = read_logged(
        log_dir,
        spec.model,
        select=LogFilter(since=since),
        keys=dict(spec.key) if key_lookup is not None else None,
        prediction_type=pa.float64() if spec.task == "regression" else pa.string(),
    )
    for block in blocks:
        if id_set is not None:
            hit = np.flatnonzero(booleans(pc.is_in(block.request_id, value_set=id_set)))
            if hit.size:
                rids = block.request_id.take(from_numpy(hit.astype(np.int64))).to_pylist()
                for rid, instance in zip(rids, block.instance[hit].tolist(), strict=True):
                    found[rid] = max(found.get(rid, 0), int(instance) + 1)
        if key_lookup is not None and block.keys.num_columns:
            for label in key_lookup.find(list(block.keys.columns))[1].tolist():
                found_keys.add(hashes[int(label)])
        if len(found) == len(ids) and len(found_keys) == len(hashes):
            break
    return found, found_keys
