"""`keel runs` commands: list (filter, sort), show and compare tracked runs; cancel a
pipeline run."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out

__all__ = ["register"]

_METRIC_COLUMNS = 4


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `keel` app."""
    group = typer.Typer(
        help="Tracked runs: list with --filter/--sort, show one, compare several, cancel a "
        "pipeline run.",
        no_args_is_help=True,
    )
    group.command("list")(list_)
    group.command("show")(show)
    group.command("compare")(compare)
    group.command("cancel")(cancel)
    app.add_typer(group, name="runs")


def list_(
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="E.g. 'metrics.roc_auc > 0.9 and params.num_leaves <= 64 and step = \"train\"'.",
        ),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option("--sort", help="E.g. 'metrics.roc_auc desc' (default: newest first)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most this many.")] = 50,
    pipeline: Annotated[
        bool, typer.Option("--pipeline", help="List pipeline runs (one per keel run) instead.")
    ] = False,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Runs matching a filter, sorted: step, status, duration and key metrics."""
    from keel import api

    if pipeline:
        _list_pipeline_runs(api.pipeline_runs(limit=limit, project=project), fmt)
        return
    found = api.runs(filter, sort=sort, limit=limit, project=project)
    if fmt is Format.json:
        emit_json({"runs": found})
        return
    metrics = _metric_columns(found, f"{filter or ''} {sort or ''}")
    header = ["run", "step", "status", "started", "seconds"]
    rows = [
        [
            run["id"][:12],
            run["step"],
            run["status"],
            run["started_at"][:16].replace("T", " "),
            _num(run["duration_seconds"]),
            *(_num(run["metrics"].get(m)) for m in metrics),
        ]
        for run in found
    ]
    shown = _fitting(header, metrics, rows, out.width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for i, column in enumerate([*header, *shown]):
        # never squeeze the run's own columns: metric columns that do not fit are left out
        width = max(len(column), *(len(row[i]) for row in rows)) if rows else len(column)
        table.add_column(escape(column), no_wrap=True, min_width=width)
    for row in rows:
        cells = [escape(cell) for cell in row[: len(header) + len(shown)]]
        cells[2] = _status(row[2])  # the status column is coloured markup, escaped inside
        table.add_row(*cells)
    out.print(table)
    hidden = len(metrics) - len(shown)
    more = f"; {hidden} metric column(s) left out at this width (see --format json)" * bool(hidden)
    out.print(f"{len(found)} run(s){more}", highlight=False)


def _metric_columns(found: list[dict[str, Any]], query: str) -> list[str]:
    """Metrics the query names first, then the most common ones, at most four."""
    counts = Counter(name for run in found for name in run["metrics"])
    named = [m for m in counts if f"metrics.{m}" in query]
    common = [m for m, _ in counts.most_common() if m not in named]
    return (named + common)[:_METRIC_COLUMNS]


def _fitting(header: list[str], metrics: list[str], rows: list[list[str]], width: int) -> list[str]:
    """The metric columns, in order, that fit beside the fixed columns in ``width`` characters."""

    def cost(i: int, name: str) -> int:  # the widest cell and the two spaces before the next
        return max(len(name), *(len(row[i]) for row in rows)) + 2 if rows else len(name) + 2

    used = sum(cost(i, name) for i, name in enumerate(header)) - 2
    shown = []
    for i, name in enumerate(metrics, start=len(header)):
        if used + cost(i, name) > width:
            break
        used += cost(i, name)
        shown.append(name)
    return shown


def _list_pipeline_runs(found: list[dict[str, Any]], fmt: Format) -> None:
    if fmt is Format.json:
        emit_json({"pipeline_runs": found})
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("pipeline run", "trigger", "status", "started", "steps", "hits"):
        table.add_column(column, no_wrap=True)
    for run in found:
        hits = sum(1 for s in run["steps"] if s["cache"] == "hit")
        table.add_row(
            run["id"][:12],
            escape(run["trigger"]),
            _status(run["status"]),
            run["started_at"][:16].replace("T", " "),
            str(len(run["steps"])),
            str(hits),
        )
    out.print(table)
    out.print(f"{len(found)} pipeline run(s); one in full: keel runs show ID", highlight=False)


def cancel(
    run: Annotated[str, typer.Argument(help="A pipeline run's id or a unique prefix.")],
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Cancel a running pipeline run: the keel run executing it notices within a second,
    stops its running steps and records them and the run cancelled (resume it later with
    keel run --resume ID)."""
    from keel import api

    requested = api.cancel_pipeline_run(run, project=project)
    if fmt is Format.json:
        emit_json(requested)
        return
    short = requested["id"][:12]
    out.print(
        f"pipeline run {short}: cancel requested; its runner stops it within a second "
        f"(keel runs show {short}).",
        highlight=False,
    )


