"""The labelled rows a retraining policy adds to the training data (:mod:`keel.pipeline.retrain`).

- :func:`labelled_window` reads the logged inputs of the predictions that have a live feedback
  label, with the label as the target and each row's request id and instance (the row's
  identity in the log).
- :func:`accumulate` joins them to the rows of the model's previous policy run (its stored
  labelled snapshot, named in its ``retrain`` event), de-duplicated by request id and instance,
  the newest label winning: run k's snapshot holds run k-1's rows too, so rows that left the
  ``labelled_since`` span are not forgotten, and the same rows give the same bytes (sorted by
  their identity) and so the same cached pipeline.
- :func:`add_labelled_rows` (the ``labelled_rows`` step) checks each row against the training
  schema before it is used (:func:`check_rows`): a row with a value of the wrong type, a null
  where the schema forbids one, no usable label, or a value outside the schema's range or
  categories where the schema makes that an error is left out, counted per reason in the step's
  facts and in the training snapshot's ``retrain`` metadata.

**Never trained on what they are tested on.** A labelled row whose feature values and label
equal a row of the test side (:func:`equal_rows`: exact, vectorised) is left out of training,
counted as ``rows_equal_to_test`` in the step's facts, its warnings ("left out: N equal to test
rows") and the ``retrain`` metadata: production traffic often holds the test rows themselves (a
user predicts the test file, then sends its labels back), and training on them would make the
evaluation and the champion comparison, both on the test rows, optimistic.

- With a declared ``data.test`` the test side is that file, unchanged: labelled rows only train.
- Without it (the ``split`` step), the split runs on the declared training data alone, as in
  ``keel run``, so the original test rows are the same in every retrain; then the split's rule
  decides each labelled row's side (:func:`keel.pipeline.holdout.labelled_test_side`: by its
  identity, group or time, so a row keeps its side across retrains), and the step writes the
  test side too, with its production rows (``rows_to_test``): the champion and the challenger
  are judged on the distribution they serve as well. A row the rule sends to the test side but
  equal to a declared training row trains instead (``rows_equal_to_train``): the model has seen
  it. Duplicates among the labelled rows themselves follow the first rule: the copy on the
  training side of a row on the test side is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from keel.pipeline.declare import step
from keel.types import Artifact

if TYPE_CHECKING:
    from keel.project import Project
    from keel.validate.schema import Schema

__all__ = [
    "INSTANCE",
    "LABELLED_STEP",
    "REQUEST_ID",
    "accumulate",
    "add_labelled_rows",
    "check_rows",
    "equal_rows",
    "labelled_window",
    "previous_labelled",
]

LABELLED_STEP = "labelled_rows"
"""The step a policy run adds: it appends the labelled window to the training snapshot."""
REQUEST_ID = "__keel_request_id"
INSTANCE = "__keel_instance"
"""The identity of a labelled row in the prediction log (never appended to the training data)."""


def labelled_window(project: Project, name: str, since: float) -> pa.Table:
    """The logged inputs of ``name``'s predictions made at or after ``since`` (epoch seconds)
    that have a live label, with the label in a column named like ``data.target`` and the row's
    identity in :data:`REQUEST_ID` and :data:`INSTANCE`. With ``split.method: time`` by a
    column the model does not read (requests do not carry it), each row gets the time its
    prediction was served in that column: the training and validation splits of the retrained
    model need every row's time.

    Memory holds the labels and one log block at a time, plus the matched rows.

    Raises:
        NotFoundError: No model of that name.
    """
    from keel.features.pipeline import FeaturePipeline
    from keel.monitor.feedback import LabelSpec
    from keel.monitor.labelled import (
        Lookup,
        canonical_value,
        joined_key,
        key_arrow_types,
        read_logged,
    )
    from keel.monitor.window import LogFilter
    from keel.store.feedback_store import read_live
    from keel.validate.arrays import from_numpy

    resolved = project.metadata.resolve(name)
    manifest = orjson.loads(project.artifacts.get(resolved.package_sha256))
    inputs = dict(FeaturePipeline.from_state(manifest["features"]).inputs)
    key = tuple(project.config.monitor.feedback.key)
    spec = LabelSpec.of(resolved.name, str(manifest.get("task", "binary")),
                        [str(c) for c in manifest.get("classes", [])], inputs, key)  # fmt: skip
    labels = read_live(project.metadata.database, resolved.name)
    target = project.config.data.target
    by_id = [i for i, label in enumerate(labels) if label.request_id is not None]
    ids = Lookup(
        joined_key([pa.array([str(labels[i].request_id) for i in by_id], pa.string()),
                    from_numpy(np.array([labels[i].instance for i in by_id], dtype=np.int64))]),
        np.array(by_id, dtype=np.int64),
    )  # fmt: skip
    by_key = [i for i, label in enumerate(labels) if label.request_id is None and label.key]
    keys = None
    if by_key and spec.key:
        columns = [
            pa.array([canonical_value((labels[i].key or {}).get(n), t) for i in by_key], t)
            for n, t in spec.key.items()
        ]
        keys = Lookup(joined_key(columns), np.array(by_key, dtype=np.int64))
    types = key_arrow_types(inputs, tuple(inputs))
    split = project.config.split
    stamp = split.column if split.method == "time" and split.column not in inputs else None
    parts: list[pa.Table] = []
    chosen: list[np.ndarray] = []
    log_dir = Path(project.predictions_dir)
    for block in read_logged(log_dir, resolved.name, select=LogFilter(since=since), keys=types):
        position, index = ids.find([block.request_id, from_numpy(block.instance.astype(np.int64))])
        if keys is not None:
            more, more_index = keys.find([block.keys.column(n) for n in spec.key])
            fresh = ~np.isin(more, position)
            position = np.concatenate([position, more[fresh]])
            index = np.concatenate([index, more_index[fresh]])
        if position.size:
            taken = pa.array(position)
            part = block.keys.take(taken)
            if stamp is not None:
                part = part.append_column(stamp, _served_at(block.time[position]))
            parts.append(
                part.append_column(
                    REQUEST_ID, block.request_id.take(taken).cast(pa.string())
                ).append_column(INSTANCE, from_numpy(block.instance[position].astype(np.int64)))
            )
            chosen.append(index)
    stamped = [] if stamp is None else [pa.field(stamp, _SERVED_AT)]
    schema = pa.schema(
        [*(pa.field(n, t) for n, t in types.items()), *stamped,
         pa.field(REQUEST_ID, pa.string()), pa.field(INSTANCE, pa.int64())]
    )  # fmt: skip
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    values = [labels[i].label for i in picked.tolist()]
    if spec.task == "regression":
        column = pa.array(np.asarray(values, dtype=np.float64))
    else:
        column = pa.array([str(v) for v in values], pa.string())
    return table.append_column(target, column)


_SERVED_AT = pa.timestamp("us", tz="UTC")


def _served_at(seconds: np.ndarray) -> pa.Array:
    """Epoch seconds (the log's ``time``) as UTC timestamps."""
    return pa.array(np.round(seconds * 1e6).astype(np.int64), _SERVED_AT)


def previous_labelled(project: Project, model: str) -> str | None:
    """The sha256 of the labelled snapshot of ``model``'s latest policy run (None: none ran)."""
    import sqlalchemy as sa

    from keel.store.tables import events

    query = (
        sa.select(events.c.payload)
        .where(events.c.kind == "retrain", events.c.subject == model)
        .order_by(events.c.id.desc())
        .limit(20)
    )
    with project.metadata.database.read() as conn:
        for payload in conn.execute(query).scalars():
            if isinstance(payload, Mapping) and payload.get("labelled_sha256"):
                return str(payload["labelled_sha256"])
    return None


def accumulate(current: pa.Table, previous: pa.Table | None) -> tuple[pa.Table, int]:
    """``current`` and the ``previous`` run's rows, one row per request id and instance (the
    label of ``current`` wins), sorted by them; and how many rows came from ``previous`` only.

    A previous snapshot without the identity columns or with other columns is not carried.
    """
    if previous is None or not {REQUEST_ID, INSTANCE} <= set(previous.column_names):
        return _unique(current), 0
    try:
        both = pa.concat_tables(
            [current, previous.select(current.column_names)], promote_options="permissive"
        )
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _unique(current), 0
    merged = _unique(both)
    return merged, max(0, merged.num_rows - _unique(current).num_rows)


def _unique(table: pa.Table) -> pa.Table:
    """The first row of each request id and instance, sorted by them."""
    if table.num_rows == 0:
        return table
    key = pc.binary_join_element_wise(
        table.column(REQUEST_ID), pc.cast(table.column(INSTANCE), pa.string()), "\x00"
    )
    first = pc.index_in(pc.unique(key), value_set=key)
    return table.take(first).sort_by([(REQUEST_ID, "ascending"), (INSTANCE, "ascending")])


def check_rows(
    added: pa.Table, schema: Schema, target: str, types: pa.Schema
) -> tuple[np.ndarray, dict[str, int]]:
    """Which labelled rows fit the training schema (a boolean mask), and the excluded rows'
    count per reason (each row counted under its first failing check).

    Checked per column the rows carry and the training data has: the label (present and, for
    regression, a finite number), the column's type (a fractional number for an integer
    column, a value that does not convert), nulls where the schema's column is not nullable,
    and values outside the schema's min/max or categories when ``schema.yaml`` makes
    ``out_of_range`` or ``unseen_category`` an error (by default they are warnings: a window
    that drifted is what retraining should learn from). Vectorised per column.
    """
    from keel.validate.anomalies import UNCHECKED_ROLES, severity_of

    rows = added.num_rows
    why = np.full(rows, -1, dtype=np.int64)
    reasons: list[str] = []

    def fail(mask: np.ndarray, reason: str) -> None:
        hit = mask & (why < 0)
        if hit.any():
            reasons.append(reason)
            why[hit] = len(reasons) - 1

    for name in added.column_names:
        if name in (REQUEST_ID, INSTANCE) or name not in types.names:
            continue
        values = added.column(name).combine_chunks()
        wanted = types.field(name).type
        nulls = _mask(pc.is_null(values, nan_is_null=pa.types.is_floating(values.type)))
        column = schema.columns.get(name)
        if name == target:
            fail(nulls, f"{name}: no label")
        elif (
            column is not None
            and not column.nullable
            and severity_of(schema, "null_fraction", "error", name) == "error"
        ):
            fail(nulls, f"{name}: null, the schema's column is not nullable")
        if pa.types.is_integer(wanted) and pa.types.is_floating(values.type):
            number = np.nan_to_num(np.asarray(values.to_numpy(zero_copy_only=False), float))
            fail(~nulls & (number != np.floor(number)), f"{name}: not an integer ({wanted})")
        try:
            pc.cast(values, wanted, safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            fail(~nulls, f"{name}: does not convert to the training type {wanted}")
            continue
        if column is None or column.role in UNCHECKED_ROLES:
            continue
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            number = np.asarray(values.to_numpy(zero_copy_only=False), dtype=float)
            error = severity_of(schema, "out_of_range", "warning", name) == "error"
            if error and column.min is not None:
                fail(~nulls & (number < column.min), f"{name}: below the schema's min")
            if error and column.max is not None:
                fail(~nulls & (number > column.max), f"{name}: above the schema's max")
        elif column.categories is not None and (
            severity_of(schema, "unseen_category", "warning", name) == "error"
        ):
            known = pa.array([str(c) for c in column.categories], pa.string())
            seen = _mask(pc.is_in(pc.cast(values, pa.string()), value_set=known))
            fail(~nulls & ~seen, f"{name}: not one of the schema's categories")
    counts = np.bincount(why[why >= 0], minlength=len(reasons))
    return why < 0, {reason: int(n) for reason, n in zip(reasons, counts.tolist(), strict=True)}


def _mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def equal_rows(rows: pa.Table, reference: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Which of ``rows`` equal a row of ``reference`` on every one of ``columns`` (a boolean
    mask), by value: a null equals a null, NaN is null and -0.0 is 0.0; ``reference``'s columns
    are cast to ``rows``' types first (both to text where that fails).

    Exact and vectorised: per column, the values of both tables together are dictionary-encoded
    (equal values, equal codes) and folded into one code per row, renumbered densely after each
    column (``np.unique``), so two different rows never share a code (no hash collisions).
    """
    rows_n, reference_n = rows.num_rows, reference.num_rows
    if not rows_n or not reference_n or not columns:
        return np.zeros(rows_n, dtype=bool)
    code = np.zeros(reference_n + rows_n, dtype=np.int64)
    for name in columns:
        mine, theirs = rows.column(name).combine_chunks(), reference.column(name).combine_chunks()
        if theirs.type != mine.type:
            try:
                theirs = pc.cast(theirs, mine.type, safe=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                mine, theirs = pc.cast(mine, pa.string()), pc.cast(theirs, pa.string())
        both = _comparable(pa.concat_arrays([theirs, mine]))
        values = pc.dictionary_encode(both, null_encoding="encode").indices
        codes = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
        folded = code * (int(codes.max(initial=0)) + 1) + codes
        code = np.unique(folded, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return np.isin(code[reference_n:], code[:reference_n])


def _comparable(values: pa.Array) -> pa.Array:
    """Floating values with NaN as null and -0.0 as 0.0 (equal numbers, equal codes)."""
    if not pa.types.is_floating(values.type):
        return values
    zero = pa.scalar(0.0, values.type)
    plus = pc.add(values, zero)  # -0.0 + 0.0 is 0.0
    out: pa.Array = pc.if_else(pc.is_nan(plus), pa.scalar(None, values.type), plus)
    return out


def _aligned(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with ``schema``'s columns in its order and types (null where they lack one)."""
    columns = [
        pc.cast(rows.column(f.name), f.type, safe=False)
        if f.name in rows.column_names
        else pa.nulls(rows.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


@step(
    name=LABELLED_STEP,
    inputs={"train_snapshot": "snapshot", "test_snapshot": "snapshot", "schema": "schema"},
    outputs={"train_snapshot": "snapshot", "test_snapshot": "snapshot"},
)
def add_labelled_rows(
    ctx: Any, train_snapshot: Artifact, test_snapshot: Artifact, schema: Artifact
) -> dict[str, Artifact]:
    """Append the labelled rows (``ctx.params['labelled']``, a snapshot's sha256) that fit the
    training schema to the training snapshot, each column cast to the training data's type.

    With ``ctx.params['holdout']`` (the pipeline holds its test split out of the training
    data), the split's rule sends some rows to the test side (an output too); rows equal to a
    row the model trains on stay off it. Rows equal to a test row never train."""
    import yaml

    from keel.data import read_snapshot
    from keel.validate.schema import Schema

    train = read_snapshot(ctx.project.artifacts, train_snapshot)
    test = read_snapshot(ctx.project.artifacts, test_snapshot)
    labelled = ctx.project.metadata.get_artifact(str(ctx.params["labelled"]))
    ctx.read["labelled"] = labelled  # an input of this run: keel lineage names the rows
    added = read_snapshot(ctx.project.artifacts, labelled)
    contract = Schema.from_dict(yaml.safe_load(ctx.project.artifacts.get(schema.sha256)))
    target = ctx.project.config.data.target
    keep, excluded = check_rows(added, contract, target, train.schema)
    rows_excluded = int(keep.size - np.count_nonzero(keep))
    if rows_excluded:
        added = added.filter(pa.array(keep))
        detail = ", ".join(f"{reason} ({n})" for reason, n in excluded.items())
        ctx.warn(
            f"{rows_excluded} of {keep.size} labelled rows do not fit the training schema and "
            f"were left out: {detail}"
        )
    extra = _aligned(added, train.schema)
    compared = [n for n in added.column_names
                if n in train.schema.names and n in test.column_names]  # fmt: skip
    sides = _sides(ctx, added, extra, train, test, test_snapshot, compared)
    to_test, record = sides.pop("to_test"), sides
    new_test = pa.concat_tables([test, _aligned(added.filter(pa.array(to_test)), test.schema)])
    extra = extra.filter(pa.array(~to_test))
    equal = equal_rows(extra, new_test, compared)
    left_out = int(np.count_nonzero(equal))
    if left_out:
        extra = extra.filter(pa.array(~equal))
        ctx.warn(
            f"left out: {left_out} equal to test rows (labelled rows whose feature values and "
            "label equal a test row do not train: the evaluation would be optimistic)"
        )
    joined = pa.concat_tables([train, extra])
    record = {
        "labelled": ctx.params["labelled"],
        "rows_added": extra.num_rows,
        "rows_excluded": rows_excluded,
        "excluded": excluded,
        "rows_equal_to_test": left_out,
        **record,
        "carried": ctx.params.get("carried", 0),
        "alert": ctx.params.get("alert"),
    }
    # the counts as tracked params too: keel runs show, keel runs list --filter
    counts = {k: v for k, v in record.items() if isinstance(v, int | str) and k != "alert"}
    ctx.facts.update(rows=joined.num_rows, **record, params=counts)
    out: dict[str, Artifact] = {
        "train_snapshot": ctx.put_table(joined, parent=train_snapshot, retrain=record)
    }
    if ctx.params.get("holdout"):
        out["test_snapshot"] = ctx.put_table(new_test, parent=test_snapshot, retrain=record)
    return out


def _sides(
    ctx: Any,
    added: pa.Table,
    extra: pa.Table,
    train: pa.Table,
    test: pa.Table,
    test_snapshot: Artifact,
    compared: list[str],
) -> dict[str, Any]:
    """Which labelled rows go to the test side (``to_test``) and the record of why: none
    with a declared ``data.test``; else the split's rule (:func:`keel.pipeline.holdout.
    labelled_test_side`), less the rows equal to a declared training row (they train)."""
    holdout = ctx.params.get("holdout")
    if not holdout:
        return {"to_test": np.zeros(added.num_rows, dtype=bool)}
    from keel.monitor.labelled import joined_key
    from keel.pipeline.holdout import labelled_test_side

    # the split as it ran (its resolved method), else as configured
    facts = dict(holdout) | dict(test_snapshot.metadata.get("holdout") or {})
    identity = joined_key([added.column(REQUEST_ID), added.column(INSTANCE)])
    to_test, rule = labelled_test_side(added, identity, train=train, test=test, holdout=facts)
    trained = to_test & equal_rows(extra, train, compared)
    to_test = to_test & ~trained
    return {
        "to_test": to_test,
        "rows_to_test": int(np.count_nonzero(to_test)),
        "rows_equal_to_train": int(np.count_nonzero(trained)),
        "test_side_by": rule,
    }
