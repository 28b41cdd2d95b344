"""`keel schedule` (add, list, show, pause, resume, remove) and the `keel scheduler` process."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out
from keel.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from keel.pipeline.scheduler import TickRequest
    from keel.store.schedule_tables import Schedule, Tick
    from keel.store.schedules import ScheduleStore

__all__ = ["pipeline_action", "register"]

NameArg = Annotated[str, typer.Argument(help="The schedule's name.")]
#: Printed (to stderr) after `keel schedule add` when no scheduler holds the leader lease.
NO_SCHEDULER_HINT = (
    "hint: no keel scheduler is running: start one with `keel scheduler` (it runs this "
    "schedule's ticks; until then nothing runs them)"
)


def register(app: typer.Typer) -> None:
    """Add `keel schedule ...` and `keel scheduler` to the `keel` app."""
    group = typer.Typer(
        help="Run the pipeline on a cron schedule or on events (new data, registry, alerts).",
        no_args_is_help=True,
    )
    group.command("add")(add)
    group.command("list")(list_)
    group.command("show")(show)
    group.command("pause")(pause)
    group.command("resume")(resume)
    group.command("remove")(remove)
    app.add_typer(group, name="schedule")
    app.command("scheduler")(scheduler)


def add(
    name: NameArg,
    cron: Annotated[
        str | None,
        typer.Option(
            help="5-field cron: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'."
        ),
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="A fixed period instead: 30s, 5m, 2h, 1d.")
    ] = None,
    on: Annotated[
        str | None,
        typer.Option(
            "--on",
            help="An event instead: new_data (a declared source changed), registry (a new "
            "version or alias move) or alert (a monitoring alert; an alert of the rule "
            "keel.yaml's retrain: policy names runs that policy: labelled rows, gates, canary).",
        ),
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="The IANA time zone --cron is read in (default UTC).")
    ] = None,
    catchup: Annotated[
        str | None,
        typer.Option(
            help="Ticks missed while no scheduler ran: none (skip), latest (run once, the "
            "default) or all (run each).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="With --on registry or alert: only events about this model."),
    ] = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Add a schedule; a running `keel scheduler` picks it up at once."""
    from keel.pipeline.schedules import add_schedule, next_due

    with _open(project) as (root, store):
        made = add_schedule(
            store, root, name, cron=cron, every=every, on=on, timezone=timezone,
            catchup=catchup, model=model,
        )  # fmt: skip
        due = next_due(made)
        lease = store.get_lease()
    running = lease is not None and lease.alive(datetime.now(UTC))
    if fmt is Format.json:
        emit_json({**made.to_dict(), "next_due": _iso(due), "scheduler_running": running})
    else:
        when = f"; next tick {_when(due)}" if due else ""
        out.print(
            f"added schedule {escape(name)}: {escape(made.describe())}{when}", highlight=False
        )
    if not running:
        err.print(NO_SCHEDULER_HINT, highlight=False)


