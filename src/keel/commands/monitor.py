"""`keel monitor`: drift per feature and estimated performance, per window of the prediction log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.commands import reading
from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out

__all__ = ["print_report", "register"]

_COLORS = {"stable": "green", "moderate": "yellow", "drift": "red", "not_enough_data": "dim"}


def register(app: typer.Typer) -> None:
    """Add `keel monitor` to the `keel` app."""
    app.command("monitor")(monitor)


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
        typer.Option("--role", help="Read one deployment role: primary, canary or shadow."),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            "-w",
            help="Windows of 1d, 6h, 30m, 1w or 1000rows (default: keel.yaml "
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
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Drift per feature (PSI, JS, Wasserstein, a test with BH control) and, for a binary
    classifier, estimated accuracy and ROC AUC (CBPE): served inputs (or a file) vs training.

    Exits 1 when the latest window drifted. A window with fewer than monitor.min_rows rows says
    not_enough_data. An --input CSV is read like `keel predict` reads one (detected unless
    given; printed); a file without the model's input columns is an error that names the fix.
    """
    from keel import api

    read = reading.read_options(delimiter, header, columns, encoding, quote)
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
    )
    if format is Format.json:
        emit_json(report)
    else:
        if input is not None:
            reading.print_dialect(input, report["dialect"])
            reading.print_bad_lines(report["bad_lines"])
        print_report(report)
    if report["latest_verdict"] == "drift":
        raise typer.Exit(1)


def print_report(report: dict[str, Any]) -> None:
    """The report as `keel monitor` prints it: features, output, windows, estimate, notes."""
    from rich.table import Table

    out.print(
        f"drift report for {report['model']}@{report['version']}: {report['rows']} rows from "
        f"{report['source']} vs {report['reference_rows']} training rows"
        + (f", windows of {report['window']}" if report["window"] != "all" else "")
    )
    table = Table(show_edge=False)
    for col in ("feature", "kind", "psi", "js", "w1/std", "p (BH)", "verdict"):
        table.add_column(col)
    for row in report["columns"]:
        table.add_row(
            row["column"],
            row["kind"],
            f"{row['psi']:.4f}",
            _num(row.get("js")),
            _num(row.get("wasserstein")),
            _num(row.get("p_adjusted"), "{:.2g}"),
            f"[{_COLORS[row['verdict']]}]{row['verdict']}[/]",
        )
    out.print(table)
    prediction = report.get("prediction")
    if prediction:
        out.print(
            f"output: PSI {prediction['psi']:.4f}, JS {prediction['js']:.4f} vs the training "
            f"target: {prediction['verdict']}"
        )
    if report.get("windows"):
        _print_windows(report["windows"])
    performance = report.get("performance")
    if performance:
        out.print(_performance(performance))
    for note in report.get("notes", []):
        out.print(f"[dim]note:[/] {note}", highlight=False)
    out.print(
        f"verdict: {report['verdict']}"
        + (f" ({', '.join(report['drifted_columns'])})" if report["drifted_columns"] else "")
    )


def _print_windows(windows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(show_edge=False)
    for col in ("window", "rows", "drifted", "est. accuracy", "est. roc_auc", "verdict"):
        table.add_column(col)
    for window in windows:
        performance = window["performance"] or {}
        table.add_row(
            _moment(window["start"]),
            str(window["rows"]),
            ", ".join(window["drifted_columns"][:4]),
            _pm(performance.get("accuracy"), performance.get("accuracy_error")),
            _pm(performance.get("roc_auc"), performance.get("roc_auc_error")),
            f"[{_COLORS[window['verdict']]}]{window['verdict']}[/]",
        )
    out.print(table)


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
