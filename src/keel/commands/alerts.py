"""`keel alerts` (list, show, ack, resolve, retrain) and `keel monitor run`: alert rules at work."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from keel.commands.monitor import checked_role
from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out

__all__ = ["MonitorGroup", "monitor_run", "register"]

IdArg = Annotated[int, typer.Argument(help="The alert's id (keel alerts list).")]
_SEVERITY = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


class MonitorGroup(TyperGroup):
    """`keel monitor NAME ...` runs the check; `keel monitor run NAME ...` the alert rules."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # `keel monitor --help` lists the subcommands; anything else that is not one is a check
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["check", *args]
            ctx.meta["keel.monitor.implicit"] = True
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # the check a bare `keel monitor NAME` runs is not named on the command line: its usage
        # (and errors) say `keel monitor NAME`, never the hidden `keel monitor check`
        name, command, rest = super().resolve_command(ctx, args)
        if not ctx.meta.pop("keel.monitor.implicit", False) or command is None:
            return name, command, rest
        unnamed = copy.copy(command)  # (a copy: the app's command is left as it is)
        unnamed.context_class = _unnamed(command.context_class)
        return None, unnamed, rest


_UNNAMED: dict[type[Any], type[Any]] = {}


def _unnamed(base: type[Any]) -> type[Any]:
    """A context class (of the CLI's own click) whose command path leaves out the subcommand
    run without its name: the group's path."""
    if base not in _UNNAMED:

        class Unnamed(base):  # type: ignore[misc]
            @property
            def command_path(self) -> str:
                return str(super().command_path).rstrip()

        _UNNAMED[base] = Unnamed
    return _UNNAMED[base]


def register(app: typer.Typer) -> None:
    """Add `keel alerts ...` to the `keel` app."""
    group = typer.Typer(
        help="Alerts fired by keel monitor run (monitor.alerts rules): list, show, ack, resolve, "
        "retrain.",
        no_args_is_help=True,
    )
    group.command("list")(list_)
    group.command("show")(show)
    group.command("ack")(ack)
    group.command("resolve")(resolve)
    group.command("retrain")(retrain_)
    app.add_typer(group, name="alerts")


def monitor_run(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    version: Annotated[
        str | None,
        typer.Option("--version", help="Read the logged rows of this version (all: every one)."),
    ] = None,
    role: Annotated[
        str | None,
        typer.Option("--role", help="Read one deployment role: primary, canary, shadow or ab."),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            "-w",
            help="Windows of 1d, 6h, 30m, 1w, 1mo (UTC months) or 1000rows (default: keel.yaml "
            "monitor.window, else the whole log as one).",
        ),
    ] = None,
    step: Annotated[
        str | None, typer.Option("--step", help="Slide the windows by this (e.g. 1d).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Requests at or after this ISO time (UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Requests before this ISO time (UTC).")
    ] = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="Check again every 30s, 5m, 1h... until Ctrl-C (or --times)."),
    ] = None,
    times: Annotated[
        int | None,
        typer.Option("--times", min=1, help="With --every: stop after this many checks."),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Run keel.yaml's retrain: policy when its rule fired: retrain with the "
            "labelled window and start a canary of a version that passes its gates.",
        ),
    ] = False,
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Check the windows not checked yet against keel.yaml's monitor.alerts and fire alerts.

    Each rule (e.g. `drift.any_feature.psi > 0.2 for 2 windows`) is evaluated
    per window; an alert is stored once per rule, model, version, role and
    window span, stays quiet for the rule's cooldown, records an `alert` event
    (for `keel schedule add NAME --on alert`) and goes to the rule's sinks (log,
    signed webhook, command), retried with backoff. Runs once, or every --every
    until Ctrl-C. Exits 0 whether or not alerts fired.

    With --retrain, a new alert of the rule keel.yaml's retrain.on names runs
    the policy: the labelled predictions of retrain.data are added to the
    training data, the pipeline runs through its gates, and a passing version
    starts a canary (retrain.steps, interval, checks).
    """
    from keel import api
    from keel.monitor.rules import parse_duration

    if retrain:
        from keel.pipeline.retrain import check_policy
        from keel.project import Project

        with Project(project) as proj:  # a bad policy stops before alerts are stored
            check_policy(proj)

    period = None if every is None else parse_duration(every, "--every")
    if period is not None and period <= 0:
        raise typer.BadParameter("--every must be longer than 0s", param_hint="--every")
    if times is not None and period is None:
        raise typer.BadParameter("--times needs --every", param_hint="--times")
    role = checked_role(role)
    _quiet_log_sink()
    passes = 0
    try:
        while True:
            patience = None if period is None else min(60.0, period / 2)
            result = api.monitor_run(ref, project=project, version=version, role=role,
                                     window=window, step=step, since=since, until=until,
                                     patience=patience)  # fmt: skip
            passes += 1
            if retrain:
                fired = [a["id"] for a in result["alerts"]]
                result["retrain"] = api.retrain(fired, project=project) if fired else []
            result["notes"] = [*result["notes"], *_policy_notes(result, project, retrain)]
            if format is Format.json:
                emit_json(result)
            else:
                _print_run(result)
            if period is None or (times is not None and passes >= times):
                return
            time.sleep(period)
    except KeyboardInterrupt:
        err.print(f"stopped after {passes} check{'s' * (passes != 1)}")


def _quiet_log_sink() -> None:
    """The `log` sink writes to the `keel.alerts` logger; with no logging configured, Python's
    last-resort handler would print each warning and critical alert to stderr a second time,
    unformatted and over 80 columns, beside the lines this command prints. Logging that is
    configured (a handler on that logger or on the root) still gets every alert."""
    import logging

    logger = logging.getLogger("keel.alerts")
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(logging.NullHandler())


def list_(
    model: Annotated[str | None, typer.Option("--model", "-m", help="One model's alerts.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="open, acknowledged or resolved.")
    ] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="One rule's alerts.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Stored alerts, newest first."""
    from keel import api

    found = api.alerts(project=project, model=model, status=status, rule=rule, limit=limit)
    if format is Format.json:
        emit_json(found)
        return
    if not found:
        out.print("no alerts" + (f" with status {status}" if status else ""))
        return
    # no edges: a day window ("2024-05-01 .. 2024-05-02") and the minute fired fit 80 columns
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in ("id", "severity", "rule", "model", "window", "value", "status", "fired"):
        table.add_column(col, no_wrap=col in ("window", "fired"))
    for a in found:
        table.add_row(
            str(a["id"]),
            f"[{_SEVERITY.get(a['severity'], '')}]{a['severity']}[/]",
            escape(a["rule"]),
            escape(f"{a['model']}@{a['version']}" + (f" ({a['role']})" if a["role"] else "")),
            escape(_span(a["window_start"], a["window_end"])),
            "-" if a["value"] is None else f"{a['value']:.4g}",
            a["status"],
            str(a["fired_at"])[:16].replace("T", " "),  # to the minute: fits 80 columns
        )
    out.print(table)