def list_(project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Schedules with their trigger, state, next and last tick; and which scheduler leads."""
    from keel.pipeline.schedules import next_due

    with _open(project) as (_, store):
        found = store.list_schedules()
        last = {s.name: store.list_ticks(s.name, limit=1) for s in found}
        lease = store.get_lease()
    now = datetime.now(UTC)
    leader = None if lease is None else {**lease.to_dict(), "alive": lease.alive(now)}
    rows = [
        {**s.to_dict(), "next_due": _iso(next_due(s, now)),
         "last_tick": last[s.name][0].to_dict() if last[s.name] else None}
        for s in found
    ]  # fmt: skip
    if fmt is Format.json:
        emit_json({"schedules": rows, "leader": leader})
        return
    # times to the minute, no edges, catch-up left to `schedule show`: the columns fit 80
    # columns with only the trigger wrapping
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("schedule", "trigger", "state", "next", "last tick"):
        table.add_column(column, no_wrap=column != "trigger", min_width=12 * (column == "trigger"))
    for row in rows:
        tick = row["last_tick"]
        table.add_row(
            escape(row["name"]), escape(row["trigger"]),
            "paused" if row["paused"] else "active", _minute(row["next_due"]),
            f"{_minute(tick['tick_at'])} {tick['status']}" if tick else "-",
        )  # fmt: skip
    out.print(table)
    out.print(f"{len(rows)} schedule(s); {_leader_text(leader, now)}", highlight=False)


def show(
    name: NameArg,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show this many ticks.")] = 20,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """One schedule and its latest ticks: when, status, run time, overhead, reason or error."""
    from keel.pipeline.schedules import next_due

    with _open(project) as (_, store):
        found = _named(store, name)
        ticks = store.list_ticks(name, limit=limit)
    if fmt is Format.json:
        emit_json({**found.to_dict(), "next_due": _iso(next_due(found)),
                   "ticks": [t.to_dict() for t in ticks]})  # fmt: skip
        return
    state = "paused" if found.paused else "active"
    out.print(f"[bold]{escape(name)}[/]: {escape(found.describe())}, {state}", highlight=False)
    if found.kind != "event":
        out.print(f"catch-up {found.catchup}; next tick {_when(next_due(found))}", highlight=False)
    _print_ticks(ticks)


def _print_ticks(ticks: list[Tick]) -> None:
    """The ticks as a table that fits 80 columns; each error, and each reason that says more
    than the tick's own time (an event's), on a line of its own below it."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("tick", "status", "seconds", "overhead ms", "run"):
        table.add_column(column, no_wrap=True)
    said: list[str] = []
    for tick in ticks:
        took = (
            (tick.ended_at - tick.started_at).total_seconds()
            if tick.ended_at and tick.started_at
            else None
        )
        when = _when_text(tick.tick_at.isoformat())
        table.add_row(
            when, tick.status,
            f"{took:.2f}" if took is not None else "-",
            f"{tick.overhead_ms:.1f}" if tick.overhead_ms is not None else "-",
            (tick.pipeline_run_id or "-")[:12],
        )  # fmt: skip
        if tick.error:
            said.append(f"{when}: [red]error:[/] {escape(tick.error)}")
        elif tick.reason and not tick.reason.endswith(f"tick {when}"):
            said.append(f"{when}: {escape(tick.reason)}")
    out.print(table)
    for line in said:
        out.print(line, highlight=False)


