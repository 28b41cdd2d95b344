"""`keel doctor`: check a project end to end, one line per check, with the fix for each failure.

Checks, in order: keel.yaml is valid; the metadata database is reachable and at the newest
schema; no run is stuck ``running`` (runs of dead processes are marked failed on the way in);
every artifact the metadata refers to is in the artifact store with its sha256; no leftovers of
interrupted runs (blobs nothing refers to, unfinished temporary files); ``schema.yaml`` matches
the latest training statistics; with active schedules, a ``keel scheduler`` leads; the optional
extras the configuration uses are importable.
Exit 1 when any check fails. ``--fix`` repairs what is safe to repair: it marks runs whose
owner cannot be checked failed and removes leftovers (never while a run is in progress).
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out
from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.project import Project
    from keel.store.artifacts import StoredFile
    from keel.store.integrity import ArtifactAudit
    from keel.store.leases import RunningRun

__all__ = ["Check", "diagnose", "register"]

Status = Literal["ok", "fail", "info", "skip"]
DEFAULT_MIN_AGE_SECONDS = 60.0
# Temporary files beside keel.yaml and in .keel/ (schema.yaml is written through one).
_TEMP_GLOB = ".*.tmp"
_SHOWN = 5


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        name: What was checked (``config``, ``database``, ``runs``, ...).
        status: ``ok``, ``fail``, ``info`` (nothing to judge) or ``skip`` (an earlier check
            failed, so this one could not run).
        message: What was found.
        fix: What to do about a failure.
        details: Machine-readable findings (ids, counts) for ``--format json``.
    """

    name: str
    status: Status
    message: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Options:
    fix: bool
    deep: bool
    min_age: float


def register(app: typer.Typer) -> None:
    """Add ``keel doctor`` to the `keel` app."""
    app.command("doctor")(doctor)


def doctor(
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Repair what is safe: mark runs of unknown owners failed, remove leftovers "
            "of interrupted runs (not while a run is in progress).",
        ),
    ] = False,
    deep: Annotated[
        bool,
        typer.Option("--deep", help="Re-hash every artifact, not only those up to 64 MiB."),
    ] = False,
    min_age: Annotated[
        float,
        typer.Option(
            "--min-age",
            min=0.0,
            help="Seconds: leftovers younger than this may be a write in progress; they are "
            "reported, not failed, and --fix keeps them.",
        ),
    ] = DEFAULT_MIN_AGE_SECONDS,
) -> None:
    """Check the project: config, database, stuck runs, artifacts, schema, scheduler, extras.

    One line per check; exit 1 when any fails, each failure with its fix.
    """
    checks = diagnose(project, fix=fix, deep=deep, min_age=min_age)
    failed = [c for c in checks if c.status == "fail"]
    if fmt is Format.json:
        emit_json({"ok": not failed, "checks": [_as_dict(c) for c in checks]})
    else:
        _print(checks)
    if failed:
        raise typer.Exit(1)


def diagnose(
    root: Path | None, *, fix: bool = False, deep: bool = False, min_age: float = 60.0
) -> list[Check]:
    """Run every check on the project at or above ``root`` (default: the current directory).

    Args:
        root: The project directory.
        fix: Repair what is safe (see the module docstring).
        deep: Re-hash every artifact whatever its size.
        min_age: Leftovers younger than this many seconds are not failures and not removed.
    """
    from keel.project import Project

    options = _Options(fix=fix, deep=deep, min_age=min_age)
    try:
        project = Project(root)
    except KeelError as exc:
        blocked: tuple[str, ...] = (
            "database", "runs", "artifacts", "leftovers", "schema", "scheduler", "extras"
        )  # fmt: skip
        return [
            Check("config", "fail", exc.message),  # its message says what to do
            *(Check(name, "skip", "needs a valid keel.yaml") for name in blocked),
        ]
    with project:
        checks = [Check("config", "ok", f"{project.root / 'keel.yaml'} is valid")]
        database = _database(project)
        checks.append(database)
        if database.status == "fail":
            blocked = ("runs", "artifacts", "leftovers", "schema", "scheduler")
            checks += [Check(name, "skip", "needs the database") for name in blocked]
        else:
            checks += _store_checks(project, options)
        checks.append(_extras(project))
    return checks


