"""``schema.yaml``, the project's data contract: inferred on the first run for review, checked
against the data on every run, refreshed when the data's columns or types changed.

With ``schema: reviewed`` (the default) a ``schema.yaml`` that no longer matches the training
data (a column added or removed, a type changed) stops ``keel run`` with the difference and the
command that refreshes it, ``keel schema infer --update``; with ``schema: auto`` the run refreshes
it and warns. A refresh keeps the reviewer's edits (see :mod:`keel.validate.refresh`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, DataValidationError, KeelError
from keel.project import Project

if TYPE_CHECKING:
    from keel.validate.evolution import SchemaChange
    from keel.validate.schema import Schema

__all__ = [
    "SCHEMA_FILE",
    "SchemaUpdate",
    "check_schema",
    "declare_dropped",
    "holdout_notes",
    "infer_project_schema",
    "new_schema_notes",
    "refreshed_message",
    "restore_undropped",
    "schema_text",
    "stale_message",
    "stray_notes",
    "training_statistics",
    "undrop_notes",
    "update_schema",
    "with_strays",
]

SCHEMA_FILE = "schema.yaml"
UPDATE_COMMAND = "keel schema infer --update"
#: The training statistics' key for the numeric columns a few stray cells made text.
STRAYS_KEY = "mostly_numbers"


@dataclass(frozen=True)
class SchemaUpdate:
    """What refreshing ``schema.yaml`` did.

    Attributes:
        path: The schema file.
        changes: What no longer matched the data (empty: it was up to date).
        created: There was no schema file; it was inferred from scratch.
        notes: Choices made for the project on creation that the user should know of.
    """

    path: Path
    changes: tuple[SchemaChange, ...]
    created: bool = False
    notes: tuple[str, ...] = ()


def infer_project_schema(project: Project, statistics: dict[str, Any]) -> Schema:
    """The schema inferred from training statistics with the roles keel.yaml declares."""
    from keel.validate.schema import infer_schema

    data = project.config.data
    return infer_schema(
        statistics,
        target=data.target,
        sensitive=data.sensitive,
        drop=data.drop,
        max_null_fraction=data.max_null_fraction,
        units={**(data.test.unix_time if data.test else {}), **data.train.unix_time},
    )


def check_schema(project: Project, statistics: dict[str, Any]) -> SchemaUpdate:
    """Check ``schema.yaml`` against the training data's statistics (infer it if missing).

    Returns:
        What was done: nothing (``changes`` empty), created, or refreshed (``schema: auto``).

    Raises:
        DataValidationError: With ``schema: reviewed``, the data's columns or types no longer
            match ``schema.yaml``; the message lists the differences and the refresh command.
        ConfigError: ``schema.yaml`` is not a valid schema.
    """
    update = _reconcile(project, infer_project_schema(project, statistics), statistics, write=False)
    if update.created:
        return update
    return replace(update, notes=undrop_notes(project, update.path) + update.notes)


def schema_text(project: Project, statistics: dict[str, Any]) -> str:
    """``schema.yaml``'s text; when there is none (first run, or deleted) it is inferred from
    the statistics and written first, for review; otherwise the columns ``data.drop`` lists
    are set aside in it first (:func:`declare_dropped`)."""
    path = project.root / SCHEMA_FILE
    _check_dropped(project, list(statistics.get("columns", {})))
    if not path.exists():
        _create(project, infer_project_schema(project, statistics), statistics, path)
    else:
        declare_dropped(project, path)
        restore_undropped(project, path)
    return path.read_text(encoding="utf-8")


def _check_dropped(project: Project, columns: list[str]) -> None:
    """A ``data.drop`` entry that names no column of the training data is a typo that would
    leave the column it meant a model input: refuse it, with the closest column."""
    unknown = [name for name in project.config.data.drop if name not in columns]
    if not unknown or not columns:
        return
    import difflib

    by_lower = {c.lower(): c for c in columns}
    hints = []
    for name in unknown:
        close = by_lower.get(name.lower()) or next(
            iter(difflib.get_close_matches(name, columns, n=1, cutoff=0.6)), None
        )
        hints.append(f"'{name}'" + (f" (did you mean '{close}'?)" if close else ""))
    more = f", ... ({len(columns) - 40} more)" if len(columns) > 40 else ""
    verb = "names no column" if len(unknown) == 1 else "name no columns"
    raise ConfigError(
        f"data.drop: {', '.join(hints)} {verb} of the training data, so nothing was set "
        f"aside. Columns: {', '.join(columns[:40])}{more}. Fix the name in keel.yaml.",
        field="data.drop",
    )


def declare_dropped(project: Project, path: Path) -> tuple[str, ...]:
    """Give role ``ignored`` in ``schema.yaml`` to the model inputs that keel.yaml's
    ``data.drop`` lists.

    A new schema takes ``data.drop`` when it is inferred; a column listed after that would
    otherwise stay a model input of the reviewed schema, and the run would silently train on
    it. Only ``feature`` and ``sensitive`` columns change (one that is also the target or in
    ``data.sensitive`` keeps its role), each keeping its role as ``role_before_drop`` so that
    taking it out of ``data.drop`` gives it back (:func:`restore_undropped`); everything else
    in the schema is kept.

    Returns:
        The columns whose role was changed (empty: the file was not touched).
    """
    data = project.config.data
    listed = set(data.drop) - set(data.sensitive) - {data.target}
    if not listed:
        return ()
    from keel.validate.schema import read_schema, write_schema

    schema = read_schema(path)
    changed = tuple(
        name
        for name, column in schema.columns.items()
        if name in listed and column.role in ("feature", "sensitive")
    )
    if changed:
        columns = {
            name: replace(column, role="ignored", role_before_drop=column.role)
            if name in changed
            else column
            for name, column in schema.columns.items()
        }
        write_schema(replace(schema, columns=columns), path)
    return changed


def restore_undropped(project: Project, path: Path) -> dict[str, str]:
    """Give back their roles in ``schema.yaml`` to the columns that keel.yaml's ``data.drop``
    set aside (``role: ignored`` with a ``role_before_drop``) and no longer lists.

    A column a reviewer made ``ignored`` by hand has no ``role_before_drop`` and stays ignored.

    Returns:
        The role given back, by column (empty: the file was not touched).
    """
    from keel.validate.schema import read_schema, write_schema

    data = project.config.data
    listed = set(data.drop) - set(data.sensitive) - {data.target}
    schema = read_schema(path)
    restored: dict[str, str] = {
        name: column.role_before_drop
        for name, column in schema.columns.items()
        if column.role == "ignored" and column.role_before_drop is not None and name not in listed
    }
    if restored:
        columns = {
            name: replace(column, role=column.role_before_drop, role_before_drop=None)
            if name in restored and column.role_before_drop is not None
            else column
            for name, column in schema.columns.items()
        }
        write_schema(replace(schema, columns=columns), path)
    return restored


def undrop_notes(project: Project, path: Path) -> tuple[str, ...]:
    """What ``schema.yaml`` gave back since the project's last schema step run: one line per
    column that ``data.drop`` had set aside there and that has its role again
    (``workclass: back in the model (removed from data.drop)``)."""
    import yaml

    from keel.validate.schema import Schema, read_schema

    before = next(
        (run.outputs["schema"] for run in project.metadata.list_runs(step="schema", limit=5)
         if "schema" in run.outputs),
        None,
    )  # fmt: skip
    if before is None or not path.exists():
        return ()
    try:
        previous = Schema.from_dict(yaml.safe_load(project.artifacts.get(before)))
    except (KeelError, OSError, yaml.YAMLError):  # a damaged or missing artifact: nothing to say
        return ()
    now = read_schema(path).columns
    notes = []
    for name, column in previous.columns.items():
        was = column.role_before_drop
        current = now.get(name)
        if column.role != "ignored" or was is None or current is None or current.role != was:
            continue
        notes.append(_back(name, was))
    return tuple(notes)


def _back(name: str, role: str) -> str:
    where = "back in the model" if role in ("feature", "sensitive") else f"role {role} again"
    return f"{name}: {where} (removed from data.drop)"


def update_schema(project: Project, statistics: dict[str, Any] | None = None) -> SchemaUpdate:
    """Refresh ``schema.yaml`` from the project's training data (``keel schema infer --update``).

    Columns added to the data come in as inferred, removed ones go, a column whose type changed
    takes the new type and domain; everything else keeps the reviewer's edits.

    Args:
        project: The project.
        statistics: The data's statistics; default: ingest ``data.train`` (a snapshot, as
            ``keel data ingest`` makes) and compute them.
    """
    if statistics is None:
        statistics = training_statistics(project)
    path = project.root / SCHEMA_FILE
    restored = restore_undropped(project, path) if path.exists() else {}
    update = _reconcile(project, infer_project_schema(project, statistics), statistics, write=True)
    back = tuple(_back(name, role) for name, role in restored.items())
    return replace(update, notes=back + update.notes)


def training_statistics(project: Project) -> dict[str, Any]:
    """Statistics of ``data.train``, ingested into a snapshot as ``keel run`` reads it."""
    from keel.data import ingest
    from keel.validate.statistics import compute_statistics

    result = ingest(project.config.data.train, project.root, project, split="train")
    snapshot = project.artifacts.local_path(result.snapshot.sha256)
    return with_strays(compute_statistics(snapshot), snapshot)


def with_strays(statistics: dict[str, Any], snapshot: Path) -> dict[str, Any]:
    """``statistics`` with the text columns of ``snapshot`` that are numbers but for a few
    stray cells (:mod:`keel.validate.numeric_text`, over a bounded sample) under
    :data:`STRAYS_KEY`; unchanged when there are none."""
    from keel.validate.numeric_text import strays_in_file

    found = strays_in_file(snapshot)
    if not found:
        return statistics
    return {**statistics, STRAYS_KEY: [f.to_dict() for f in found]}


def stray_notes(
    statistics: dict[str, Any], schema: Schema, columns: set[str] | None = None
) -> tuple[str, ...]:
    """A warning for each column that ``schema`` declares a string although its values are
    numbers but for a few stray cells (as :func:`with_strays` found them), or only for
    ``columns``: what the column holds and how to fix it."""
    from keel.validate.numeric_text import MostlyNumbers, stray_message

    notes = []
    for entry in statistics.get(STRAYS_KEY, ()):
        found = MostlyNumbers.from_dict(entry)
        column = schema.columns.get(found.name)
        if column is None or column.type != "string" or column.role in ("ignored", "pii"):
            continue
        if columns is None or found.name in columns:
            notes.append(stray_message(found, schema_file=SCHEMA_FILE))
    return tuple(notes)


def new_schema_notes(
    project: Project, schema: Schema, statistics: dict[str, Any]
) -> tuple[str, ...]:
    """What the user should know of a newly inferred schema: numeric columns that stray cells
    made text (:func:`stray_notes`) and the time holdout's shift severity
    (:func:`holdout_notes`)."""
    return stray_notes(statistics, schema) + holdout_notes(project, schema)


def _reconcile(
    project: Project, inferred: Schema, statistics: dict[str, Any], *, write: bool
) -> SchemaUpdate:
    from keel.validate.refresh import refresh_schema, stale_changes
    from keel.validate.schema import read_schema, write_schema

    path = project.root / SCHEMA_FILE
    if not path.exists():
        return SchemaUpdate(
            path, (), created=True, notes=_create(project, inferred, statistics, path)
        )
    reviewed = read_schema(path)
    changes = tuple(stale_changes(reviewed, inferred))
    if not changes:
        return SchemaUpdate(path, ())
    if not write and project.config.schema_mode == "reviewed":
        raise DataValidationError(stale_message(changes), details=_details(changes))
    refreshed = refresh_schema(reviewed, inferred)
    write_schema(refreshed, path)
    changed = {str(change.column) for change in changes}
    return SchemaUpdate(path, changes, notes=stray_notes(statistics, refreshed, changed))


def _create(
    project: Project, inferred: Schema, statistics: dict[str, Any], path: Path
) -> tuple[str, ...]:
    """Write a new schema.yaml; the notes say what was chosen for this project."""
    from keel.validate.schema import write_schema

    if _time_holdout(project) and "distribution_shift" not in inferred.severities:
        # the test split is a later period: its shift from the training rows is expected, so
        # it is a warning there, not an error that stops every first run (the reviewer decides)
        severities = {**inferred.severities, "distribution_shift": "warning"}
        inferred = replace(inferred, severities=severities)
    write_schema(inferred, path)
    return new_schema_notes(project, inferred, statistics)


def holdout_notes(project: Project, schema: Schema) -> tuple[str, ...]:
    """What the user should know of a schema for a project that holds out its test split by
    time: that distribution shift is a warning there (as a new schema has it)."""
    if not _time_holdout(project) or schema.severities.get("distribution_shift") != "warning":
        return ()
    return (
        f"{SCHEMA_FILE}: the test split is the latest rows by '{project.config.split.column}' "
        "(split.method: time), so distribution shift against the training rows is a warning, "
        "not an error (severities: {distribution_shift: warning}); set it to error in "
        f"{SCHEMA_FILE} to stop runs on it.",
    )


def _time_holdout(project: Project) -> bool:
    return project.config.data.test is None and project.config.split.method == "time"


def stale_message(changes: tuple[SchemaChange, ...]) -> str:
    """Why the run stopped, and the two ways on."""
    from keel.validate.refresh import describe_changes

    return (
        f"{SCHEMA_FILE} no longer matches the training data ({len(changes)} difference(s)):\n"
        f"{describe_changes(list(changes))}\n"
        f"If the data changed, run '{UPDATE_COMMAND}' to refresh {SCHEMA_FILE} (your edits on "
        "unchanged columns are kept), review it and run again; or set 'schema: auto' in "
        f"keel.yaml to refresh it on every run. If {SCHEMA_FILE} is right, fix the data."
    )


def refreshed_message(update: SchemaUpdate) -> str:
    """What an automatic refresh changed, for a warning."""
    from keel.validate.refresh import describe_changes

    return (
        f"{SCHEMA_FILE} was refreshed from the data (schema: auto), {len(update.changes)} "
        f"change(s):\n{describe_changes(list(update.changes))}\nReview the new and changed "
        "columns (roles, ranges, categories)."
    )


def _details(changes: tuple[SchemaChange, ...]) -> dict[str, Any]:
    return {"changes": [c.to_dict() for c in changes], "fix": UPDATE_COMMAND}
