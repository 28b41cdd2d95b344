"""What every command shares: the consoles, ``--format``, ``--project`` and JSON output."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

__all__ = ["Format", "FormatOpt", "ProjectOpt", "emit_json", "err", "out"]

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