def _store_checks(project: Project, options: _Options) -> list[Check]:
    from keel.store.integrity import DEFAULT_HASH_LIMIT, audit_artifacts

    running, runs = _runs(project, options)
    checks = [runs]
    try:
        limit = None if options.deep else DEFAULT_HASH_LIMIT
        audit = audit_artifacts(project.metadata, project.artifacts, hash_limit=limit)
    except KeelError as exc:
        checks.append(Check("artifacts", "fail", exc.message, "make the artifact store readable"))
        checks.append(Check("leftovers", "skip", "needs a readable artifact store"))
    else:
        checks.append(_artifacts(audit, options))
        checks.append(_leftovers(project, audit, running, options))
    checks.append(_guard("schema", lambda: _schema(project)))
    checks.append(_guard("scheduler", lambda: _scheduler(project)))
    return checks


def _database(project: Project) -> Check:
    from keel.store.database import HEAD_REVISION

    try:
        store = project.metadata
    except KeelError as exc:
        return Check("database", "fail", exc.message, "make the database reachable, then rerun")
    return Check(
        "database",
        "ok",
        f"{store.url} is reachable and at schema revision {HEAD_REVISION} (the newest)",
    )


def _runs(project: Project, options: _Options) -> tuple[list[RunningRun], Check]:
    """The runs still in progress, and the check on stuck ones."""
    reaped = list(project.reaped_runs)
    running = project.metadata.running_runs()
    unknown = [r for r in running if r.liveness == "unknown"]
    if unknown and options.fix:
        reaped += project.metadata.reap_dead_runs(include_unknown=True)
        running = project.metadata.running_runs()
        unknown = [r for r in running if r.liveness == "unknown"]
    alive = [r for r in running if r.liveness == "alive"]
    notes = []
    if reaped:
        shown = ", ".join(f"{r.run_id[:12]} ({r.step})" for r in reaped[:_SHOWN])
        notes.append(f"marked {len(reaped)} run(s) of dead processes failed: {shown}")
    if alive:
        notes.append(f"{len(alive)} in progress: " + _listing(alive))
    details = {
        "reaped": [{"run": r.run_id, "step": r.step, "error": r.error} for r in reaped],
        "in_progress": [r.run_id for r in alive],
        "stuck": [r.run_id for r in unknown],
    }
    if unknown:
        message = f"{len(unknown)} run(s) stuck 'running': " + _listing(unknown)
        fix = "if no process runs them any more, `keel doctor --fix` marks them failed"
        return alive, Check("runs", "fail", "; ".join([message, *notes]), fix, details)
    message = "; ".join(["no stuck runs", *notes])
    return alive, Check("runs", "ok", message, details=details)


def _listing(found: list[RunningRun]) -> str:
    parts = [
        f"{r.run_id[:12]} ({r.step}, by {r.owner or 'an unknown process'}: {r.reason})"
        for r in found[:_SHOWN]
    ]
    return ", ".join(parts) + (f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else "")


def _artifacts(audit: ArtifactAudit, options: _Options) -> Check:
    details = {
        "referenced": audit.referenced,
        "verified": audit.verified,
        "unverified": audit.unverified,
        "missing": list(audit.missing),
        "corrupt": list(audit.corrupt),
    }
    unhashed = (
        f"; {audit.unverified} larger than 64 MiB only checked to exist (--deep hashes them)"
        if audit.unverified
        else ""
    )
    if not audit.missing and not audit.corrupt:
        message = f"all {audit.referenced} referenced artifacts present, {audit.verified} re-hashed"
        return Check("artifacts", "ok", message + unhashed, details=details)
    problems = []
    if audit.missing:
        problems.append(f"{len(audit.missing)} missing: {_shas(audit.missing)}")
    if audit.corrupt:
        problems.append(f"{len(audit.corrupt)} corrupt (bytes changed): {_shas(audit.corrupt)}")
    fix = (
        "restore them from a backup, or delete the corrupt files and run `keel run --no-cache` "
        "to re-create what a pipeline step produced (`keel runs show RUN` names the runs)"
    )
    return Check("artifacts", "fail", "; ".join(problems) + unhashed, fix, details)


def _shas(shas: tuple[str, ...]) -> str:
    shown = ", ".join(s[:12] for s in shas[:_SHOWN])
    return shown + (f" and {len(shas) - _SHOWN} more" if len(shas) > _SHOWN else "")