def show(
    alert_id: IdArg,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also write the evidence as an SVG chart to this file."),
    ] = None,
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """One alert: its rule, message, the evidence per window, and its deliveries."""
    from keel import api

    alert = api.get_alert(alert_id, project=project)
    if plot is not None:
        from keel.api.alerting import write_report
        from keel.monitor.html import evidence_chart

        write_report(plot, evidence_chart(alert) + "\n", option="--plot")
        err.print(f"evidence chart written to {plot}", highlight=False)
    if format is Format.json:
        emit_json(alert)
        return
    _print_alert(alert)
    evidence = alert["evidence"]
    table = Table(box=box.SIMPLE, title=f"evidence: {escape(alert['condition'])}")
    for col in ("window", "rows", "value", "feature", "verdict", "drifted"):
        table.add_column(col)
    for w in evidence.get("windows", []):
        table.add_row(
            escape(_span(w.get("start"), w.get("end"))),
            str(w.get("rows")),
            f"{w['value']:.4g}",
            escape(str(w.get("feature") or "-")),
            str(w.get("verdict")),
            escape(", ".join(w.get("drifted_columns") or [])[:60]),
        )
    out.print(table)
    for d in alert["deliveries"]:
        target = "" if d["target"] in (d["sink"], "", None) else f" {d['target']}"
        line = f"delivery to {d['sink']}{target}: {d['status']} after {d['attempts']} attempt"
        line += "s" * (d["attempts"] != 1)
        if d["last_error"]:
            line += f" (last error: {d['last_error']})"
        out.print(escape(line), highlight=False)


def ack(
    alert_id: IdArg,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who acknowledges (default: KEEL_ACTOR or you).")
    ] = None,
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Acknowledge an alert: its status becomes acknowledged, with who did it and when."""
    from keel import api

    alert = api.ack_alert(alert_id, project=project, actor=actor)
    _changed(alert, format)


def resolve(
    alert_id: IdArg,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who resolves (default: KEEL_ACTOR or you).")
    ] = None,
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Mark an alert resolved, with who did it and when."""
    from keel import api

    alert = api.resolve_alert(alert_id, project=project, actor=actor)
    _changed(alert, format)


