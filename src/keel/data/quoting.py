"""Broken quoting: find the lines, and set them aside so the rest of the file reads.

One line with a quote left open, or text after a closing quote (``"Adult, 1 Egg" Stage``), is
enough for DuckDB's sniffer to give up on quoting: every line with a quoted delimiter then has
too many fields, and a 344-line file reads as 344 bad lines and no rows (or does not read at
all when the quote is given). The reader then asks :func:`set_aside_broken_quotes` for the
lines Python's strict CSV parser refuses, reads a copy without them, and reports them with
their own line numbers.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BrokenQuotes", "set_aside_broken_quotes"]

_MAX_SPAN = 100  # lines one quoted value may run over before its quote counts as never closed


@dataclass(frozen=True)
class BrokenQuotes:
    """A copy of a file without its broken-quoting lines.

    Attributes:
        copy: The copy (UTF-8, the same line endings).
        kept: The original line number of each line of the copy (``kept[0]`` for line 1).
        broken: ``(line, reason, raw)`` of each line left out.
    """

    copy: Path
    kept: tuple[int, ...]
    broken: tuple[tuple[int, str, str], ...]


def set_aside_broken_quotes(
    path: Path, *, encoding: str, delimiter: str, quote: str, workdir: Path
) -> BrokenQuotes | None:
    """The file without the lines whose quoting does not parse; None when every line parses.

    A quoted value may run over several lines (up to 100); a quote still open after that, or at
    the end of the file, breaks the line it opened on.
    """
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    broken: list[tuple[int, str, str]] = []
    kept: list[int] = []
    i = 0
    while i < len(lines):
        end, reason = _record(lines, i, delimiter, quote)
        if reason is None:
            kept.extend(range(i + 1, end + 2))
            i = end + 1
        else:
            broken.append((i + 1, reason, lines[i].rstrip("\r\n")))
            i += 1
    if not broken:
        return None
    copy = workdir / f"quotes-set-aside-{path.stem}.csv"
    with copy.open("w", encoding="utf-8", newline="") as out:
        out.writelines(lines[n - 1] for n in kept)
    return BrokenQuotes(copy, tuple(kept), tuple(broken))


def _record(lines: list[str], start: int, delimiter: str, quote: str) -> tuple[int, str | None]:
    """The last line of the record that starts at ``start``, or why its quoting is broken."""
    end, text = start, lines[start]
    while text.count(quote) % 2 and end + 1 < len(lines) and end - start < _MAX_SPAN:
        end += 1
        text += lines[end]
    if text.count(quote) % 2:
        return start, f"broken quoting: a {quote} opened on this line is never closed"
    try:
        for _ in csv.reader(io.StringIO(text), delimiter=delimiter, quotechar=quote, strict=True):
            pass
    except csv.Error:
        return start, (
            f"broken quoting: text after a closing {quote} (a value quoted only in part; "
            f"write {quote}{quote} for a {quote} inside a quoted value)"
        )
    return end, None
