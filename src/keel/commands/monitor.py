"""`keel monitor`: drift per feature and estimated performance, per window of the prediction log."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.commands import reading
from keel.commands.output import Format, ProjectOpt, emit_json, err, out
from keel.commands.viewfill import FeaturesOpt
from keel.errors import ConfigError

__all__ = ["checked_role", "print_report", "register"]

_COLORS = {"stable": "green", "moderate": "yellow", "drift": "red", "not_enough_data": "dim",
           "not_comparable": "dim"}  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add `keel monitor NAME`, `keel monitor run NAME` and `keel monitor compact [NAME]`."""
    from keel.commands.alerts import MonitorGroup, monitor_run

    group = typer.Typer(
        cls=MonitorGroup,
        help="Drift and estimated performance per window (keel monitor NAME --help); "
        "keel monitor run NAME fires the alerts of monitor.alerts; keel monitor compact [NAME] "
        "rewrites closed log files as Parquet with stored sketches.",
    )
    group.command("check", hidden=True)(monitor)
    group.command("run")(monitor_run)
    group.command("compact")(monitor_compact)
    app.add_typer(group, name="monitor")


class MonitorFormat(StrEnum):
    """`keel monitor --format`: the shared text and json, and Prometheus' text exposition."""

    text = "text"
    json = "json"
    prometheus = "prometheus"


def monitor(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Compare this file instead of the prediction log."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="Read the logged rows of this version (all: every version)."
        ),
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
    delimiter: reading.DelimiterOpt = None,
    header: reading.HeaderOpt = None,
    columns: reading.ColumnsOpt = None,
    encoding: reading.EncodingOpt = None,
    quote: reading.QuoteOpt = None,
    features: FeaturesOpt = "auto",
    arms: Annotated[
        bool,
        typer.Option(
            "--arms",
            help="Compare the arms (version/role) by realised performance from feedback "
            "labels, with intervals and significance tests, instead of drift. Every arm "
            "with labels in --since/--until counts (earlier deployments' too): pass --since "
            "a deployment's start to compare its arms alone.",
        ),
    ] = False,
    report_file: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write a self-contained HTML report (drift over time, performance, "
            "alerts; inline SVG, no script) to this file.",
        ),
    ] = None,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact/--no-compact",
            help="First compact closed log files into Parquet with stored sketches and apply "
            "monitor.retention_days (keel monitor compact).",
        ),
    ] = True,
    project: ProjectOpt = None,
    output: Annotated[
        MonitorFormat,
        typer.Option(
            "--format",
            "-f",
            help="Output format: text, json, or prometheus (the latest window's gauges).",
        ),
    ] = MonitorFormat.text,
) -> None:
    """Drift per feature (PSI, JS, Wasserstein, a test with BH control) and, for a binary
    classifier, estimated accuracy and ROC AUC (CBPE): served inputs (or a file) vs training;
    realised performance once labels are fed back (keel feedback NAME); the servers' traffic,
    errors and latency.

    Exits 1 when the latest window drifted (its verdict is the last line). A window with fewer
    than monitor.min_rows rows says not_enough_data. An --input CSV is read like `keel predict`
    reads one (detected unless given; printed); a file without the model's input columns is an
    error that names the fix, except the view features of a model trained with feature views:
    filled from the file's entity keys as keel predict fills them (--features).
    `keel monitor run NAME` checks new windows against monitor.alerts and fires alerts.
    """
    from keel import api
    from keel.commands.viewfill import print_filled

    format = Format.json if output is MonitorFormat.json else Format.text

    if arms:
        from keel.api.labels import compare_arms

        _refuse_unused_by_arms(role=role, window=window, step=step, input=input)

        versions = None if version in (None, "all") else [str(version)]
        comparison = compare_arms(ref, project=project, versions=versions, since=since, until=until)
        if format is Format.json:
            emit_json(comparison)
        else:
            print_arms(comparison)
        return
    role = checked_role(role)
    # a file's reading options (the log needs none: keel.data.reader is not imported for it)
    read = reading.read_options(delimiter, header, columns, encoding, quote) if input else None
    report = api.monitor(
        ref,
        source=input,
        project=project,
        read=read,
        version=version,
        role=role,
        window=window,
        step=step,
        since=since,
        until=until,
        compact=compact,  # first, in the same open project (closed files only)
        features=features,
    )
    if report_file is not None:
        from keel.api.alerting import render_report

        written = render_report(report, report_file, project=project)
        err.print(f"report written to {written}", highlight=False)
    if output is MonitorFormat.prometheus:
        from keel.monitor.html import render_prometheus

        sys.stdout.write(render_prometheus(report))
    elif format is Format.json:
        emit_json(report)
    else:
        if input is not None:
            reading.print_dialect(input, report["dialect"])
            reading.print_bad_lines(report["bad_lines"])
            print_filled(report.get("features"))
        print_report(report)
    if report["latest_verdict"] == "drift":
        raise typer.Exit(1)