def _leftovers(
    project: Project, audit: ArtifactAudit, running: list[RunningRun], options: _Options
) -> Check:
    """Blobs nothing refers to and unfinished temporary files, removed with --fix."""
    from dataclasses import replace

    from keel.store.integrity import age_seconds, remove_leftovers

    def old(file: StoredFile) -> bool:
        age = age_seconds(file)
        return age is not None and age >= options.min_age

    temps = [t for t in audit.temp_files if old(t)]
    local_temps = _project_temp_files(project, options.min_age)
    # While a run is in progress its outputs are not recorded yet: they look dangling.
    dangling = [] if running else [b for b in audit.dangling if old(b.file)]
    young = len(audit.dangling) - len(dangling) + len(audit.temp_files) - len(temps)
    note = f" ({young} younger than {options.min_age:g}s or of a run in progress kept)"
    details: dict[str, Any] = {
        "dangling": [b.sha256 for b in dangling],
        "temp_files": [t.uri for t in temps] + [str(p) for p in local_temps],
    }
    count = len(dangling) + len(temps) + len(local_temps)
    if not count:
        return Check("leftovers", "ok", "none" + (note if young else ""), details=details)
    size = sum(b.file.size for b in dangling) + sum(t.size for t in temps)
    what = (
        f"{len(dangling)} blob(s) nothing refers to ({size / 2**20:.1f} MiB, left by interrupted "
        f"runs) and {len(temps) + len(local_temps)} unfinished temporary file(s)"
    )
    if not options.fix:
        return Check("leftovers", "fail", what, "`keel doctor --fix` removes them", details)
    trimmed = replace(audit, dangling=tuple(dangling), temp_files=tuple(temps))
    removed = remove_leftovers(project.artifacts, trimmed, min_age_seconds=0.0)
    for path in local_temps:
        path.unlink(missing_ok=True)
    details["removed"] = removed + [str(p) for p in local_temps]
    return Check("leftovers", "ok", f"removed {what}" + (note if young else ""), details=details)


def _project_temp_files(project: Project, min_age: float) -> list[Path]:
    """Temporary files of atomic writes (``.schema.yaml.<pid>.<id>.tmp``) whose writer is gone."""
    now = time.time()
    found = []
    for folder in (project.root, project.root / ".keel"):
        for path in sorted(folder.glob(_TEMP_GLOB)) if folder.is_dir() else ():
            try:
                if path.is_file() and now - path.stat().st_mtime >= min_age:
                    found.append(path)
            except OSError:
                continue
    return found