def pause(name: NameArg, project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Stop a schedule from running until it is resumed."""
    _set_paused(name, True, project, fmt)


def resume(name: NameArg, project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Resume a paused schedule (ticks that fell in the pause are not caught up)."""
    _set_paused(name, False, project, fmt)


def _set_paused(name: str, paused: bool, project: Path | None, fmt: Format) -> None:
    with _open(project) as (_, store):
        _named(store, name)
        changed = store.set_paused(name, paused)
    if fmt is Format.json:
        emit_json(changed.to_dict())
        return
    out.print(f"schedule {escape(name)} {'paused' if paused else 'resumed'}", highlight=False)


def remove(name: NameArg, project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Delete a schedule (its tick history stays)."""
    with _open(project) as (_, store):
        _named(store, name)
        store.remove_schedule(name)
    if fmt is Format.json:
        emit_json({"removed": name})
        return
    out.print(f"removed schedule {escape(name)}", highlight=False)


def scheduler(
    project: ProjectOpt = None,
    lease: Annotated[
        float,
        typer.Option(help="Seconds the leader lease lasts: a dead leader is replaced within it."),
    ] = 15.0,
    poll: Annotated[
        float, typer.Option(help="Seconds between looks at event triggers and at the lease.")
    ] = 1.0,
    name: Annotated[
        str | None, typer.Option("--name", help="This process's name (default host:pid:random).")
    ] = None,
    run_for: Annotated[
        float | None, typer.Option("--for", help="Stop after this many seconds.", hidden=True)
    ] = None,
) -> None:
    """Run schedules: a long-lived process. Start several for failover: one leads at a time.

    Stops on SIGTERM or Ctrl-C: a running pipeline is interrupted and the lease released.
    """
    from keel.pipeline.scheduler import (
        Scheduler,
        SchedulerOptions,
        default_owner,
        install_signal_handlers,
    )
    from keel.store.schedules import ScheduleStore

    options = SchedulerOptions(lease, poll, name or default_owner())
    root, url = _project_db(project)
    with ScheduleStore(url) as store:
        runner = Scheduler(store, pipeline_action(root), root=root, options=options, log=_log)
        restore = install_signal_handlers(runner)
        _log(f"scheduler {options.owner} on {store.url} (lease {lease:g}s, poll {poll:g}s)")
        try:
            runner.serve(max_seconds=run_for)
        finally:
            restore()
    _log("scheduler stopped")


def pipeline_action(root: Path) -> Callable[[TickRequest], dict[str, Any]]:
    """The action ``keel scheduler`` runs for a tick: ``keel.api.run`` on ``root`` with the
    tick's trigger and reason (when this Keel's ``run`` records them), all steps cached.

    An ``on: alert`` tick whose new alerts include one of the rule keel.yaml's ``retrain:``
    policy names runs that policy instead (labelled rows, gates, canary:
    :func:`keel.api.retrain`); other alerts, or no policy, run the plain pipeline."""
    from rich.console import Console

    from keel import api

    run: Callable[..., dict[str, Any]] = api.run
    accepted = inspect.signature(run).parameters

    def action(request: TickRequest) -> dict[str, Any]:
        if request.alert_ids and _has_policy(root):
            done = api.retrain(list(request.alert_ids), project=root)
            if done:
                return {"pipeline_run_id": done[0].get("pipeline_run"), "retrain": done}
        extra = {"trigger": request.trigger, "reason": request.reason}
        kwargs = {key: value for key, value in extra.items() if key in accepted}
        return _tick_summary(run(root, console=Console(quiet=True), cache=True, **kwargs))

    return action


def _has_policy(root: Path) -> bool:
    """Whether keel.yaml (read now: it may have changed) has a ``retrain:`` policy."""
    from keel.config import load_config

    return load_config(root).retrain is not None


def _tick_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """What a tick keeps of a run's summary: the pipeline run, each step's status, the model."""
    pipeline_run = summary.get("pipeline_run_id") or summary.get("pipeline_run")
    if isinstance(pipeline_run, dict):
        pipeline_run = pipeline_run.get("id")
    model = summary.get("model") or {}
    return {
        "pipeline_run_id": pipeline_run,
        "steps": {s["step"]: s["status"] for s in summary.get("steps", [])},
        "step_runs": {s["step"]: s.get("run_id") for s in summary.get("steps", [])},
        "model": {k: model.get(k) for k in ("name", "version", "promoted", "alias")},
    }


@contextlib.contextmanager
def _open(project: Path | None) -> Iterator[tuple[Path, ScheduleStore]]:
    from keel.store.schedules import ScheduleStore

    root, url = _project_db(project)
    with ScheduleStore(url) as store:
        yield root, store


def _project_db(project: Path | None) -> tuple[Path, str]:
    from keel.project import Project

    proj = Project(project)
    return proj.root, proj.db_url


def _named(store: ScheduleStore, name: str) -> Schedule:
    """The schedule; a name that names none is a usage error (exit 2), listing the names."""
    try:
        return store.get_schedule(name)
    except NotFoundError as exc:
        raise ConfigError(exc.message, field="name") from exc


def _log(line: str) -> None:
    err.print(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z {line}", markup=False, highlight=False,
              soft_wrap=True)  # fmt: skip


def _leader_text(leader: dict[str, Any] | None, now: datetime) -> str:
    if leader is None or not leader["alive"]:
        return "no scheduler is leading: start one with keel scheduler"
    left = (datetime.fromisoformat(leader["expires_at"]) - now).total_seconds()
    return f"leader {leader['owner']} (lease renewed, expires in {left:.0f}s)"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def _minute(value: str | None) -> str:
    """``2026-12-05 05:15Z``: a time in a table, its seconds only when they are not ``00``."""
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value)
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment.second == 0 else _when(moment)


def _when_text(value: str | None) -> str:
    return "-" if value is None else _when(datetime.fromisoformat(value))