def monitor_compact(
    name: Annotated[
        str | None,
        typer.Argument(help="The model whose log to compact (default: every logged model)."),
    ] = None,
    project: ProjectOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> None:
    """Rewrite closed prediction-log files as Parquet partitions by version, role and day, each
    with stored sketches (drift counts per hour) that keel monitor merges instead of re-reading
    rows; then delete days older than monitor.retention_days.

    A file is closed once its UTC day is over and it has not been written for 5 minutes: files
    the server may still append to are left alone. Safe to interrupt and to run again: no row
    is lost or counted twice. keel monitor NAME runs this first unless --no-compact.
    """
    from keel.monitor.compact import compact_project

    reports = [r.to_dict() for r in compact_project(project, name)]
    if format is Format.json:
        emit_json(reports)
        return
    if not reports:
        out.print("no prediction log to compact.")
    for r in reports:
        out.print(
            f"{r['model']}: {r['files']} files ({r['rows']} rows) compacted into {r['parts']} "
            f"Parquet parts ({r['sketches']} with sketches); {r['open_files']} still open; "
            f"{r['expired_days']} days expired"
        )
        for note in r["notes"]:
            out.print(f"[dim]note:[/] {note}", highlight=False)


def print_report(report: dict[str, Any]) -> None:
    """The report as `keel monitor` prints it: features, output, windows, estimate, notes."""
    from rich import box
    from rich.table import Table

    served = f"{report['model']}@{report['version']}"
    if report.get("all_versions"):
        served = f"{report['model']} (all versions; reference: @{report['version']}'s training)"
    out.print(
        f"drift report for {served}: {report['rows']} rows from "
        f"{report['source']} vs {report['reference_rows']} training rows"
        + (f", windows of {report['window']}" if report["window"] != "all" else "")
    )
    if len(report.get("windows") or []) > 1:
        out.print("[dim]features over the whole selection; per window: the table below[/]")
    # no rules between columns: a feature name, "categorical" and "not_enough_data" fit 80
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in ("feature", "kind", "psi", "js", "w1/std", "p (BH)", "verdict"):
        table.add_column(col)
    for row in report["columns"]:
        table.add_row(
            row["column"],
            row["kind"],
            _num(row.get("psi")),  # None: not comparable (a hashed number)
            _num(row.get("js")),
            _num(row.get("wasserstein")),
            _num(row.get("p_adjusted"), "{:.2g}"),
            f"[{_COLORS[row['verdict']]}]{row['verdict']}[/]"
            + (f" ({row['reason']})" if row.get("reason") else ""),
        )
    out.print(table)
    prediction = report.get("prediction")
    if prediction:
        out.print(
            f"output: PSI {prediction['psi']:.4f}, JS {prediction['js']:.4f} vs the training "
            f"target: {prediction['verdict']}"
        )
    if report.get("windows"):
        _print_windows(report["windows"], by_rows=str(report["window"]).endswith("rows"))
    performance = report.get("performance")
    if performance:
        out.print(_performance(performance))
    if report.get("realised"):
        out.print(_realised(report["realised"]))
    if report.get("operations"):
        _print_operations(report["operations"], report.get("slo"))
    for note in report.get("notes", []):
        out.print(f"[dim]note:[/] {note}", highlight=False)
    windows = report.get("windows") or []
    out.print(
        f"verdict: {report['verdict']}"
        + (f" ({', '.join(report['drifted_columns'])})" if report["drifted_columns"] else "")
        + (" over the whole selection" if len(windows) > 1 else "")
    )
    if len(windows) > 1:  # the exit code follows the latest window
        latest = windows[-1]
        drifted = latest["drifted_columns"]
        out.print(
            f"latest window ({_moment(latest['start'])}): {report['latest_verdict']}"
            + (f" ({', '.join(drifted)})" if drifted else "")
        )


def _print_windows(windows: list[dict[str, Any]], by_rows: bool = False) -> None:
    """One line per window with only the columns some window has a value for (no CBPE
    columns for a multiclass or regression model), then, for time windows, their traffic in a
    table of its own, so both fit 80 columns (row windows leave traffic to the operations
    table: it is counted by time)."""
    from rich import box
    from rich.table import Table

    def table() -> Table:
        return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)

    drift = table()
    estimated = any(w.get("performance") for w in windows)
    labelled = any(w.get("realised") for w in windows)
    metric = next((_metric_name(w["realised"]) for w in windows if w.get("realised")), "")
    names = ["window", "rows", "drifted"]
    names += ["est. accuracy", "est. roc_auc"] if estimated else []
    names += ["labels", f"realised {metric}".rstrip()] if labelled else []
    for col in [*names, "verdict"]:
        drift.add_column(col, overflow="fold", no_wrap=col == "window")
    for window in windows:
        performance = window["performance"] or {}
        drifted = window["drifted_columns"]
        cells = [
            _window_name(window, by_rows),
            str(window["rows"]),
            ", ".join(drifted[:3]) + (f" +{len(drifted) - 3}" if len(drifted) > 3 else ""),
        ]
        if estimated:
            cells += [
                _pm(performance.get("accuracy"), performance.get("accuracy_error")),
                _pm(performance.get("roc_auc"), performance.get("roc_auc_error")),
            ]
        if labelled:
            realised = window.get("realised") or {}
            cells += [str(realised.get("labelled", 0)), _headline(realised)]
        drift.add_row(*cells, f"[{_COLORS[window['verdict']]}]{window['verdict']}[/]")
    out.print(drift)
    if by_rows or not any(w.get("latency") for w in windows):
        return
    traffic = table()
    slo = any(w.get("slo") for w in windows)
    for col in ["window", "requests", "p99 ms", "errors", *(["SLO"] if slo else [])]:
        traffic.add_column(col, no_wrap=True)
    for window in windows:
        latency = window.get("latency") or {}
        cells = [
            _window_name(window, by_rows),
            str(latency.get("requests", 0)),
            _num(latency.get("p99_ms"), "{:.3g}"),
            _num(latency.get("error_rate"), "{:.2%}"),
        ]
        traffic.add_row(*cells, *([(window.get("slo") or {}).get("status", "-")] if slo else []))
    out.print(traffic)


