"""Expected columns: a file that lacks them is an error that says why and how to read it right.

A file read with the wrong delimiter comes out as one column named after its whole header
line; a headerless file takes its first row for names (or gets ``column0``, ``column1``, ...).
Either way the columns a model or schema needs are not there, and the useful answer is not
"missing column 'age'" fourteen times but "the file looks ';'-separated: pass --delimiter ';'".
:func:`check_columns` looks at what was found and at the file's first line to say that.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from keel.data.reader import CsvFile, Dialect, dialect_of, file_columns
from keel.errors import DataValidationError
from keel.validate.names import name_key, name_within

__all__ = ["check_columns"]

_DELIMITERS = (",", ";", "\t", "|")
_AUTO_NAME = re.compile(r"^column\d+$")
_SHOWN_NAMES = 12


def check_columns(
    opened: Path | CsvFile | pa.Table,
    expected: Sequence[str],
    *,
    of: str = "expected",
    some_missing_ok: bool = False,
    where: str | None = None,
) -> None:
    """Raise unless the data has every expected column (or, with ``some_missing_ok``, any).

    Args:
        opened: What :func:`keel.data.reader.open_file` returned, or a table.
        expected: The columns the caller needs (a model's inputs, a schema's columns).
        of: Whose columns they are, for the message: ``"model input"``, ``"schema"``.
        some_missing_ok: Only raise when none is found (``keel validate`` reports each missing
            column as a finding with the schema's severity).
        where: How to name the data in the message (default: the file's path).

    Raises:
        DataValidationError: Columns are missing; the message lists what was expected and what
            was found, how the file was read, and the likely fix (``--delimiter ';'``,
            ``--no-header --columns ...``, a renamed column).

    Example:
        >>> check_columns(open_file("new.csv"), ["age", "income"], of="model input")
    """
    found = file_columns(opened)
    missing = [c for c in expected if c not in found]
    if not missing or (some_missing_ok and len(missing) < len(expected)):
        return
    path = (
        opened.path if isinstance(opened, CsvFile) else opened if isinstance(opened, Path) else None
    )
    dialect = dialect_of(opened)
    name = where or (str(path) if path is not None else "the data")
    none = len(missing) == len(expected)
    what = (
        f"none of the {len(expected)} {of} columns was found"
        if none
        else f"{len(missing)} of the {len(expected)} {of} columns are missing: {_names(missing)}"
    )
    parts = [f"{name}: {what}.", f"Expected: {_names(list(expected))}."]
    parts.append(f"Found {len(found)}: {_names(found)}.")
    if dialect is not None:
        parts.append(f"Read as {dialect.describe()}.")
    hints = _hints(found, list(expected), missing, path, dialect)
    parts.append(" ".join(hints) if hints else _default_fix(dialect, missing, len(expected)))
    details = {
        "expected": list(expected),
        "found": found,
        "missing": missing,
        "dialect": None if dialect is None else dialect.to_dict(),
        "hints": hints,
    }
    raise DataValidationError(" ".join(parts), field="columns", details=details)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) if _odd(n) else n for n in names[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return f"{shown}, ... ({more} more)" if more > 0 else shown or "(none)"


def _odd(name: str) -> bool:
    return not name or name != name.strip() or any(c in name for c in ",;|\t'\"")


def _default_fix(dialect: Dialect | None, missing: list[str], expected: int) -> str:
    if 2 * len(missing) <= expected:  # most are there: the file is read right, it lacks these
        return (
            f"The other {expected - len(missing)} were found, so the file is read right: add "
            f"{_names(missing)} to it (empty cells where a value is unknown)."
        )
    if dialect is not None and dialect.format == "csv":
        return "Check the file, or how it is read: --delimiter, --header/--no-header, --columns."
    return "Rename the file's columns to the expected names."


def _hints(
    found: list[str],
    expected: list[str],
    missing: list[str],
    path: Path | None,
    dialect: Dialect | None,
) -> list[str]:
    hints = []
    if dialect is not None and dialect.format == "csv" and path is not None:
        first = _first_line(path, dialect.encoding)
        hints += _dialect_hints(first, found, expected, dialect)
    if not hints:
        hints += _renamed(missing, found, expected)
    return hints


def _dialect_hints(
    first: str, found: list[str], expected: list[str], dialect: Dialect
) -> list[str]:
    """The delimiter or header fix that would bring the expected columns in, if one would."""
    hits_now = len(set(found) & set(expected))
    best: tuple[int, str] | None = None
    for delimiter in _DELIMITERS:
        if delimiter == dialect.delimiter:
            continue
        hits = len(set(_cells(first, delimiter)) & set(expected))
        if hits > hits_now and (best is None or hits > best[0]):
            best = (hits, delimiter)
    if best is not None:
        sep = best[1]
        used = _char(dialect.delimiter) if dialect.delimiter else "another delimiter"
        return [
            f"The file looks {_char(sep)}-separated (it was read with {used}): "
            f"pass --delimiter {shlex.quote(sep)}."
        ]
    if hits_now:
        return []
    cells = set(_cells(first, dialect.delimiter or ","))
    if not dialect.header and cells & set(expected):
        return ["Its first line holds the column names: pass --header."]
    order = ",".join(expected) if len(found) == len(expected) else None
    columns = (
        f"--columns {shlex.quote(order)} (if the file's fields are in that order)"
        if order
        else f"--columns with the file's {len(found)} column names in order"
    )
    if not dialect.header or all(_AUTO_NAME.match(name) for name in found):
        return [f"The file has no header line: pass {columns}."]
    shown = ", ".join(repr(name) for name in found[:3]) + (", ..." if len(found) > 3 else "")
    return [
        f"Its header names other columns ({shown}): pass {columns}, which replace the "
        "header's names; if its first line is data, not a header, add --no-header."
    ]


def _renamed(missing: list[str], found: list[str], expected: list[str]) -> list[str]:
    """``'temperature' for 'temp'``: a found column that no expected name claims, equal to a
    missing one but for case and spaces, close to it, or holding it whole. A found column that
    is itself expected ('atemp' when 'temp' is missing) is never offered, nor one twice."""
    wanted = set(expected)
    spare = [name for name in found if name not in wanted]
    pairs = []
    for name in missing:
        match = _match(name, spare)
        if match is not None:
            spare.remove(match)
            pairs.append(f"{match!r} for {name!r}")
    if not pairs:
        return []
    return [f"Renamed columns? The file has {', '.join(pairs[:5])}: rename them in the file."]


def _match(name: str, spare: list[str]) -> str | None:
    key = name_key(name)
    same = [found for found in spare if name_key(found) == key]
    if same:
        return same[0]
    close = difflib.get_close_matches(name, spare, n=1, cutoff=0.8)
    if close:
        return close[0]
    return name_within(name, spare)  # only when it can be no other


def _cells(line: str, delimiter: str) -> list[str]:
    return [cell.strip().strip("\"'").strip() for cell in line.split(delimiter)]


def _char(char: str) -> str:
    return {"\t": "tab", " ": "space"}.get(char, repr(char))


def _first_line(path: Path, encoding: str | None) -> str:
    try:
        with path.open(encoding=encoding or "utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    return line.rstrip("\r\n").lstrip("\ufeff")
    except (OSError, LookupError):
        pass
    return ""
