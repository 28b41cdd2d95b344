"""One monitoring check of a registered model in a project: what ``keel monitor`` runs.

The model's version is resolved in the registry, its manifest and training statistics are read
from the artifact store (hashes verified; the model itself is never loaded), and either the
prediction log (by version, role, time range and window) or a data file is compared with them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError
from keel.monitor.report import load_reference, monitor_log, settings_of
from keel.monitor.window import LogFilter, parse_window

if TYPE_CHECKING:
    from keel.data.reader import ReadOptions
    from keel.monitor.quickdb import QuickReads, Resolved
    from keel.project import Project
    from keel.types import ModelVersion

__all__ = ["check_model", "parse_time"]


def parse_time(text: str | None, field: str) -> float | None:
    """Seconds since the epoch from an ISO date or time (UTC unless it names a zone)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{field}: '{text}' is not a date or time; write 2024-05-01 or 2024-05-01T12:00."
        raise ConfigError(msg, field=field) from exc
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def check_model(
    project: Project,
    ref: str,
    *,
    source: str | Path | None = None,
    read: ReadOptions | None = None,
    version: str | None = None,
    role: str | None = None,
    window: str | None = None,
    step: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """The drift (and estimated performance) report of ``ref`` as JSON-ready data.

    Args:
        project: The open project.
        ref: ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS``: whose training statistics to compare
            with, and (unless ``version`` says otherwise) whose logged rows to read.
        source: Compare this file (read in batches) instead of the prediction log.
        read: How to read ``source`` (a CSV's dialect).
        version: Read the logged rows of this version (``all``: every version).
        role: Read only this deployment role (primary, canary, shadow).
        window: ``1d``, ``6h``, ``1000rows``...; default keel.yaml's ``monitor.window``.
        step: Slide the windows by this.
        since: Read requests at or after this time (ISO).
        until: Read requests before this time (ISO).
    """
    from keel.monitor.quickdb import open_quick

    quick = open_quick(project)  # SQLite read through sqlite3: SQLAlchemy is never loaded
    try:
        return _check(project, quick, ref, source=source, read=read, version=version, role=role,
                      window=window, step=step, since=since, until=until)  # fmt: skip
    finally:
        if quick is not None:
            quick.close()


def _check(
    project: Project,
    quick: QuickReads | None,
    ref: str,
    *,
    source: str | Path | None,
    read: ReadOptions | None,
    version: str | None,
    role: str | None,
    window: str | None,
    step: str | None,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    cfg = project.config.monitor
    name = ref.partition("@")[0]
    if version is not None and version != "all":
        ref = f"{name}@{version}"
    resolved: Resolved | ModelVersion | None = None if quick is None else quick.resolve(ref)
    if resolved is None:  # the registry itself (an unresolvable reference: for its error)
        resolved = project.metadata.resolve(ref)
    reference = load_reference(
        project.artifacts,
        resolved.package_sha256,
        version=str(resolved.version),
        target=project.config.data.target,
    )
    spec = parse_window(
        window or cfg.window,
        step or (None if window else cfg.step),
        field="--window" if window else "monitor.window",
    )
    settings = settings_of(cfg, spec)
    if cfg.time_column is not None:
        check_time_column(
            project, resolved.package_sha256, reference.inputs, f"{name}@{resolved.version}"
        )
        from keel.monitor.eventtime import event_time_unit

        unit = event_time_unit(project.root, cfg.time_column, reference.coercer)
        settings = replace(settings, time_unit=unit)
    unknown = [f for f in cfg.features if f not in reference.inputs]
    if unknown:
        msg = (
            f"monitor.features: {unknown} are not inputs of {name}@{resolved.version}; its "
            f"inputs: {list(reference.inputs)}."
        )
        raise ConfigError(msg, field=f"monitor.features.{unknown[0]}")
    if source is not None:
        if window or since or until or role:
            msg = "--window, --since, --until and --role select logged rows; a file is one window."
            raise ConfigError(msg, field="--input")
        return _check_file(project, reference, settings, Path(source), read)
    select = LogFilter(
        version=None if version == "all" else str(resolved.version),
        role=role,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
    )
    if reference.task == "binary":  # CBPE's calibration: fitted on the test set once, cached
        from keel.monitor.calibrate import calibration_for

        calibration = calibration_for(
            project, resolved.package_sha256, reference.target, reference.classes
        )
        reference = replace(reference, calibration=calibration)
    from keel.monitor.hashed import hashed_inputs, hashed_reference  # pii inputs: keyed hashes

    reference = hashed_reference(reference, hashed_inputs(project))
    labels = _count_live(project, quick, name)
    join = None
    if labels:  # labels: only then is the join imported; joined to the rows drift reads
        from keel.monitor.labels import label_join, realised_of

        join = label_join(project, name, select=select)
    report = monitor_log(
        reference, project.predictions_dir, select=select, settings=settings, join=join
    )
    realised = None
    if join is not None:
        realised = realised_of(project, join, window=spec, labels=labels)
    answer = replace(report, realised=realised).to_dict()
    # the rows of every version, against the reference version's training rows
    answer["all_versions"] = version == "all"
    served = (report.overall.first, report.overall.last)  # the whole selection's requests
    from keel.monitor.operations import add_operations  # latency, errors, drops; SLOs

    traffic = project.metadata.database if quick is None else quick.traffic_rows
    if cfg.time_column is not None:  # traffic is counted by request time: whole selection only
        windows = answer.pop("windows")
        whole = add_operations(answer, traffic, cfg.slo, window_kind="all",
                               window_size=0, version=select.version, role=role,
                               since=select.since, until=select.until,
                               served=served)  # fmt: skip
        whole["windows"] = windows
        return whole
    return add_operations(
        answer,
        traffic,
        cfg.slo,
        window_kind=spec.kind,
        window_size=spec.size,
        version=select.version,
        role=role,
        since=select.since,
        until=select.until,
        served=served,
    )


def _count_live(project: Project, quick: QuickReads | None, name: str) -> int:
    if quick is not None:
        return quick.count_live(name)
    from keel.store.feedback_store import count_live

    return count_live(project.metadata.database, name)


def check_time_column(project: Project, sha256: str, inputs: Any, model: str) -> None:
    """``monitor.time_column`` must be a column the server logs: a model input, or a column of
    the training data the model does not read (the server keeps that one in the log).

    Raises:
        ConfigError: The target, or a column the model's training data did not have.
    """
    import orjson

    column = project.config.monitor.time_column
    manifest = orjson.loads(project.artifacts.get(sha256))
    ignored = (manifest.get("signature") or {}).get("ignored") or []
    if column == project.config.data.target or (column not in inputs and column not in ignored):
        known = sorted({*inputs, *ignored} - {project.config.data.target})
        msg = (
            f"monitor.time_column: {column!r} is not a column the server logs for {model}; "
            f"name a date or time column of its training data that clients send with each row "
            f"(one of {', '.join(known)})."
        )
        raise ConfigError(msg, field="monitor.time_column")


def _check_file(
    project: Project, reference: Any, settings: Any, source: Path, read: ReadOptions | None
) -> dict[str, Any]:
    from keel.data.columns import check_columns
    from keel.data.files import open_data
    from keel.data.reader import CsvFile, ReadOptions, dialect_of
    from keel.monitor.drift import compute_drift

    options = read or ReadOptions()
    tokens = tuple(project.config.data.train.na_values)
    if not options.na_values and tokens:
        options = replace(options, na_values=tokens)
    # the inputs read as text: the model's coercion parses them as serving does
    current = open_data(source, replace(options, text=tuple(reference.inputs)))
    check_columns(current, list(reference.inputs), of="model input")
    report = compute_drift(
        dict(reference.statistics),
        current,
        columns=list(reference.inputs),
        warn=settings.default.warn,
        alert=settings.default.alert,
        min_rows=settings.min_rows,
        fdr=settings.fdr,
        limits=settings.features,
        coercer=reference.coercer,
    )
    dialect = dialect_of(current)
    bad = current.bad_lines if isinstance(current, CsvFile) else ()
    return {
        "model": reference.name,
        "version": reference.version,
        "source": str(source),
        "window": "all",
        **report,
        "latest_verdict": report["verdict"],
        "windows": [],
        "notes": [],
        "dialect": None if dialect is None else dialect.to_dict(),
        "bad_lines": [line.to_dict() for line in bad],
    }
