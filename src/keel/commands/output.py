"""What every command shares: the consoles, ``--format``, ``--project`` and JSON output."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

__all__ = ["Format", "FormatOpt", "ProjectOpt", "emit_json", "err", "out", "print_wrapped"]

out = Console()
err = Console(stderr=True)


class Format(StrEnum):
    """Output formats every result-printing command accepts."""

    text = "text"
    json = "json"


ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-p", help="Project directory (default: nearest keel.yaml)."),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def emit_json(value: Any) -> None:
    """Write one JSON document to stdout (stable keys, numpy values allowed)."""
    data = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    sys.stdout.write(data.decode() + "\n")


def print_wrapped(text: str, *, indent: int, hang: int = 2, markup: bool = True) -> None:
    """``text`` at ``indent`` spaces, its continuation lines ``hang`` more, within the
    terminal's width (rich would wrap a long line at column 0). ``markup=False``: ``text`` is
    plain, printed as written."""
    import textwrap

    from rich.markup import escape

    lines = textwrap.wrap(
        text,
        width=max(out.width, 40),
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + hang),
        break_on_hyphens=False,
    )
    for line in lines:
        out.print(line if markup else escape(line), highlight=False, soft_wrap=True)
