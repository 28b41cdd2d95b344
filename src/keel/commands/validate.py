"""`keel validate`: check a file or snapshot against a schema and a reference."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from keel.commands.output import ProjectOpt, emit_json, err, out
from keel.commands.reading import (
    ColumnsOpt,
    DelimiterOpt,
    EncodingOpt,
    HeaderOpt,
    QuoteOpt,
    print_dialect,
    read_options,
)

if TYPE_CHECKING:
    from keel.data.reader import CsvFile, Dialect, ReadOptions
    from keel.validate.anomalies import ValidationReport

__all__ = ["register"]

_SHA = re.compile(r"^[0-9a-fA-F]{6,64}$")


class ReportFormat(StrEnum):
    """Output formats of ``keel validate``."""

    text = "text"
    json = "json"
    html = "html"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `keel` app."""
    app.command("validate")(validate)


def validate(
    data: Annotated[str, typer.Argument(help="CSV/Parquet file, or a snapshot sha (or prefix).")],
    schema: Annotated[
        Path | None, typer.Option("--schema", help="Reviewed schema.yaml (default: inferred).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", help="Snapshot sha, CSV/Parquet file or statistics JSON to compare with."
        ),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="The label column.")] = None,
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.text,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file (default validation.html).")
    ] = None,
    outliers: Annotated[
        bool, typer.Option("--outliers", help="Also find outlying rows (sampled).")
    ] = False,
    label_noise: Annotated[
        bool, typer.Option("--label-noise", help="Also find likely mislabeled rows (sampled).")
    ] = False,
    delimiter: DelimiterOpt = None,
    header: HeaderOpt = None,
    columns: ColumnsOpt = None,
    encoding: EncodingOpt = None,
    quote: QuoteOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Validate DATA; exit 0 without error-severity anomalies, 1 with, 2 on a usage error.

    A CSV file's delimiter, quoting, header and encoding are detected unless given; what it
    was read as is printed (and is ``dialect`` in JSON). Malformed lines are a finding
    (``malformed_row``, with their line numbers); the rest of the file is still checked.
    """
    from keel import api

    read = read_options(delimiter, header, columns, encoding, quote)
    opened = _open(data, read)
    dialect = None if opened is None else opened.dialect
    report = api.validate(
        data if opened is None else opened,
        schema=schema,
        reference=reference,
        target=target,
        outliers=outliers,
        label_noise=label_noise,
        project=project,
        read=read,
    )
    if format is ReportFormat.json:
        emit_json({**report.to_dict(), "dialect": _dialect_json(data, dialect)})
    elif format is ReportFormat.html:
        path = output or Path("validation.html")
        path.write_text(report.to_html(), encoding="utf-8")
        out.print(f"Wrote {path}", highlight=False)
    else:
        print_dialect(data, dialect)
        _print(report)
    if not report.ok:
        raise typer.Exit(1)


def _open(data: str, read: ReadOptions) -> CsvFile | None:
    """DATA opened by the reader when it is a CSV file (so its dialect can be shown)."""
    from keel.data.files import is_parquet, open_data
    from keel.data.reader import CsvFile

    path = Path(data).expanduser()
    if not path.is_file() or is_parquet(path):
        named = path.is_file() or _SHA.match(data) is not None  # Parquet, or a snapshot
        if named and (read.given or read.columns is not None):
            err.print(
                f"note: {data} is not a CSV file; the reading options do not apply to it.",
                markup=False,
                highlight=False,
            )
        return None
    opened = open_data(path, read)
    return opened if isinstance(opened, CsvFile) else None


def _dialect_json(data: str, dialect: Dialect | None) -> dict[str, Any] | None:
    if dialect is not None:
        return dialect.to_dict()
    from keel.data.files import is_parquet

    path = Path(data).expanduser()
    return {"format": "parquet"} if path.is_file() and is_parquet(path) else None


def _print(report: ValidationReport) -> None:
    verdict = "[green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    errors = len(report.errors)
    out.print(
        f"{verdict} {report.name}: {report.rows} rows, {errors} errors, "
        f"{len(report.anomalies) - errors} warnings"
    )
    for note in report.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if not report.anomalies:
        return
    table = Table(show_edge=False)
    for header in ("severity", "kind", "column", "message"):
        table.add_column(header, overflow="fold")
    for a in report.anomalies:
        colour = "red" if a.severity == "error" else "yellow"
        table.add_row(f"[{colour}]{a.severity}[/]", a.kind, a.column or "-", a.message)
    out.print(table)