def _window_name(window: dict[str, Any], by_rows: bool) -> str:
    return _moment(window["start"]) + (f" .. {window['end']}" if by_rows else "")


def _metric_name(realised: dict[str, Any]) -> str:
    metrics = realised.get("metrics") or {}
    return "accuracy" if "accuracy" in metrics else "rmse" if "rmse" in metrics else ""


def _print_operations(rows: list[dict[str, Any]], slo: dict[str, Any] | None) -> None:
    """Traffic per version and role (every server's counts) and the SLO verdict."""
    from rich import box
    from rich.table import Table

    # short headers and no rules between columns: the nine columns fit 80 columns without
    # cutting a header, a role or a figure (p50 0.0816 is as wide as its header)
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title="operations (served traffic), latency in ms",
    )
    names = ["ver", "role", "requests", "req/s", "err rate", "p50", "p95", "p99"]
    for col in [*names, "log drops"]:
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["version"],
            row["role"],
            str(row["requests"]),
            _num(row.get("throughput_rps"), "{:.2f}"),
            _num(row.get("error_rate"), "{:.4f}"),
            *(_num(row.get(k), "{:.3g}") for k in ("p50_ms", "p95_ms", "p99_ms")),
            str(row.get("log_dropped", 0)),
        )
    out.print(table)
    if slo:
        color = {"met": "green", "breached": "red"}.get(slo["status"], "dim")
        shown = ", ".join(
            f"{k} {_num(o['value'], '{:.4g}')} <= {o['target']:g}: {o['status']}"
            for k, o in slo["objectives"].items()
        )
        out.print(f"SLO [{color}]{slo['status']}[/] ({shown})", highlight=False)


def _headline(realised: dict[str, Any]) -> str:
    """A window's realised headline metric (accuracy, else RMSE) with its interval."""
    if realised.get("status") != "ok":
        return "[dim]too few labels[/]" if realised else "-"
    return _interval(realised["metrics"][_metric_name(realised)])


