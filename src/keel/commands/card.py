"""`keel models card`: a registered version's model card, as HTML or Markdown."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from keel.commands.output import ProjectOpt, out
from keel.errors import ConfigError

__all__ = ["CardFormat", "card"]

_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}


class CardFormat(StrEnum):
    """The card's formats: one self-contained HTML page, or Markdown."""

    html = "html"
    md = "md"


def card(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="NAME@VERSION or NAME@ALIAS.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the card to FILE.html or FILE.md."),
    ] = None,
    fmt: Annotated[
        CardFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="html or md (default: from --output; without it md on a terminal, else html).",
        ),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Render it now (keel.yaml's current card: words) instead "
            "of returning the card stored at registration.",
        ),
    ] = False,
    project: ProjectOpt = None,
) -> None:
    """A version's model card: details, intended use, data and its snapshot hashes, training
    parameters, metrics with intervals, slices, fairness, calibration, gate verdicts, caveats.

    The HTML page draws its plots as inline SVG and loads nothing from the network. Without
    --output the card goes to standard output: Markdown on a terminal, HTML when redirected
    (`> card.html`).
    """
    from keel import api

    chosen = _format(output, fmt)
    text = api.model_card(ref, format=chosen, project=project, fresh=fresh)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    out.print(f"model card of {ref} ({chosen}) -> {output}")


def _format(output: Path | None, fmt: CardFormat | None) -> str:
    """The format asked for, else the one --output's suffix names, else html."""
    implied = None if output is None else _SUFFIXES.get(output.suffix.lower())
    if fmt is not None:
        if implied is not None and implied != fmt.value:
            msg = (f"--format {fmt.value} does not match --output {output} (a {implied} file); "
                   "drop one or make them agree.")  # fmt: skip
            raise ConfigError(msg, field="format")
        return fmt.value
    if output is not None and implied is None:
        msg = f"--output {output}: write a .html or .md file, or pass --format html|md."
        raise ConfigError(msg, field="output")
    if implied is None and output is None and sys.stdout.isatty():
        return "md"  # a page of HTML is unreadable on a terminal
    return implied or "html"
