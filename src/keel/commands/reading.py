"""The reading options every command that reads a data file takes, and how it prints them.

``--delimiter``, ``--header/--no-header``, ``--columns``, ``--encoding`` and ``--quote`` mean
the same on `keel validate`, `keel predict`, `keel monitor --input` and `keel data show FILE`;
left out, each is detected from the file (:mod:`keel.data.reader`), and the command prints
what it read the file as.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from keel.commands.output import err
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.data.reader import BadLine, Dialect, ReadOptions

__all__ = [
    "ColumnsOpt",
    "DelimiterOpt",
    "EncodingOpt",
    "HeaderOpt",
    "QuoteOpt",
    "print_bad_lines",
    "print_dialect",
    "read_options",
]

_PANEL = "Reading the file (detected when left out)"
DelimiterOpt = Annotated[
    str | None,
    typer.Option(
        "--delimiter",
        "-d",
        help="Field separator: ',' ';' '|' or '\\t' (tab).",
        rich_help_panel=_PANEL,
    ),
]
HeaderOpt = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help="Whether the first line is a header row (skipped; --columns replace its names).",
        rich_help_panel=_PANEL,
    ),
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="Column names in the file's order, comma-separated: a headerless file's, or in "
        "place of the header's (--header/--no-header: whether the first line is a header; "
        "sniffed when left out).",
        rich_help_panel=_PANEL,
    ),
]
EncodingOpt = Annotated[
    str | None,
    typer.Option(
        "--encoding", help="Text encoding, e.g. utf-8, cp1252, latin-1.", rich_help_panel=_PANEL
    ),
]
QuoteOpt = Annotated[
    str | None,
    typer.Option("--quote", help="Quote character, e.g. '\"' or \"'\".", rich_help_panel=_PANEL),
]
_ESCAPES = {"\\t": "\t", "tab": "\t", "TAB": "\t", "\\\\": "\\", "space": " "}


def read_options(
    delimiter: str | None = None,
    header: bool | None = None,
    columns: str | None = None,
    encoding: str | None = None,
    quote: str | None = None,
) -> ReadOptions:
    """The command line's reading options as :class:`keel.data.reader.ReadOptions`.

    ``--delimiter '\\t'`` (or ``tab``) is a tab; ``--columns a,b,c`` three names.

    Raises:
        ConfigError: An option is malformed (exit 2, with what it takes).
    """
    from keel.data.reader import ReadOptions

    names = None
    if columns is not None:
        names = tuple(name.strip() for name in columns.split(","))
        if len(names) == 1 and not names[0]:
            raise ConfigError("--columns is empty; give the names, comma-separated: a,b,c.")
    try:
        return ReadOptions(
            delimiter=_ESCAPES.get(delimiter, delimiter) if delimiter is not None else None,
            header=header,
            columns=names,
            encoding=encoding,
            quote=quote,
        )
    except ConfigError as exc:
        raise ConfigError(f"--{exc.field}: {exc.message}", field=exc.field) from exc


def print_dialect(name: str | Path, dialect: Dialect | dict[str, Any] | None) -> None:
    """``read data.csv as csv, delimiter ';', ...`` on stderr (stdout stays the result)."""
    if dialect is None:
        return
    from keel.data.dialect import Dialect

    if isinstance(dialect, dict):
        dialect = Dialect.from_dict(dialect)
    err.print(f"read {escape(str(name))} as {escape(dialect.describe())}", highlight=False)


def print_bad_lines(bad: Sequence[BadLine | dict[str, Any]], shown: int = 5) -> None:
    """A warning per malformed line (the first few), with file and line, on stderr."""
    from keel.data.dialect import BadLine

    for line in bad[:shown]:
        text = str(line if isinstance(line, BadLine) else BadLine(**line))
        err.print(f"[yellow]warning:[/] {escape(text)} (left out)", highlight=False)
    if len(bad) > shown:
        err.print(
            f"[yellow]warning:[/] {len(bad) - shown} more malformed line(s) left out "
            "(--format json lists them)",
            highlight=False,
        )
