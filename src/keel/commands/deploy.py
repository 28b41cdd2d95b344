"""`keel deploy` (canary, shadow, A/B) and `keel deployments list|status|promote|abort`."""

from __future__ import annotations

import textwrap
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from keel.commands.models import ActorOpt
from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out

__all__ = ["register"]

RefArg = Annotated[str, typer.Argument(help="A model name (its active, else latest deployment) "
                                            "or a deployment id.")]  # fmt: skip
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why, for the audit log.")]


def register(app: typer.Typer) -> None:
    """Add `keel deploy` and `keel deployments ...` to the `keel` app."""
    app.command("deploy")(deploy)
    group = typer.Typer(
        help="Deployments (canary, shadow, A/B): list, status, promote, abort.",
        no_args_is_help=True,
    )
    for name, command in (
        ("list", list_),
        ("status", status),
        ("promote", promote),
        ("abort", abort),
    ):
        group.command(name)(command)
    app.add_typer(group, name="deployments")


def deploy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The model's name.")],
    canary: Annotated[
        int | None, typer.Option("--canary", help="Canary this version (stepped traffic).")
    ] = None,
    shadow: Annotated[
        int | None,
        typer.Option("--shadow", help="Mirror traffic to this version (answers not returned)."),
    ] = None,
    ab: Annotated[
        str | None,
        typer.Option(
            "--ab",
            help="A/B arms VERSION:WEIGHT, e.g. 3:50,4:50; weights are relative (scaled to "
            "100%: 3:1,4:3 sends 25% to version 3); a version without a weight weighs 1 "
            "(3,4 splits evenly).",
        ),
    ] = None,
    steps: Annotated[
        str,
        typer.Option(
            "--steps",
            help="Canary traffic percentages; checks that hold at the last step below 100 "
            "promote it.",
        ),
    ] = "5,25,50,100",
    interval: Annotated[
        str,
        typer.Option(
            "--interval",
            help="How long each canary interval lasts (30s, 5m, 1h; a bare number is seconds).",
        ),
    ] = "5m",
    check: Annotated[
        str,
        typer.Option(
            "--check",
            help="Bounds on the canary's own traffic per interval: error_rate (5xx), "
            "rejection_rate (4xx), p50_ms, p95_ms, p99_ms, requests; e.g. "
            "'error_rate<=0.01,p99_ms<=50'. A canary refusing (4xx) more than the primary "
            "fails an interval regardless.",
        ),
    ] = "error_rate<=0.01",
    failures: Annotated[
        int, typer.Option("--failures", help="Bad intervals in a row that roll the canary back.")
    ] = 2,
    min_requests: Annotated[
        int,
        typer.Option("--min-requests", help="Canary requests an interval needs to be judged."),
    ] = 20,
    sticky_key: Annotated[
        str | None,
        typer.Option(
            "--sticky-key",
            help="Request field (top level or in the first instance) whose value keeps a "
            "client on one arm.",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Run the canary controller here until the canary ends, printing each "
            "decision; exit 1 when it is rolled back or aborted.",
        ),
    ] = False,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Start a canary, shadow or A/B deployment; running servers pick it up within a second."""
    from keel.api.deployments import deploy as start

    _refuse_unused(ctx, canary=canary, shadow=shadow, ab=ab, sticky_key=sticky_key)

    last: list[str] = []

    def said(line: str) -> None:
        # the controller polls several times an interval: a decision is printed once, not
        # once per poll that finds the same thing ("waiting ... requests=4" over and over)
        if fmt is Format.text and line not in last:
            out.print(escape(line), highlight=False)
        last[:] = [line]

    made = start(
        name,
        canary=canary,
        shadow=shadow,
        ab=ab,
        steps=steps,
        interval=interval,
        check=check,
        failures=failures,
        min_requests=min_requests,
        sticky_key=sticky_key,
        reason=reason,
        wait=wait,
        on_decision=said,
        project=project,
        actor=actor,
    )
    gaps = _input_gaps(made, project)
    if fmt is Format.json:
        emit_json({**made, "warnings": gaps})
    else:
        _print_deployment(made)
        for gap in gaps:
            err.print(f"[yellow]warning:[/] {escape(gap)}", highlight=False)
    if wait and made.get("status") in ("rolled_back", "aborted"):
        raise typer.Exit(1)  # the canary failed its checks (or was ended): a failed check


def _refuse_unused(
    ctx: typer.Context, *, canary: Any, shadow: Any, ab: Any, sticky_key: str | None
) -> None:
    """Options given on the command line that the chosen kind would silently ignore
    (:func:`keel.registry.deployments.refuse_unused`; neither or several kinds: the API
    says so)."""
    from keel.registry.deployments import CANARY_ONLY, refuse_unused

    kinds = [k for k, v in (("canary", canary), ("shadow", shadow), ("ab", ab)) if v is not None]
    if len(kinds) != 1:
        return
    given = [
        option
        for option in CANARY_ONLY
        # typer vendors click: its ParameterSource enum is compared by name
        if getattr(ctx.get_parameter_source(option), "name", "DEFAULT")
        not in ("DEFAULT", "DEFAULT_MAP")
    ]
    if sticky_key is not None:
        given.append("sticky_key")
    refuse_unused(kinds[0], given, spell=lambda option: "--" + option.replace("_", "-"))


def _input_gaps(made: dict[str, Any], project: Any) -> list[str]:
    """Each arm version's inputs that the primary does not read: clients of the primary need
    not send them, so their requests are 422s on that arm (refusals, which fail a canary's
    intervals when they outnumber the primary's)."""
    import orjson

    from keel.project import Project
    from keel.registry.registry import Registry

    primary = (made.get("spec") or {}).get("primary")
    arms = [a["version"] for a in made.get("arms") or () if a["version"] != primary]
    if primary is None or not arms:
        return []
    with Project(project) as proj:
        registry = Registry(proj.metadata.database, proj.config.registry)

        def inputs(version: int) -> list[str]:
            found = registry.resolve(f"{made['name']}@{version}")
            manifest = orjson.loads(proj.artifacts.get(found.package_sha256))
            return [i["name"] for i in (manifest.get("signature") or {}).get("inputs", [])]

        served = set(inputs(primary))
        gaps = {v: [n for n in inputs(v) if n not in served] for v in arms}
    return [
        f"v{v} reads {', '.join(names)}, which the primary v{primary} does not: requests "
        f"without {'it' if len(names) == 1 else 'them'} get 422 from v{v}; a canary that "
        "refuses more requests than the primary fails its intervals and is rolled back, so "
        "make clients send them first."
        for v, names in gaps.items()
        if names
    ]


def _require_model(name: str, project: Any) -> None:
    """NotFoundError naming the registered models unless ``name`` is one."""
    from keel.project import Project
    from keel.registry.registry import Registry

    with Project(project) as proj:
        Registry(proj.metadata.database, proj.config.registry).versions(name)


def list_(
    name: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Deployments, newest first."""
    from keel.api.deployments import list_deployments

    found = list_deployments(name=name, limit=limit, project=project)
    if not found and name is not None:
        _require_model(name, project)  # a misspelt name is an error naming the models
    if fmt is Format.json:
        emit_json({"deployments": found})
        return
    if not found:
        of = f" of {escape(repr(name))}" if name else ""
        out.print(
            f"no deployments{of}: `keel deploy NAME --canary VERSION` starts one.",
            highlight=False,
        )
        return
    # one line per deployment, its arms and actor on the next: a table of seven columns cut a model
    # name, a status or the actor at 80 columns ("moviele…", "keel-ret")
    rows = []
    for d in found:
        by_hand = d["status"] == "promoted" and (d.get("final") or {}).get("by_hand")
        rows.append((d["id"], d["name"], d["kind"], "promoted (hand)" if by_hand else d["status"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for d, row in zip(found, rows, strict=True):
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        when = d["created_at"][:16].replace("T", " ")  # to the minute, UTC
        for line in textwrap.wrap(f"{cells}  {when}", 80, break_long_words=False,
                                  subsequent_indent="    "):  # fmt: skip
            out.print(escape(line), highlight=False)
        for line in textwrap.wrap(f"{_arms(d)}; by {d['created_by']}", 80, initial_indent="    ",
                                  subsequent_indent="    ", break_long_words=False):  # fmt: skip
            out.print(escape(line), highlight=False)


def status(ref: RefArg, project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """A deployment's arms and weights, each arm's traffic, errors and latency, its history."""
    from keel.api.deployments import deployment_status

    shown = deployment_status(ref, project=project)
    if fmt is Format.json:
        emit_json(shown)
        return
    _print_deployment(shown)


def promote(
    ref: RefArg,
    version: Annotated[
        int | None, typer.Option("--version", help="The winning arm (A/B deployments).")
    ] = None,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """End a deployment by promoting its candidate: the project's alias moves (audited)."""
    from keel.api.deployments import deployment_status, promote_deployment

    done = promote_deployment(ref, version=version, reason=reason, project=project, actor=actor)
    if fmt is Format.json:
        emit_json(done)
        return
    _print_deployment(deployment_status(done["id"], project=project))  # with its outcome


def abort(
    ref: RefArg,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """End a deployment: its traffic returns to the primary, no alias moves."""
    from keel.api.deployments import abort_deployment, deployment_status

    done = abort_deployment(ref, reason=reason, project=project, actor=actor)
    if fmt is Format.json:
        emit_json(done)
        return
    _print_deployment(deployment_status(done["id"], project=project))  # with its outcome


def _arms(d: dict[str, Any]) -> str:
    return ", ".join(
        f"v{a['version']} shadow (mirrored)"
        if a["role"] == "shadow" and d["status"] == "active"
        else f"v{a['version']} {a['role']} {a['weight']:g}%"
        for a in d["arms"]
    )


def _print_deployment(d: dict[str, Any]) -> None:
    spec = d["spec"]
    out.print(
        f"[bold]{escape(d['name'])}[/] {d['kind']} deployment {d['id']}: {d['status']}"
        f"{' (' + escape(d['reason']) + ')' if d['reason'] else ''}",
        highlight=False,
    )
    final = d.get("final")
    primary = "primary was" if final else "primary:"
    out.print(f"  arms: {escape(_arms(d))}   {primary} v{spec['primary']}", highlight=False)
    if spec.get("sticky_key"):
        key = escape(repr(spec["sticky_key"]))
        out.print(f"  sticky by {key}: requests with one value reach one arm", highlight=False)
    if final:
        _print_final(d, final)
    if d["kind"] == "canary":
        _print_steps(d, spec, final)
    if d.get("traffic"):
        table = Table(show_edge=False, collapse_padding=True)  # nine columns in 80
        columns = ("version", "role", "requests", "errors", "refused", "p50 ms", "p95 ms")
        for column in (*columns, "p99 ms", "disagree"):
            table.add_column(column)
        for t in d["traffic"]:
            table.add_row(
                f"v{t['version']}",
                t["role"],
                str(t["requests"]),
                str(t["errors"]),
                str(t.get("rejected", 0)),
                _num(t["p50_ms"]),
                _num(t["p95_ms"]),
                _num(t["p99_ms"]),
                _percent(t.get("disagreement_rate")),
            )
        out.print(table)
        for t in d["traffic"]:
            if t.get("coverage"):
                _print_coverage(t["version"], t["coverage"])
    feedback = d.get("feedback")
    if feedback is not None:
        from keel.commands.monitor import print_arms

        if "arms" in feedback:
            print_arms(feedback)
        else:
            out.print(f"  [dim]feedback:[/] {escape(feedback['note'])}", highlight=False)
    for event in d.get("events", []):
        measured = event.get("measured") or {}
        values = ", ".join(f"{k}={_num(v)}" for k, v in measured.items())
        when = event["at"][:19].replace("T", " ")  # stored in UTC, as the other lines say
        head = f"  {when} UTC  {event['action'].replace('_', ' '):<12} by {event['actor']}"
        if values and len(head) + 2 + len(values) <= 80:
            head, values = f"{head}  {values}", ""
        lines = [head, *textwrap.wrap(values, 76, initial_indent="    ", subsequent_indent="    ")]
        out.print(escape("\n".join(lines)), highlight=False)


def _print_steps(d: dict[str, Any], spec: dict[str, Any], final: dict[str, Any] | None) -> None:
    """A canary's steps, interval and checks; while it runs, its count of bad intervals."""
    steps = ",".join(f"{s:g}" for s in spec["steps"])
    step = final["step"] if final else d["step"] + 1
    # promoted by hand: it left its steps (the line above says at which one)
    hand = bool(final and final.get("by_hand") and final["status"] == "promoted")
    at = f"steps {steps}%" if hand else f"step {step}/{len(spec['steps'])} of {steps}%"
    every = _duration(spec["interval_s"])
    lines = [f"  {at}, every {every}, at least {spec['min_requests']} requests each"]
    checks = f"  checks {', '.join(spec['checks'])}"
    failures = spec["failures"]
    counter = f"bad intervals in a row {d['bad_intervals']}/{failures} (rolled back at {failures})"
    if final:  # ended: the status line above says how; a counter would no longer count
        lines.append(checks)
    elif len(checks) + 2 + len(counter) <= 80:
        lines.append(f"{checks}; {counter}")
    else:
        lines += [checks, f"  {counter}"]
    if not final and d.get("waiting"):  # this interval so far (status only)
        lines.append(f"  {d['waiting']}")
    out.print(escape("\n".join(lines)), highlight=False)


def _duration(seconds: float) -> str:
    """300 -> '5m', 30 -> '30s', 0.5 -> '500ms': the units --interval takes."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _print_final(d: dict[str, Any], final: dict[str, Any]) -> None:
    """An ended deployment's outcome (``Rollouts.status``'s ``final``): who takes the traffic
    now, not the step and weights it ended at."""
    target = f"{escape(d['name'])}@{escape(final['alias'])}"
    serving = final["serving"]
    takes = f"v{serving} takes 100% of the traffic" if serving is not None else ""
    takes = takes or f"no version holds {target}"
    if final["promotion_request"] is not None:
        said = (
            f"promoted: {target} moves to v{final['promoted']} once promotion request "
            f"{escape(str(final['promotion_request']))} is approved; until then {takes}"
        )
    elif final["promoted"] is not None:
        said = f"promoted: {takes} as {target}"
    else:
        again = " again (the primary)" if serving is not None else ""
        said = f"{d['status'].replace('_', ' ')}: {takes}{again}"
    out.print(f"  {said}", highlight=False)
    if final.get("ended_at"):  # who ended it, when, and how
        who = final["ended_by"]
        how = f"by hand by {who}" if final.get("by_hand") else f"by the canary controller ({who})"
        when = final["ended_at"][:19].replace("T", " ")
        ended = f"{d['status'].replace('_', ' ')} {how}, {when} UTC"
        if "step" in final and final.get("by_hand"):
            ended += f" (at step {final['step']}/{final['steps']})"
        out.print(f"  {escape(ended)}", highlight=False)


def _print_coverage(version: int, c: dict[str, Any]) -> None:
    """What became of a shadow's copies, its items never cut across lines: its disagreement
    rate is over the scored ones only (on a busy core most copies are shed or dropped)."""
    why = [f"{label} {c[key]:,}" for key, label in (
        ("dropped_buffer_full", "buffer full"), ("dropped_process_down", "process down"),
        ("dropped_process_died", "process died")) if c[key]]  # fmt: skip
    items = [
        f"v{version} shadow: copies {c['copies']:,}",
        f"scored {c['scored']:,} ({_percent(c['scored_rate'])})",
        f"dropped {c['dropped']:,}" + (f" ({', '.join(why)})" if why else ""),
        f"shed {c['shed']:,} (primaries queued)",
        *([f"pending {c['pending']:,}"] if c["pending"] else []),
    ]
    lines = [""]
    for index, item in enumerate(items):
        item += "," if index < len(items) - 1 else ""
        if lines[-1] and len(lines[-1]) + 1 + len(item) > 76:
            lines.append("")
        lines[-1] = f"{lines[-1]} {item}".strip()
    for index, line in enumerate(lines):
        indent = "  " if index == 0 else "    "
        for part in textwrap.wrap(line, 80 - len(indent), break_long_words=False):
            out.print(escape(indent + part), highlight=False)


def _percent(rate: float | None) -> str:
    """A shadow's disagreement rate: '40%', not '0.4' (or a bare '1' for all of them)."""
    return "-" if rate is None else f"{100 * rate:.3g}%"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
