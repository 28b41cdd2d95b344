"""How a data file is read: the options a caller gives, the dialect it was read as, and the
lines that could not be read. Plain values, shared by the reader and the commands."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.config import SourceConfig

__all__ = ["BadLine", "Dialect", "ReadOptions", "bad_line_reason", "count_fields"]

_NAMED = {"\t": "tab", " ": "space"}
_FIELDS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")


@dataclass(frozen=True)
class ReadOptions:
    """How to read a CSV file; every option left None is detected from the file.

    Attributes:
        delimiter: The field separator, one character (``;``, ``\\t``, ``|``).
        header: Whether the first line holds the column names.
        columns: The column names, in the file's order: names a headerless file's columns, or
            renames a header's.
        encoding: A Python codec name (``utf-8``, ``cp1252``, ``latin-1``).
        quote: The quote character, one character.
        na_values: Cell values that mean missing (besides an empty cell), e.g. ``("NA", "?")``.
        text: Columns to read as text whatever they look like (absent ones are ignored): batch
            scoring and monitoring read a model's inputs so, and the model's coercion rules
            parse them exactly as they parse the same text sent as JSON.

    Raises:
        ConfigError: An option is malformed (the message names it and what it takes).
    """

    delimiter: str | None = None
    header: bool | None = None
    columns: tuple[str, ...] | None = None
    encoding: str | None = None
    quote: str | None = None
    na_values: tuple[str, ...] = ()
    text: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("delimiter", "quote"):
            value = getattr(self, name)
            if value is not None and len(value) != 1:
                msg = (
                    f"{name} must be one character, got {value!r}. "
                    "Write a tab as '\\t' (on the command line: --delimiter '\\t')."
                )
                raise ConfigError(msg, field=name)
        if self.columns is not None:
            _check_names(self.columns)
        if self.encoding is not None:
            import codecs

            try:
                codecs.lookup(self.encoding)
            except LookupError as exc:
                msg = (
                    f"unknown encoding {self.encoding!r}; use a Python codec name such as "
                    "utf-8, cp1252 or latin-1."
                )
                raise ConfigError(msg, field="encoding") from exc

    @property
    def given(self) -> tuple[str, ...]:
        """The dialect options set here (the others are detected)."""
        names = ("delimiter", "quote", "header", "encoding")
        return tuple(name for name in names if getattr(self, name) is not None)

    def source(self, path: Path, types: dict[str, str] | None = None) -> SourceConfig:
        """The keel.yaml source these options describe, for the shared DuckDB scan."""
        from keel.config import SourceConfig

        return SourceConfig(
            path=str(path),
            header=self.header,
            delimiter=self.delimiter,
            quote=self.quote,
            encoding=self.encoding,
            na_values=list(self.na_values),
            types=types or {},
        )


def _check_names(columns: tuple[str, ...]) -> None:
    blank = [i + 1 for i, name in enumerate(columns) if not name.strip()]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if not columns or blank or repeated:
        why = (
            "no names"
            if not columns
            else f"name {blank[0]} is empty"
            if blank
            else f"{repeated[0]!r} appears twice"
        )
        msg = f"columns: {why}. Give one name per column, comma-separated: --columns a,b,c."
        raise ConfigError(msg, field="columns")


@dataclass(frozen=True)
class Dialect:
    """What a file was read as: given options and what was detected.

    Attributes:
        format: ``csv`` or ``parquet``.
        delimiter, quote, escape, header, encoding: The CSV dialect (None for Parquet, or where
            there is none, e.g. no quoting).
        given: The options the caller set; the rest were detected.
    """

    format: Literal["csv", "parquet"]
    delimiter: str | None = None
    quote: str | None = None
    escape: str | None = None
    header: bool | None = None
    encoding: str | None = None
    given: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for ``--format json`` output."""
        body = asdict(self)
        body["given"] = list(self.given)
        body["detected"] = [
            name
            for name in ("delimiter", "quote", "header", "encoding")
            if self.format == "csv" and name not in self.given
        ]
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Dialect:
        """The dialect :meth:`to_dict` wrote."""
        fields = ("delimiter", "quote", "escape", "header", "encoding")
        return cls(
            body["format"],
            **{name: body.get(name) for name in fields},
            given=tuple(body.get("given", ())),
        )

    def describe(self) -> str:
        """``csv, delimiter ';', quote '"', header, utf-8 (detected)``: one line for people."""
        if self.format == "parquet":
            return "parquet"
        parts = ["csv"]
        if self.delimiter is not None:
            parts.append(f"delimiter {_shown(self.delimiter)}")
        parts.append(f"quote {_shown(self.quote)}" if self.quote else "no quoting")
        parts.append("header" if self.header else "no header")
        if self.encoding:
            parts.append(self.encoding)
        detected = [n for n in ("delimiter", "quote", "header", "encoding") if n not in self.given]
        text = ", ".join(parts)
        if detected and self.given:
            return f"{text} (detected: {', '.join(detected)})"
        return f"{text} (detected)" if detected else text


def _shown(char: str | None) -> str:
    if char is None:
        return "none"
    return _NAMED.get(char, repr(char))


@dataclass(frozen=True)
class BadLine:
    """A line of a CSV file that could not be read as a row.

    Attributes:
        file: The file, as the caller named it.
        line: The line number in the file (1 is the first line, the header if there is one).
        reason: What is wrong, e.g. ``expected 8 fields, found 9``.
        raw: The line's text as it is in the file (None when DuckDB could not recover it).
        kind: ``too_many_fields``, ``too_few_fields``, ``broken_quoting``, ``bad_encoding``,
            ``line_too_long`` or ``unreadable``.
    """

    file: str
    line: int
    reason: str
    raw: str | None
    kind: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with stable keys."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def bad_line_reason(kind: str, message: str | None, found: int | None = None) -> tuple[str, str]:
    """DuckDB's error type and message -> (our kind, a short reason).

    ``found`` is the line's real field count, when the caller could split it (DuckDB stops
    counting at the first field too many)."""
    fields = _FIELDS.search(message or "")
    counts = ""
    if fields:
        counts = f"expected {fields[1]} fields, found {found if found is not None else fields[2]}"
    if kind == "TOO MANY COLUMNS":
        return "too_many_fields", counts or "too many fields"
    if kind == "MISSING COLUMNS":
        return "too_few_fields", counts or "too few fields"
    if kind == "UNQUOTED VALUE":
        return "broken_quoting", "broken quoting: a quoted value has text after its closing quote"
    if kind in ("INVALID UNICODE", "INVALID ENCODING"):
        return "bad_encoding", "bytes that do not decode (pass --encoding with the file's codec)"
    if kind == "LINE SIZE OVER MAXIMUM":
        return "line_too_long", "line too long (an unclosed quote runs on?)"
    first = (message or kind).strip().splitlines()[0]
    return "unreadable", first


def count_fields(raw: str | None, dialect: Dialect) -> int | None:
    """How many fields a raw line holds in ``dialect`` (None when it cannot be split)."""
    if raw is None or not dialect.delimiter:
        return None
    import csv

    try:
        return len(
            next(
                csv.reader(
                    [raw],
                    delimiter=dialect.delimiter,
                    quotechar=dialect.quote or '"',
                    quoting=csv.QUOTE_MINIMAL if dialect.quote else csv.QUOTE_NONE,
                )
            )
        )
    except (csv.Error, StopIteration):
        return None