def _guard(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except KeelError as exc:
        return Check(name, "fail", exc.message, "fix what the message names, then rerun")


def _schema(project: Project) -> Check:
    import orjson

    from keel.pipeline.contract import SCHEMA_FILE, UPDATE_COMMAND, infer_project_schema
    from keel.validate.refresh import describe_changes, stale_changes
    from keel.validate.schema import read_schema

    sha = _latest_statistics(project)
    path = project.root / SCHEMA_FILE
    if sha is None:
        return Check("schema", "info", "no training statistics yet: `keel run` computes them")
    if not path.exists():
        fix = f"`{UPDATE_COMMAND}` (or `keel run`) infers it for review"
        return Check("schema", "fail", f"{path} is missing", fix)
    statistics = orjson.loads(project.artifacts.get(sha))
    changes = stale_changes(read_schema(path), infer_project_schema(project, statistics))
    if not changes:
        return Check("schema", "ok", f"{SCHEMA_FILE} matches the latest training statistics")
    message = (
        f"{SCHEMA_FILE} no longer matches the latest training statistics ({len(changes)} "
        f"difference(s)): {describe_changes(list(changes))}"
    )
    fix = f"`{UPDATE_COMMAND}` refreshes it (your edits on unchanged columns are kept)"
    return Check("schema", "fail", message, fix, {"changes": [c.to_dict() for c in changes]})


def _latest_statistics(project: Project) -> str | None:
    """The ``statistics`` output of the newest run that produced (or reused) one."""
    for run in project.metadata.list_runs(limit=500):
        if run.status in ("succeeded", "cached") and "statistics" in run.outputs:
            return run.outputs["statistics"]
    return None


def _scheduler(project: Project) -> Check:
    """With active schedules, a `keel scheduler` must hold the leader lease."""
    from keel.store.schedules import ScheduleStore
    from keel.store.tables import utc_now

    with ScheduleStore(project.db_url) as store:
        active = [s.name for s in store.list_schedules() if not s.paused]
        lease = store.get_lease()
    if not active:
        return Check("scheduler", "info", "no active schedules: no scheduler needed")
    now = utc_now()
    details = {"active": active, "leader": None if lease is None else lease.to_dict()}
    if lease is not None and lease.alive(now):
        message = (
            f"{len(active)} active schedule(s); leader {lease.owner} (lease valid until "
            f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
        return Check("scheduler", "ok", message, details=details)
    since = (
        "never taken" if lease is None else f"expired at {lease.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    message = (
        f"{len(active)} active schedule(s) ({', '.join(active[:_SHOWN])}) but no `keel "
        f"scheduler` leads (the leader lease was {since}): nothing runs them"
    )
    fix = "start `keel scheduler` (several may run; one leads), or pause the schedules"
    return Check("scheduler", "fail", message, fix, details)


# name -> (module, the pip extra that installs it)
_EXTRAS = {
    "ray": ("ray", "ray"),
    "xgboost": ("xgboost", "xgboost"),
    "torch": ("torch", "torch"),
    "redis": ("redis", "redis"),
    "psycopg": ("psycopg", "postgres"),
}


def _extras(project: Project) -> Check:
    needed = _needed_extras(project)
    available, missing, broken = [], [], []
    for name, (module, extra) in _EXTRAS.items():
        if name in needed:
            try:
                importlib.import_module(module)
            except Exception as exc:  # a broken install fails in many ways
                broken.append(f"{name} ({needed[name]}; pip install 'keel[{extra}]': {exc})")
                continue
            available.append(name)
        elif importlib.util.find_spec(module) is not None:
            available.append(name)
        else:
            missing.append(name)
    details = {"available": available, "not_installed": missing, "needed": needed}
    if broken:
        message = "needed but not importable: " + "; ".join(broken)
        return Check("extras", "fail", message, "install the extras named", details)
    message = f"available: {', '.join(available) or 'none'}"
    if missing:
        message += f"; not installed (not used): {', '.join(missing)}"
    return Check("extras", "ok" if needed else "info", message, details=details)


def _needed_extras(project: Project) -> dict[str, str]:
    """Extras the configuration uses, each with the setting that uses it."""
    from keel.settings import load_settings

    config, settings = project.config, load_settings()
    needed = {}
    if (settings.executor or config.executor) == "ray":
        needed["ray"] = "executor: ray"
    flavors: set[str] = {config.model.flavor}
    if config.model.flavor == "auto":
        flavors.update(config.automl.families)
    if "xgboost" in flavors:
        needed["xgboost"] = "model flavor xgboost"
    if "mlp" in flavors:
        needed["torch"] = "model flavor mlp"
    if (settings.online_store or "").startswith("redis"):
        needed["redis"] = "KEEL_ONLINE_STORE=redis://..."
    if project.db_url.startswith("postgresql"):
        needed["psycopg"] = "a postgresql:// metadata database"
    return needed


_MARKS = {
    "ok": "[green]ok[/]  ",
    "fail": "[red]FAIL[/]",
    "info": "[cyan]info[/]",
    "skip": "[dim]skip[/]",
}


_INDENT = " " * 17  # under the message: the mark's 4 columns, 2 spaces, the name's 10, 1


def _print(checks: list[Check]) -> None:
    import textwrap

    def wrapped(text: str) -> list[str]:  # 80 columns; a path or URL is never broken
        return textwrap.wrap(
            text, 80 - len(_INDENT), break_long_words=False, break_on_hyphens=False
        ) or [""]

    for check in checks:
        first, *rest = wrapped(check.message)
        out.print(f"{_MARKS[check.status]}  {check.name:<10} {escape(first)}", highlight=False)
        for line in rest:
            out.print(f"{_INDENT}{escape(line)}", highlight=False)
        if check.fix and check.status == "fail":
            for line in wrapped(f"fix: {check.fix}"):
                out.print(f"{_INDENT}{escape(line)}", highlight=False)
    failed = sum(c.status == "fail" for c in checks)
    verdict = f"[red]{failed} check(s) failed[/]" if failed else "[green]all checks passed[/]"
    out.print(verdict, highlight=False)


def _as_dict(check: Check) -> dict[str, Any]:
    return {
        "name": check.name,
        "status": check.status,
        "message": check.message,
        "fix": check.fix,
        "details": check.details,
    }
