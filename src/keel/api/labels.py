"""Delayed labels and what they tell: feed labels back, compare deployment arms.

>>> keel.feedback("adult", [{"request_id": rid, "label": ">50K"}], project="adult-demo")
{'model': 'adult', 'counts': {'accepted': 1, 'replaced': 0, 'rejected': 0}, 'items': [...]}
>>> keel.feedback_file("adult", "labels.csv", project="adult-demo")
>>> keel.compare_arms("adult", project="adult-demo")

Realised performance per window appears in :func:`keel.monitor`'s report (``realised``, next
to CBPE's estimate) once a model has labels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from keel.api.projects import _project
from keel.errors import DataValidationError

if TYPE_CHECKING:
    from keel.data.reader import ReadOptions
    from keel.monitor.feedback import LabelSpec
    from keel.project import Project

__all__ = ["compare_arms", "feedback", "feedback_file"]

MAX_REJECTED = 1_000  # rejected items a file's result lists (all go to ``rejected_to``)
DEFAULT_INSTANCE_COLUMN = "instance"  # read when present and no instance column is named


def feedback(
    name: str, labels: Sequence[Mapping[str, Any]], *, project: str | Path | None = None
) -> dict[str, Any]:
    """Store delayed labels for ``name``'s logged predictions; one answer per item.

    Each item is ``{"request_id": ..., "label": ...}`` (``"instance": i`` for the i-th instance
    of a request of several) or ``{"key": {...}, "label": ...}`` with the columns of
    ``monitor.feedback.key``. An item is ``accepted``, ``replaced`` (a second label when
    ``monitor.feedback.on_duplicate`` is ``replace``) or ``rejected`` with the reason (unknown
    request id or key, a label outside the target's values, a missing field, a duplicate).
    At most 10,000 items per call.
    """
    from keel.monitor.labels import submit_feedback

    with _project(project) as proj:
        return submit_feedback(proj, name, list(labels), source="api").to_dict()


def feedback_file(
    name: str,
    path: str | Path,
    *,
    project: str | Path | None = None,
    request_id_column: str = "request_id",
    label_column: str = "label",
    instance_column: str | None = None,
    read: ReadOptions | None = None,
    rejected_to: str | Path | None = None,
) -> dict[str, Any]:
    """Store the labels of a CSV or Parquet file, in batches; counts per outcome and the
    rejected rows with their line and reason.

    Rows name their prediction by ``request_id_column`` (and ``instance_column``; left out, a
    column named ``instance`` is read when the file has one, else each row names the first
    instance of its request), or, where the request id column is absent, by the key columns of
    ``monitor.feedback.key``.
    ``rejected_to`` receives every rejected row as JSON Lines (``line``, ``reason``,
    ``request_id``); the result lists the first 1,000.

    Raises:
        DataValidationError: The file lacks the label column, the instance column named, or
            both the request id column and the key columns.
    """
    from keel.monitor.labels import label_spec, submit_feedback

    source = Path(path)
    counts = {"accepted": 0, "replaced": 0, "rejected": 0}
    rejected: list[dict[str, Any]] = []
    with _project(project) as proj, contextlib.ExitStack() as stack:
        spec = label_spec(proj, name)
        sink = None if rejected_to is None else stack.enter_context(Path(rejected_to).open("wb"))
        for lines, items in _file_items(
            proj, source, spec, request_id_column, label_column, instance_column, read
        ):
            result = submit_feedback(proj, name, items, source="file", spec=spec)
            for item in result.items:
                counts[item.status] += 1
                if item.status != "rejected":
                    continue
                row = {"line": lines[item.index], **item.to_dict()}
                del row["index"], row["status"]
                if items[item.index]["label"] is None:  # the file's column, not the item field
                    row["reason"] = f"no label: the {label_column!r} cell is empty."
                if sink is not None:
                    sink.write(orjson.dumps(row) + b"\n")
                if len(rejected) < MAX_REJECTED:
                    rejected.append(row)
    return {
        "model": spec.model,
        "source": str(source),
        "counts": counts,
        "rejected": rejected,
        "rejected_to": None if rejected_to is None else str(rejected_to),
    }


def _file_items(
    project: Project,
    source: Path,
    spec: LabelSpec,
    request_id_column: str,
    label_column: str,
    instance_column: str | None,
    read: ReadOptions | None,
) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
    """The file's rows as label items, in batches, with each row's line number."""
    import numpy as np

    from keel.data.files import open_data, read_batches
    from keel.data.reader import CsvFile, ReadOptions, file_columns
    from keel.monitor.feedback import MAX_ITEMS

    key = list(spec.key)
    text = (request_id_column, label_column, *key)
    opened = open_data(source, replace(read or ReadOptions(), text=text))
    present = set(file_columns(opened))
    by_id = request_id_column in present
    missing = [label_column] if label_column not in present else []
    if instance_column is None and DEFAULT_INSTANCE_COLUMN in present:
        instance_column = DEFAULT_INSTANCE_COLUMN  # the name the HTTP items use
    elif instance_column is not None and instance_column not in present:
        missing.append(instance_column)  # else every row would name the first instance
    if not by_id and (not key or any(k not in present for k in key)):
        missing.append(request_id_column if not key else f"{request_id_column} (or {key})")
    if missing:
        msg = (
            f"{source}: no column {', '.join(missing)}; it has {sorted(present)}. Name the "
            "columns with --request-id-column, --label-column and --instance-column."
        )
        raise DataValidationError(msg, field=missing[0])
    columns = [request_id_column if by_id else None, label_column, instance_column]
    wanted = [c for c in columns if c is not None and c in present] + ([] if by_id else key)
    done = 0
    for table in read_batches(opened, wanted, MAX_ITEMS):
        count = table.num_rows
        if count == 0:
            continue
        if isinstance(opened, CsvFile):
            lines = opened.line_numbers(done, count).tolist()
        else:
            lines = (np.arange(done, done + count) + 1).tolist()
        done += count
        rows = table.to_pylist()
        items = []
        for row in rows:
            item: dict[str, Any] = {"label": row.get(label_column)}
            if by_id:
                item["request_id"] = row.get(request_id_column)
                if instance_column and row.get(instance_column) is not None:
                    item["instance"] = row[instance_column]
            else:
                item["key"] = {k: row.get(k) for k in key}
            items.append(item)
        yield lines, items


def compare_arms(
    name: str,
    *,
    project: str | Path | None = None,
    versions: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Each arm's (version/role) realised metrics from feedback, with bootstrap intervals, and
    each arm tested against the baseline: a two-proportion z-test for accuracy, precision and
    recall, a bootstrap of the difference for ROC AUC, RMSE and MAE. See
    :func:`keel.monitor.arms.compare_arms`."""
    from keel.monitor.arms import compare_arms as compare

    if not 0 < alpha < 1:
        raise DataValidationError(f"alpha must be between 0 and 1; got {alpha}.", field="alpha")
    with _project(project) as proj:
        return compare(
            proj, name, versions=versions, since=since, until=until, alpha=alpha
        ).to_dict()
