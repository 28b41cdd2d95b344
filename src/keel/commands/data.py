"""`keel data` commands: ingest the declared sources, list and show snapshots, show how a file
reads."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out
from keel.commands.reading import (
    ColumnsOpt,
    DelimiterOpt,
    EncodingOpt,
    HeaderOpt,
    QuoteOpt,
    print_bad_lines,
    read_options,
)

if TYPE_CHECKING:
    from keel.data.snapshots import IngestResult

__all__ = ["register"]


class Split(StrEnum):
    """Which declared source ``keel data ingest`` reads."""

    all = "all"
    train = "train"
    test = "test"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `keel` app."""
    group = typer.Typer(
        help="Ingest data sources into snapshots; list and show them.", no_args_is_help=True
    )
    group.command("ingest")(ingest)
    group.command("list")(list_)
    group.command("show")(show)
    app.add_typer(group, name="data")


def ingest(
    split: Annotated[
        Split, typer.Option("--split", "-s", help="Which source: train, test or all declared.")
    ] = Split.all,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Ingest the declared source(s) now into snapshots; bad rows go to a quarantine.

    Warnings (new rows of an incremental source left out for a NULL watermark) go to stderr.
    """
    from keel import api

    results = api.ingest(split=split.value, project=project)
    for result in results.values():
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if fmt is Format.json:
        emit_json({name: _result(r) for name, r in results.items()})
        return
    for name, result in results.items():
        quarantine = f", quarantine {result.quarantine.short}" if result.quarantine else ""
        skipped = result.skipped_null_watermark
        unplaced = f", {skipped} skipped (NULL watermark)" if skipped else ""
        out.print(
            f"{name}: snapshot {result.snapshot.short}  {result.rows} rows "
            f"({result.new_rows} new), {result.bad_rows} bad{unplaced}{quarantine}",
            highlight=False,
        )


def _result(result: IngestResult) -> dict[str, Any]:
    return {
        "snapshot": result.snapshot.sha256,
        "quarantine": result.quarantine.sha256 if result.quarantine else None,
        "rows": result.rows,
        "new_rows": result.new_rows,
        "bad_rows": result.bad_rows,
        "skipped_null_watermark": result.skipped_null_watermark,
        "warnings": list(result.warnings),
    }


def list_(
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 50,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Snapshots of this project, newest first."""
    from keel import api

    found = api.snapshots(project, limit=limit)
    if fmt is Format.json:
        emit_json({"snapshots": found})
        return
    table = Table(show_edge=False)
    for column in ("snapshot", "split", "rows", "new", "bad", "source", "parent", "watermark"):
        table.add_column(column)
    for snap in found:
        parent = snap.get("parent")
        table.add_row(
            snap["sha256"][:12],
            str(snap.get("split", "")),
            str(snap.get("rows", "")),
            str(snap.get("new_rows", "")),
            str(snap.get("bad_rows", "")),
            escape(str(snap.get("source", ""))),
            parent[:12] if parent else "",
            escape(str(snap.get("watermark", "") or "")),
        )
    out.print(table)


def show(
    snapshot: Annotated[
        str,
        typer.Argument(
            help="Snapshot sha256 or a prefix (6+ hex digits), or a CSV/Parquet file.",
            metavar="SNAPSHOT|FILE",
        ),
    ],
    delimiter: DelimiterOpt = None,
    header: HeaderOpt = None,
    columns: ColumnsOpt = None,
    encoding: EncodingOpt = None,
    quote: QuoteOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """One snapshot: rows, columns and types, source, parent, watermark, bad rows, first rows.

    Given a file instead, how Keel reads it (the same reader as validate, predict and monitor):
    the dialect detected or given, rows, columns and types, first rows, malformed lines.
    """
    from pathlib import Path

    read = read_options(delimiter, header, columns, encoding, quote)
    if Path(snapshot).expanduser().is_file():
        from keel.data.reader import show_file

        shown = show_file(Path(snapshot).expanduser(), read)
        if fmt is Format.json:
            emit_json(shown)
            return
        _print_file(shown)
        return
    from keel.data.snapshots import show_snapshot
    from keel.project import Project

    with Project(project) as proj:
        shown = show_snapshot(proj, snapshot)
    if fmt is Format.json:
        emit_json(shown)
        return
    _print_snapshot(shown)


def _print_file(shown: dict[str, Any]) -> None:
    from keel.data.dialect import Dialect

    dialect = shown["dialect"]
    described = None if dialect is None else Dialect.from_dict(dialect).describe()
    bad = shown["bad_lines"]
    facts = [("file", shown["file"]), ("rows", shown["rows"]), ("read as", described)]
    facts.append(("bad lines", len(bad)))
    for label, value in facts:
        if value is not None:
            out.print(f"{label:>11}: {escape(str(value))}", highlight=False)
    _print_head(shown)
    print_bad_lines(bad)


def _dialect(dialect: dict[str, Any] | None) -> str | None:
    """``encoding=utf-8 delimiter=',' header=no``: what the CSV was read as."""
    if not dialect:
        return None
    shown = []
    for key, value in dialect.items():
        if isinstance(value, bool):
            shown.append(f"{key}={'yes' if value else 'no'}")
        elif value is not None:
            shown.append(f"{key}={value!r}" if key != "encoding" else f"{key}={value}")
    return " ".join(shown)


def _print_snapshot(shown: dict[str, Any]) -> None:
    facts = [
        ("snapshot", shown["sha256"]),
        ("rows", shown["rows"]),
        ("source", shown.get("source")),
        ("split", shown.get("split")),
        ("schema", shown.get("schema_fingerprint")),
        ("parent", shown.get("parent")),
        ("watermark", _watermark(shown)),
        ("new rows", shown.get("new_rows")),
        ("bad rows", shown.get("bad_rows")),
        ("quarantine", shown.get("quarantine")),
        ("files", ", ".join(shown.get("files") or []) or None),
        ("dialect", _dialect(shown.get("dialect"))),
    ]
    for label, value in facts:
        if value is not None:
            out.print(f"{label:>11}: {escape(str(value))}", highlight=False)
    _print_head(shown)


def _print_head(shown: dict[str, Any]) -> None:
    # one line per column, its first rows across: readable however many columns there are
    head = shown["head"]
    table = Table(title=f"columns and first {len(head)} rows", show_edge=False)
    table.add_column("column", no_wrap=True)
    table.add_column("type", no_wrap=True)
    for i in range(len(head)):
        table.add_column(str(i + 1), overflow="fold")
    for column in shown["columns"]:
        values = [
            escape("" if row[column["name"]] is None else str(row[column["name"]])) for row in head
        ]
        table.add_row(escape(column["name"]), column["type"], *values)
    out.print(table)


def _watermark(shown: dict[str, Any]) -> str | None:
    """``at = 2024-01-04 (2 source row(s) NULL, 1 new one(s) skipped)``."""
    if shown.get("watermark_column") is None:
        return None
    text = f"{shown['watermark_column']} = {shown.get('watermark')}"
    nulls, skipped = shown.get("watermark_nulls"), shown.get("skipped_null_watermark")
    if nulls:
        text += f" ({nulls} source row(s) NULL"
        text += f", {skipped} new one(s) skipped)" if skipped else ")"
    return text
