"""Labels in a project: the model's label spec from the registry, submission, and the join.

The glue between a :class:`~keel.project.Project` (its registry, metadata database, prediction
log and ``monitor.feedback`` settings) and the label functions of :mod:`keel.monitor.feedback`
and :mod:`keel.monitor.performance`. What a label must fit (task, classes, key columns' types)
is read from the model's package manifest, never by loading the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from keel.monitor.feedback import FeedbackResult, LabelSpec, RecentIds, submit_labels
from keel.monitor.label_table import read_label_table
from keel.monitor.performance import (
    Joined,
    LabelJoin,
    RealisedReport,
    join_labels,
    realised_performance,
)
from keel.monitor.window import LogFilter, WindowSpec
from keel.store.feedback_store import count_live

if TYPE_CHECKING:
    from keel.project import Project

__all__ = [
    "joined_for",
    "label_join",
    "label_spec",
    "realised_for",
    "realised_of",
    "spec_of_manifest",
    "submit_feedback",
]


def spec_of_manifest(manifest: dict[str, Any], key: Sequence[str]) -> LabelSpec:
    """A label spec from a package manifest (name, task, classes, the pipeline's inputs)."""
    from keel.features.pipeline import FeaturePipeline

    inputs = FeaturePipeline.from_state(manifest["features"]).inputs
    return LabelSpec.of(
        str(manifest["name"]),
        str(manifest.get("task", "binary")),
        [str(c) for c in manifest.get("classes", [])],
        inputs,
        key,
    )


def label_spec(project: Project, name: str) -> LabelSpec:
    """What ``name``'s labels must fit, from the version a bare name resolves to (the
    project's ``registry.alias``, else the newest).

    Raises:
        NotFoundError: No model of that name.
    """
    resolved = project.metadata.resolve(name.partition("@")[0])
    manifest = orjson.loads(project.artifacts.get(resolved.package_sha256))
    return spec_of_manifest(manifest, project.config.monitor.feedback.key)


def submit_feedback(
    project: Project,
    name: str,
    items: Sequence[Any],
    *,
    source: str = "api",
    spec: LabelSpec | None = None,
    recent: RecentIds | None = None,
) -> FeedbackResult:
    """Check and store a batch of labels for ``name`` (see :func:`submit_labels`)."""
    config = project.config.monitor.feedback
    return submit_labels(
        project.metadata.database,
        spec or label_spec(project, name),
        items,
        log_dir=Path(project.predictions_dir),
        on_duplicate=config.on_duplicate,
        max_delay=config.max_delay,
        recent=recent,
        source=source,
    )


def joined_for(
    project: Project,
    name: str,
    *,
    select: LogFilter = LogFilter(),
    window: WindowSpec = WindowSpec("all"),
) -> tuple[LabelSpec, Joined, int]:
    """``name``'s live labels joined to its logged predictions, and how many labels it has."""
    spec = label_spec(project, name)
    # columns, not a Python object per label; labels of predictions before the selection
    # (received before it starts) are not read
    labels = read_label_table(project.metadata.database, spec, since=select.since)
    timed = project.config.monitor.time_column
    unit = None
    if timed is not None:  # the unit schema.yaml gives it (numbers: seconds without one)
        from keel.monitor.eventtime import event_time_unit

        unit = event_time_unit(project.root, timed)
    joined = join_labels(Path(project.predictions_dir), spec, labels, select=select,
                         window=window, time_column=timed, time_unit=unit)  # fmt: skip
    return spec, joined, labels.count


def realised_for(
    project: Project, name: str, *, select: LogFilter, window: WindowSpec
) -> RealisedReport | None:
    """Realised performance of ``name`` per window; None when it has no labels at all."""
    model = name.partition("@")[0]
    labels = count_live(project.metadata.database, model)  # every live label, read or not
    if labels == 0:
        return None
    spec, joined, _ = joined_for(project, model, select=select, window=window)
    return realised_performance(
        joined, spec, window, labels=labels, min_rows=project.config.monitor.min_rows
    )


def label_join(project: Project, name: str, *, select: LogFilter) -> LabelJoin:
    """``name``'s live labels, ready to be joined to the rows a monitoring run reads
    (:func:`keel.monitor.report.monitor_log` feeds it: the log is read once)."""
    spec = label_spec(project, name)
    return LabelJoin(spec, read_label_table(project.metadata.database, spec, since=select.since))


def realised_of(
    project: Project, join: LabelJoin, *, window: WindowSpec, labels: int
) -> RealisedReport:
    """Realised performance per window from a join fed by a monitoring run (``labels``: the
    model's live labels, read or not)."""
    return realised_performance(
        join.joined(), join.spec, window, labels=labels, min_rows=project.config.monitor.min_rows
    )
