"""`keel lineage`: where an object came from, or what it influenced, down to served requests."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from keel.commands.output import ProjectOpt, emit_json, out

__all__ = ["register"]


class LineageFormat(StrEnum):
    text = "text"
    json = "json"
    dot = "dot"


def register(app: typer.Typer) -> None:
    """Add `keel lineage` to the `keel` app."""
    app.command("lineage")(lineage)


def lineage(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="An artifact sha256 (or prefix), run id, NAME@VERSION, NAME@ALIAS or the "
            "request id of a served prediction; prefix with artifact:, run:, version:, alias: "
            "or prediction: when an id is ambiguous.",
        ),
    ],
    up: Annotated[
        bool, typer.Option("--up", help="Ancestors: the data, runs and models it came from.")
    ] = False,
    down: Annotated[
        bool,
        typer.Option("--down", help="Descendants: the runs, models and predictions it reached."),
    ] = False,
    fmt: Annotated[
        LineageFormat, typer.Option("--format", "-f", help="text, json or dot (Graphviz).")
    ] = LineageFormat.text,
    max_nodes: Annotated[
        int, typer.Option("--max-nodes", min=1, help="Stop the walk after this many objects.")
    ] = 500,
    project: ProjectOpt = None,
) -> None:
    """Lineage of any object, up (--up, the default) or down (--down), with hashes.

    keel lineage REQUEST_ID --up: which data made this prediction.
    keel lineage SNAPSHOT_SHA --down: which models and predictions this data influenced.
    """
    from keel import api
    from keel.errors import ConfigError
    from keel.registry.lineage import render_dot, render_text

    if up and down:
        raise ConfigError("give --up or --down, not both")
    graph = api.lineage(ref, direction="down" if down else "up", max_nodes=max_nodes,
                        project=project)  # fmt: skip
    if fmt is LineageFormat.json:
        emit_json(graph.to_json())
    elif fmt is LineageFormat.dot:
        out.print(render_dot(graph), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(render_text(graph), markup=False, highlight=False, soft_wrap=True)