#: How `keel runs` colours a run's status (pipeline runs and step runs).
_STATUS_STYLES = {
    "succeeded": "green",
    "cached": "cyan",
    "failed": "red",
    "cancelled": "yellow",
    "cancel_requested": "yellow",
}


def _status(status: str) -> str:
    """A status as Rich markup, coloured when it is one of the known ones."""
    style = _STATUS_STYLES.get(status)
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def _with_warnings(whole: dict[str, Any], project: ProjectOpt) -> dict[str, Any]:
    """A pipeline run whose steps each carry the warnings their run kept (``warnings``)."""
    from keel import api

    ids = {s["run_id"] for s in whole["steps"] if s["run_id"]}
    if not ids:
        return whole
    query = f'tags.pipeline_run = "{whole["id"]}"'
    kept = {
        r["id"]: list(r.get("warnings") or [])
        for r in api.runs(query, limit=max(50, 4 * len(ids)), project=project)
    }
    steps = [s | {"warnings": kept.get(s["run_id"], [])} for s in whole["steps"]]
    return whole | {"steps": steps}


def _print_pipeline_run(shown: dict[str, Any]) -> None:
    out.print(f"pipeline run {shown['id']}: {_status(shown['status'])}", highlight=False)
    if shown["status"] == "cancel_requested":
        out.print("  (cancel requested: its runner stops it within a second)", highlight=False)
    if shown.get("resumes"):
        out.print(f"  resumes  {shown['resumes']}", highlight=False)
    reason = f" ({shown['reason']})" if shown["reason"] else ""
    out.print(f"  trigger  {escape(shown['trigger'])}{escape(reason)}", highlight=False)
    out.print(f"  started  {shown['started_at']}", highlight=False)
    out.print(f"  ended    {shown['ended_at'] or '-'}", highlight=False)
    if shown["error"]:
        out.print(f"  error    {escape(shown['error'])}", highlight=False)
    if shown["status"] in ("failed", "cancelled"):
        out.print(f"  resume   keel run --resume {shown['id'][:12]}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("step", "run", "status", "attempt", "cache", "seconds", "cpu s", "peak MB"):
        table.add_column(column, no_wrap=True)
    for step in shown["steps"]:
        table.add_row(
            escape(step["step"]),
            step["run_id"][:12] or "-",
            _status(step["status"]),
            str(step.get("attempt", 1)),
            step["cache"],
            _fixed(step["seconds"], "{:.2f}"),
            _fixed(step["cpu_seconds"], "{:.2f}"),
            _fixed(step["peak_rss_mb"], "{:.0f}"),
        )
    out.print(table)
    for step in shown["steps"]:
        if step.get("warnings"):
            what = f" ({escape(step['step'])} run {step['run_id'][:12]})"
            out.print(f"[bold yellow]warnings[/] {len(step['warnings'])}{what}", highlight=False)
            for message in step["warnings"]:  # wrapped: the view keeps to the terminal's width
                out.print(f"  - {escape(message)}", highlight=False)


def show(
    run: Annotated[
        str, typer.Argument(help="Run id or a prefix (6+ hex digits); a pipeline run's too.")
    ],
    pipeline: Annotated[
        bool, typer.Option("--pipeline", help="RUN is a pipeline run (one keel run).")
    ] = False,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """One run: warnings, params, metrics, learning curves, environment, inputs/outputs and
    lineage; or, for a pipeline run's id, its trigger, status and every step's outcome."""
    from keel import api
    from keel.errors import NotFoundError

    if not pipeline:
        try:
            shown = api.get_run(run, project=project)
        except NotFoundError:
            pipeline = True  # not a step run: perhaps a pipeline run
    if pipeline:
        whole = _with_warnings(api.get_pipeline_run(run, project=project), project)
        if fmt is Format.json:
            emit_json(whole)
        else:
            _print_pipeline_run(whole)
        return
    if fmt is Format.json:
        emit_json(shown)
        return
    _print_run(shown)


def _print_run(shown: dict[str, Any]) -> None:
    facts = [
        ("run", shown["id"]),
        ("step", shown["step"]),
        ("status", shown["status"]),
        ("started", shown["started_at"]),
        ("seconds", _num(shown["duration_seconds"])),
        ("cpu seconds", _num(shown["cpu_seconds"])),
        ("peak MB", _num(shown["peak_memory_mb"])),
        ("code", shown["code_version"]),
        ("reused run", shown["reused_run"]),
        ("error", shown["error"]),
    ]
    for label, value in facts:
        if value is not None:
            out.print(f"{label:>11}: {escape(str(value))}", highlight=False)
    _print_warnings(shown.get("warnings") or [], reused=shown["reused_run"])
    for section in ("params", "metrics", "tags", "snapshots"):
        if shown[section]:
            out.print(f"[bold]{section}[/]")
            for name, value in shown[section].items():
                out.print(f"  {escape(name)} = {escape(_num(value))}", highlight=False)
    if shown["history"]:
        table = Table(title="learning curves", show_edge=False)
        for column in ("metric", "iterations", "first", "last", "min (at)", "max (at)"):
            table.add_column(column)
        for name, s in shown["history"].items():
            table.add_row(
                escape(name),
                str(s["iterations"]),
                _num(s["first"]),
                _num(s["last"]),
                f"{_num(s['min'])} ({s.get('min_iteration', '-')})",
                f"{_num(s['max'])} ({s.get('max_iteration', '-')})",
            )
        out.print(table)
    _print_lineage(shown["lineage"])
    env = shown["environment"] or {}
    if env:
        git = env.get("git") or {}
        packages = ", ".join(f"{n} {v}" for n, v in env.get("packages", {}).items())
        out.print("[bold]environment[/]")
        out.print(f"  python {env.get('python')} on {env.get('platform')}", highlight=False)
        out.print(f"  git {git.get('commit') or '-'} {git.get('branch') or ''}", highlight=False)
        out.print(f"  {escape(packages)}", highlight=False)


def _print_warnings(warnings: list[str], *, reused: str | None) -> None:
    if not warnings:
        return
    source = f" (of the reused run {reused[:12]})" if reused else ""
    out.print(f"[bold yellow]warnings[/] {len(warnings)}{escape(source)}", highlight=False)
    for message in warnings:
        out.print(f"  - {escape(message)}", highlight=False, soft_wrap=True)


def _print_lineage(lineage: dict[str, Any]) -> None:
    for name, edge in lineage["inputs"].items():
        source = edge["from_run"][:12] if edge["from_run"] else "-"
        out.print(f"  input  {escape(name)} {edge['sha256'][:12]} <- run {source}", highlight=False)
    for name, edge in lineage["outputs"].items():
        readers = ", ".join(r[:12] for r in edge["read_by"]) or "-"
        out.print(
            f"  output {escape(name)} {edge['sha256'][:12]} -> runs {readers}", highlight=False
        )


def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more run ids or prefixes.")],
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Runs side by side: params, metrics, data and environment; differences highlighted."""
    from keel import api

    result = api.compare_runs(runs, project=project)
    if fmt is Format.json:
        emit_json(result)
        return
    table = Table(show_edge=False)
    table.add_column("")
    for run_id in result["runs"]:
        table.add_column(run_id[:12], overflow="fold")
    for section in ("run", "params", "metrics", "data", "environment"):
        if not result[section]:
            continue
        table.add_row(f"[bold]{section}[/]")
        for row in result[section]:
            style = "yellow" if row["differs"] else "dim"
            mark = "* " if row["differs"] else "  "
            values = [escape(_num(v)) for v in row["values"]]
            table.add_row(f"{mark}{escape(row['name'])}", *values, style=style)
    out.print(table)
    differing = sum(row["differs"] for s in ("params", "metrics") for row in result[s])
    out.print(f"* differs: {differing} param/metric row(s)", highlight=False)


def _fixed(value: Any, fmt: str) -> str:
    """A step's number at a fixed precision, so the step table fits 80 columns."""
    return "-" if value is None else fmt.format(value)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4f}"
    return str(value)
