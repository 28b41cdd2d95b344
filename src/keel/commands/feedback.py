"""`keel feedback`: delayed labels from a file, joined to the logged predictions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from keel.commands import reading
from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out

if TYPE_CHECKING:
    from keel.data.reader import ReadOptions

__all__ = ["register"]

SHOWN = 20  # rejected rows printed (all go to --rejected FILE)


def register(app: typer.Typer) -> None:
    """Add `keel feedback` to the `keel` app."""
    app.command("feedback")(feedback)


def feedback(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="A CSV or Parquet file of labels.")],
    request_id_column: Annotated[
        str,
        typer.Option(
            "--request-id-column",
            help="The column of request ids (as the server answered them). Absent from the "
            "file: rows are joined by the key columns of monitor.feedback.key.",
        ),
    ] = "request_id",
    label_column: Annotated[
        str, typer.Option("--label-column", help="The column of labels (true values).")
    ] = "label",
    instance_column: Annotated[
        str | None,
        typer.Option(
            "--instance-column",
            help="The column of instance positions (0 = first), for requests of several "
            "instances (default: the column 'instance' when the file has one, else every row "
            "names the first instance).",
        ),
    ] = None,
    rejected: Annotated[
        Path | None,
        typer.Option(
            "--rejected", help="Write every rejected row (line, reason) to this JSON Lines file."
        ),
    ] = None,
    delimiter: reading.DelimiterOpt = None,
    header: reading.HeaderOpt = None,
    columns: reading.ColumnsOpt = None,
    encoding: reading.EncodingOpt = None,
    quote: reading.QuoteOpt = None,
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Store delayed labels of NAME's served predictions from a file.

    Each row is joined to its prediction by request id (or key columns); it is accepted,
    replaces an earlier label (monitor.feedback.on_duplicate: replace), or is rejected with the
    reason: unknown request id, a label outside the target's values, a missing value, a
    duplicate. Prints the counts per outcome and the rejected rows with their line. Exits 1
    when any row was rejected. `keel monitor NAME` then shows realised performance per window.
    """
    from keel.api.labels import feedback_file
    from keel.errors import DataValidationError

    read = reading.read_options(delimiter, header, columns, encoding, quote)
    try:
        result = feedback_file(
            name,
            input,
            project=project,
            request_id_column=request_id_column,
            label_column=label_column,
            instance_column=instance_column,
            read=read,
            rejected_to=rejected,
        )
    except DataValidationError as exc:
        if exc.field != label_column or (target := _target_in(input, project, read)) is None:
            raise
        msg = f"{exc.message} It has the target column {target!r}: --label-column {target}."
        raise DataValidationError(msg, field=exc.field) from exc
    counts = result["counts"]
    if format is Format.json:
        emit_json(result)
    else:
        out.print(
            f"labels for {result['model']} from {escape(str(input))}: "
            f"{counts['accepted']} accepted, {counts['replaced']} replaced, "
            f"{counts['rejected']} rejected"
        )
        for row in result["rejected"][:SHOWN]:
            out.print(f"  line {row['line']}: {escape(row['reason'])}", highlight=False)
        if counts["rejected"] > SHOWN:
            where = f" (all in {rejected})" if rejected else " (--rejected FILE writes all)"
            out.print(f"  ... {counts['rejected'] - SHOWN} more{where}")
        repeated = any("already has a label" in row["reason"] for row in result["rejected"])
        if repeated and instance_column is None and not _has_instances(input, read):
            out.print(
                "hint: rows without an instance position name the first instance of their "
                "request. If they label other instances of requests of several instances, name "
                "the column of positions (0 = first) with --instance-column; if this file was "
                "sent before, its labels are already stored and nothing needs doing.",
                highlight=False,
            )
    if counts["rejected"]:
        raise typer.Exit(1)


def _has_instances(source: Path, read: ReadOptions | None) -> bool:
    """Whether the file has the column ``instance`` that names instance positions by default
    (its rows then do not all name the first instance: the hint about that does not apply)."""
    from keel.data.files import open_data
    from keel.data.reader import ReadOptions, file_columns

    return "instance" in file_columns(open_data(source, read or ReadOptions()))


def _target_in(source: Path, project: Path | None, read: ReadOptions | None) -> str | None:
    """The project's target column when the labels file has it (a file of labels is often
    the data's own columns: the label is under the target's name, not ``label``)."""
    from keel.data.files import open_data
    from keel.data.reader import ReadOptions, file_columns
    from keel.project import Project

    with Project(project) as proj:
        target = proj.config.data.target
    present = file_columns(open_data(source, read or ReadOptions()))
    return target if target in present else None