def _interval(metric: dict[str, Any]) -> str:
    if metric["value"] is None:
        return "-"
    if metric["low"] is None:
        return f"{metric['value']:.3f}"
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _realised(realised: dict[str, Any]) -> str:
    labelled, labels = int(realised["labelled"]), int(realised["labels"])
    head = f"realised from {_plural(labelled, 'labelled row')}"
    unmatched = labels - labelled
    if unmatched > 0:  # labels counts every live label of the model, matched or not
        why = (
            "matches no logged prediction in the selection: its prediction is outside the "
            "selected windows, or was never logged"
            if unmatched == 1
            else "match no logged prediction in the selection: their predictions are outside "
            "the selected windows, or were never logged"
        )
        head += f" ({unmatched} of {_plural(labels, 'label')} {why})"
    if realised["status"] != "ok":
        return f"{head}: not enough labels (monitor.min_rows is {realised['min_rows']})"
    shown = ", ".join(f"{n} {_interval(m)}" for n, m in realised["metrics"].items())
    methods = {m.get("method", "bootstrap") for m in realised["metrics"].values()}
    kind = "bootstrap" if methods == {"bootstrap"} else "normal-approximation"
    return f"{head}: {shown} ({realised['confidence']:.0%} {kind} intervals)"


# the tests' names, shortened for an 80-column table (--format json keeps them whole)
_SHORT_TESTS = {
    "two-proportion z-test": "z-test",
    "paired bootstrap of the difference": "paired boot",
    "unpaired bootstrap of the difference": "unpaired boot",
}


def _refuse_unused_by_arms(**given: object) -> None:
    """--arms compares every version/role with labels over --since/--until: an option it
    would ignore (--role, --window, --step, --input) is refused, not dropped."""
    unused = [f"--{name}" for name, value in given.items() if value is not None]
    if unused:
        raise ConfigError(
            f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --arms "
            "(it compares every version and role with labels); select with --since, --until "
            "and --version, or drop --arms.",
            field=unused[0],
        )


def print_arms(comparison: dict[str, Any]) -> None:
    """`keel monitor NAME --arms`: each arm's realised metrics, then the tests."""
    from rich.table import Table

    out.print(
        f"arms of {comparison['model']} by realised performance (baseline: "
        f"{comparison['baseline'] or '-'}, {comparison['confidence']:.0%} intervals)"
    )
    if comparison["arms"]:
        names = list(comparison["arms"][0]["metrics"])
        table = Table(show_edge=False)
        for col in ["arm", "labels", *names]:
            table.add_column(col)
        for arm in comparison["arms"]:
            table.add_row(
                arm["arm"],
                str(arm["labelled"]),
                *(_interval(arm["metrics"][n]) if n in arm["metrics"] else "-" for n in names),
            )
        out.print(table)
    if comparison["tests"]:
        table = Table(show_edge=False, pad_edge=False)
        for col in ("arm", "metric", "diff", "interval", "p", "test", "sig"):
            table.add_column(col)
        for test in comparison["tests"]:
            interval = "-" if test["low"] is None else f"[{test['low']:+.3f}, {test['high']:+.3f}]"
            table.add_row(
                test["arm"],
                test["metric"],
                "-" if test["difference"] is None else f"{test['difference']:+.4f}",
                interval,
                _num(test["p_value"], "{:.3g}"),
                _SHORT_TESTS.get(test["method"], test["method"]),
                "[red]yes[/]" if test["significant"] else "no",
            )
        out.print(table)
        out.print(
            "[dim]z-test: two-proportion z-test; (un)paired boot: (un)paired bootstrap of the "
            "difference; sig: p < alpha[/]",
            highlight=False,
        )
    for note in comparison.get("notes", []):
        out.print(f"[dim]note:[/] {note}", highlight=False)


def _performance(performance: dict[str, Any]) -> str:
    calibrated = "calibrated" if performance.get("calibrated") else "scores taken as calibrated"
    return (
        f"estimated (CBPE, {calibrated}): accuracy "
        f"{_pm(performance['accuracy'], performance['accuracy_error'])}, ROC AUC "
        f"{_pm(performance['roc_auc'], performance['roc_auc_error'])} (± 1 standard error)"
    )


def _moment(start: str) -> str:
    """``2024-05-01`` for a day's window, ``2024-05-01 06:00`` within one, row numbers as is."""
    return start.replace("T", " ").removesuffix(" 00:00:00Z").removesuffix(":00Z")


def _num(value: float | None, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def _pm(value: float | None, error: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if error is None else f"{value:.3f} ± {error:.3f}"


def checked_role(role: str | None) -> str | None:
    """``--role`` as given; a misspelt one is a ConfigError listing the roles predictions are
    logged with (it would otherwise select nothing and report ``not_enough_data``)."""
    if role is None:
        return None
    from typing import get_args

    from keel.errors import ConfigError
    from keel.registry.deployments import Role

    roles = get_args(Role)
    if role not in roles:
        msg = f"--role: '{role}' is not a deployment role; use one of {', '.join(roles)}."
        raise ConfigError(msg, field="--role")
    return role
