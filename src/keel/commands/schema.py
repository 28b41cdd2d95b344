"""`keel schema` commands: infer a schema from data, and diff two schemas."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.project import Project
    from keel.validate.evolution import SchemaChange
    from keel.validate.schema import Schema

__all__ = ["register"]


class SchemaFormat(StrEnum):
    """How ``keel schema infer`` prints the schema."""

    yaml = "yaml"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `keel` app."""
    group = typer.Typer(help="Infer and compare data schemas.", no_args_is_help=True)
    group.command("infer")(infer)
    group.command("diff")(diff)
    app.add_typer(group, name="schema")


def infer(
    data: Annotated[
        str | None,
        typer.Argument(
            help="CSV or Parquet file, or a snapshot sha (prefix) of the project. With "
            "--update: default the project's training data (data.train)."
        ),
    ] = None,
    target: Annotated[str | None, typer.Option(help="The label column.")] = None,
    sensitive: Annotated[
        str | None, typer.Option(help="Comma-separated columns to audit for fairness.")
    ] = None,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Refresh the project's schema.yaml from its data: new columns added, removed "
            "ones dropped, changed types updated; your edits on other columns are kept.",
        ),
    ] = False,
    fmt: Annotated[
        SchemaFormat, typer.Option("--format", "-f", help="Output format.")
    ] = SchemaFormat.yaml,
    project: ProjectOpt = None,
) -> None:
    """Infer a schema (types, nullability, domains, roles) and print it: `> schema.yaml`.

    With --update, refresh the project's schema.yaml in place instead (what `keel run` asks
    for when the data's columns or types no longer match it).
    """
    from keel.validate.schema import schema_to_yaml

    if update:
        _update(data, target=target, sensitive=sensitive, fmt=fmt, project=project)
        return
    if data is None:
        msg = "Missing argument 'DATA': name a CSV or Parquet file or a snapshot, or pass --update."
        raise typer.BadParameter(msg, param_hint="DATA")
    sensitive_columns = [c.strip() for c in (sensitive or "").split(",") if c.strip()]
    schema, strays = _inferred(data, target, sensitive_columns, project)
    for note in strays:  # on stderr: stdout is the schema (`> schema.yaml`)
        err.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    if fmt is SchemaFormat.json:
        emit_json(schema.to_dict(exclude_defaults=True))
    else:
        typer.echo(schema_to_yaml(schema), nl=False)


def _update(
    data: str | None,
    *,
    target: str | None,
    sensitive: str | None,
    fmt: SchemaFormat,
    project: Path | None,
) -> None:
    """Refresh the project's schema.yaml; the roles come from keel.yaml."""
    from keel.pipeline.contract import update_schema
    from keel.project import Project

    if target is not None or sensitive is not None:
        msg = "with --update the target and sensitive columns come from keel.yaml; drop them."
        raise typer.BadParameter(msg, param_hint="--target/--sensitive")
    with Project(project) as proj:
        statistics = None if data is None else _statistics(data, proj)
        result = update_schema(proj, statistics)
    if fmt is SchemaFormat.json:
        changes = [c.to_dict() for c in result.changes]
        emit_json(
            {
                "path": str(result.path),
                "created": result.created,
                "changes": changes,
                "notes": list(result.notes),
            }
        )
        return
    for note in result.notes:
        err.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    if result.created:
        out.print(escape(f"{result.path}: inferred (there was none); review it."), highlight=False)
    elif not result.changes:
        out.print(escape(f"{result.path}: up to date with the data."), highlight=False)
    else:
        out.print(escape(f"{result.path}: refreshed, {len(result.changes)} change(s):"))
        for change in result.changes:
            out.print(f"  - {escape(change.message)}", highlight=False, soft_wrap=True)
        out.print("Review the new and changed columns, then run 'keel run'.", highlight=False)


def _inferred(
    data: str, target: str | None, sensitive: list[str], project: Path | None
) -> tuple[Schema, list[str]]:
    """:func:`keel.api.infer_schema` and the stray-cell warnings, from one read of the data
    (a CSV file is read once, not once for each)."""
    from keel import api
    from keel.errors import ConfigError
    from keel.validate.schema import infer_schema
    from keel.validate.statistics import compute_statistics

    resolved = api.resolve_data(data, project=project)
    statistics = compute_statistics(resolved)
    missing = [c for c in [target, *sensitive] if c and c not in statistics["columns"]]
    if missing:
        columns = ", ".join(statistics["columns"])
        msg = f"no column '{missing[0]}' in {data} (columns: {columns})."
        raise ConfigError(msg, field=missing[0])
    schema = infer_schema(statistics, target=target, sensitive=sensitive)
    return schema, _strays(resolved)


def _strays(resolved: pa.Table | Path) -> list[str]:
    """What :mod:`keel.validate.numeric_text` says of the data's number columns that a few
    stray cells made text (the same warning ``keel run`` gives)."""
    import pyarrow as pa

    from keel.validate.numeric_text import stray_message, strays_in_file, strays_in_table

    if isinstance(resolved, pa.Table):
        return [stray_message(f) for f in strays_in_table(resolved)]
    return [stray_message(f) for f in strays_in_file(resolved)]


def _statistics(data: str, project: Project) -> dict[str, Any]:
    from keel import api
    from keel.validate.statistics import compute_statistics

    return compute_statistics(api.resolve_data(data, project=project.root))


def diff(
    old: Annotated[Path, typer.Argument(help="The current schema.yaml.")],
    new: Annotated[Path, typer.Argument(help="The proposed schema.yaml.")],
    fmt: FormatOpt = Format.text,
) -> None:
    """Show how a schema changed; exit 1 when a change is breaking."""
    from keel.validate.evolution import diff_schemas
    from keel.validate.schema import read_schema

    changes = diff_schemas(read_schema(old), read_schema(new))
    breaking = any(c.breaking for c in changes)
    if fmt is Format.json:
        emit_json({"breaking": breaking, "changes": [c.to_dict() for c in changes]})
    else:
        _print_changes(changes, old, new)
    if breaking:
        raise typer.Exit(1)


def _print_changes(changes: list[SchemaChange], old: Path, new: Path) -> None:
    if not changes:
        out.print(escape(f"{old} and {new}: no changes."), highlight=False)
        return
    for change in changes:
        label = "[bold red]breaking[/]" if change.breaking else "[green]ok[/]      "
        line = f"{label}  {change.change:<22} {escape(change.message)}"
        out.print(line, highlight=False, soft_wrap=True)
    count = sum(c.breaking for c in changes)
    out.print(f"{len(changes)} change(s), {count} breaking.", highlight=False)
