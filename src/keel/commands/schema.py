"""`keel schema` commands: infer a schema from data, and diff two schemas."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out

if TYPE_CHECKING:
    from keel.validate.evolution import SchemaChange

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
        str, typer.Argument(help="CSV or Parquet file, or a snapshot sha (prefix) of the project.")
    ],
    target: Annotated[str | None, typer.Option(help="The label column.")] = None,
    sensitive: Annotated[
        str | None, typer.Option(help="Comma-separated columns to audit for fairness.")
    ] = None,
    fmt: Annotated[
        SchemaFormat, typer.Option("--format", "-f", help="Output format.")
    ] = SchemaFormat.yaml,
    project: ProjectOpt = None,
) -> None:
    """Infer a schema (types, nullability, domains, roles) and print it: `> schema.yaml`."""
    from keel import api
    from keel.validate.schema import schema_to_yaml

    sensitive_columns = [c.strip() for c in (sensitive or "").split(",") if c.strip()]
    schema = api.infer_schema(data, target=target, sensitive=sensitive_columns, project=project)
    if fmt is SchemaFormat.json:
        emit_json(schema.to_dict(exclude_defaults=True))
    else:
        typer.echo(schema_to_yaml(schema), nl=False)


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