def retrain_(
    alert_ids: Annotated[
        list[int], typer.Argument(help="Alert ids (keel alerts list) of the retrain.on rule.")
    ],
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Run keel.yaml's retrain: policy for a stored alert of its rule (the newest of these).

    keel monitor run --retrain runs the policy only for an alert that its own check fires;
    this runs it for one fired earlier (by a check without --retrain, or a scheduler): the
    labelled predictions of retrain.data are added to the training data, the pipeline runs
    through its gates, and a passing version starts a canary. Exit 1 when no alert given is
    of the retrain.on rule.
    """
    from keel import api

    done = api.retrain(alert_ids, project=project)
    if format is Format.json:
        emit_json(done)
    else:
        _print_run_retrain(done)
    if not done:
        err.print(
            escape(f"no retraining: none of the alerts {', '.join(f'#{i}' for i in alert_ids)} "
                   f"is of the rule keel.yaml's retrain.on names (keel alerts list --rule "
                   f"{_policy_rule(project) or 'RULE'})"),
            highlight=False,
        )  # fmt: skip
        raise typer.Exit(1)


def _policy_rule(project: Path | None) -> str | None:
    """The monitor.alerts rule keel.yaml's ``retrain:`` policy names, if it has one."""
    from keel.config import load_config
    from keel.project import find_project

    policy = load_config(find_project(project)).retrain
    return None if policy is None else policy.on


def _policy_notes(result: dict[str, Any], project: Path | None, retrain: bool) -> list[str]:
    """Say why a retrain: policy did not run although its rule fired (now or earlier)."""
    rule = _policy_rule(project)
    if rule is None:
        return []
    fired = [a["id"] for a in result["alerts"] if a["rule"] == rule]
    if fired and not retrain:
        return [
            f"alert #{fired[-1]} is of rule {rule!r}, which keel.yaml's retrain: policy names, "
            f"but the policy runs only with --retrain: keel alerts retrain {fired[-1]}"
        ]
    earlier = [s for s in result["skipped"] if s["rule"] == rule and s["reason"] == "duplicate"]
    if retrain and not fired and earlier:
        return [
            f"retrain: rule {rule!r} fired for this window in an earlier check, so no new "
            f"alert runs the policy: keel alerts list --rule {rule}, then keel alerts retrain ID"
        ]
    return []


def _changed(alert: dict[str, Any], format: Format) -> None:
    if format is Format.json:
        emit_json(alert)
        return
    out.print(
        f"alert #{alert['id']} ({escape(alert['rule'])}) is {alert['status']} "
        f"(by {escape(str(alert['status_by']))} at {str(alert['status_at'])[:19]})",
        highlight=False,
    )


def _print_run(result: dict[str, Any]) -> None:
    role = f" ({result['role']})" if result["role"] else ""
    out.print(
        f"checked {result['windows_checked']} window(s) of {result['window']} for "
        f"{result['model']}@{result['version']}{role}: {len(result['alerts'])} new alert(s)",
        highlight=False,
    )
    for alert in result["alerts"]:
        _print_alert(alert)
    for skipped in result["skipped"]:
        out.print(
            escape(f"  not fired: {skipped['rule']} {_span(skipped['start'], skipped['end'])}: "
                   f"{skipped['reason']}"),
            style="dim", highlight=False,
        )  # fmt: skip
    counts = result["deliveries"]
    if any(counts.values()):
        out.print(
            f"deliveries: {counts['delivered']} delivered, {counts['retrying']} to retry, "
            f"{counts['failed']} failed",
            highlight=False,
        )
    for note in result["notes"]:
        out.print(f"[dim]note:[/] {escape(note)}", highlight=False)
    _print_run_retrain(result.get("retrain", []))
    if result["checked_until"]:
        out.print(f"[dim]checked up to {result['checked_until']}[/]", highlight=False)


def _print_run_retrain(runs: list[dict[str, Any]]) -> None:
    for done in runs:
        out.print(
            escape(f"retrain (alert #{done['alert_id']}): {done['status']}: {done['message']}"
                   + (f"; pipeline run {done['pipeline_run']}" if done["pipeline_run"] else "")),
            highlight=False,
        )  # fmt: skip


def _print_alert(alert: dict[str, Any]) -> None:
    colour = _SEVERITY.get(alert["severity"], "")
    role = f" ({alert['role']})" if alert["role"] else ""
    out.print(
        f"[{colour}]{alert['severity'].upper()}[/] #{alert['id']} {escape(alert['rule'])} on "
        f"{escape(alert['model'])}@{alert['version']}{escape(role)}, window "
        f"{escape(_span(alert['window_start'], alert['window_end']))}: "
        f"{escape(alert['message'])} [{alert['status']}]",
        highlight=False,
    )


def _span(start: Any, end: Any) -> str:
    """A window as ``start .. end``, times shortened; the whole log as ``all``."""
    from keel.monitor.window import window_span

    return window_span(_short(str(start or "")), _short(str(end or "")))


def _short(text: str) -> str:
    return text.replace("T", " ").removesuffix(" 00:00:00Z").removesuffix(":00Z")
