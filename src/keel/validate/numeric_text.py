"""Numeric columns that a few stray cells made text.

One cell such as ``seventeen`` or ``16 yrs`` in a column of numbers makes the reader type the
whole column as text; the schema inferred from it then declares a string column with one
category per number, and the model learns nothing of the order of the values. Nothing fails,
so nothing says so. :func:`mostly_numbers` finds such a column with Arrow compute over a bounded
sample, and :func:`stray_message` says which column, how many cells, which values and the fixes.

"A few stray cells" must be few, or the advice to clean them is wrong: MovieLens' ``zip_code``
holds US zip codes and 18 Canadian postcodes of 943 (1.9 %, 17 distinct: ``'M4J2K'``...), which
are data, not typos; the column is text. So a column is flagged only when its non-numbers are

* scattered: at most :data:`STRAY_FEW` cells, or :data:`STRAY_SHARE` (1 %) of the values, and
  at most :data:`STRAY_MAX_DISTINCT` distinct ones. Hand-keyed typos ("17y", "16 yrs") stay
  well under 1 %; a file that spells something else in 1 cell of 50 does it by design. The
  floor of three cells keeps one typo in a small file (1 of 60) a finding; the distinct cap
  keeps a vocabulary (many distinct words) out, however rare each is; or
* a missing-value marker: at most :data:`MARKER_SHARE` (5 %) of the values, spelled at most
  :data:`MARKER_SPELLINGS` ways, none with a digit (``'?'``, ``'NA'``, ``'unknown'``): what
  ``na_values`` is for, which the finding says.

And never when the column's name says it holds codes (:data:`CODE_WORDS`: zip, postcode,
phone, id...) and every non-number looks like a code (letters and digits, with at least one
digit: ``'M4J2K'``, ``'+1 555-0100'``): such values are what the column holds, so it is text by
design. A code column with a marker (``'unknown'``, no digit) is still flagged: na_values fits.

``keel init --from`` (:mod:`keel.commands.profile`) and the first ``keel run`` (the ``profile``
step, which records what it finds in the training statistics for the ``schema`` step) use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CODE_WORDS",
    "MARKER_SHARE",
    "MARKER_SPELLINGS",
    "NUMBER",
    "SAMPLE_ROWS",
    "STRAY_FEW",
    "STRAY_MAX_DISTINCT",
    "STRAY_MIN_VALUES",
    "STRAY_SHARE",
    "MostlyNumbers",
    "mostly_numbers",
    "names_codes",
    "stray_message",
    "strays_in_file",
    "strays_in_table",
]

#: A text column is "numbers with a few stray cells" when at most STRAY_FEW, or at most this
#: share, of its non-blank values are not numbers, spelled at most STRAY_MAX_DISTINCT ways, and
#: it has at least STRAY_MIN_VALUES values (the module's docstring says why these figures).
STRAY_SHARE = 0.01
STRAY_FEW = 3
STRAY_MAX_DISTINCT = 50
STRAY_MIN_VALUES = 20
#: ... or when at most this share are one of MARKER_SPELLINGS non-numbers without a digit (a
#: missing-value marker such as '?' or 'unknown', repeated).
MARKER_SHARE = 0.05
MARKER_SPELLINGS = 3
#: Words of a column name (split at non-letters and camelCase) that say it holds codes.
CODE_WORDS = frozenset(
    {"zip", "zipcode", "postcode", "postal", "postalcode", "plz", "phone", "telephone", "tel",
     "fax", "mobile", "id", "code", "sku", "isbn", "ean", "upc"}
)  # fmt: skip
#: A code as a cell spells it: letters and digits, a few separators, at least one digit.
CODE = re.compile(r"^(?=.*\d)[A-Za-z0-9(+][A-Za-z0-9 ()+./-]{0,31}$")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
#: Rows looked at per column (the head of the data): bounded work on any file.
SAMPLE_ROWS = 100_000
#: Distinct stray values named in a finding.
EXAMPLES = 3
#: A number as a cell spells it (sign, digits, point, exponent; spaces around).
NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True)
class MostlyNumbers:
    """A text column whose values are numbers but for a few cells, which make the whole column
    text (one category per value) when ``keel run`` reads it.

    Attributes:
        name: The column.
        values: Its non-missing values in the sample.
        strays: How many of them are not numbers.
        examples: Up to three distinct stray values, in order of appearance.
    """

    name: str
    values: int
    strays: int
    examples: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the training statistics record it."""
        return {
            "name": self.name,
            "values": self.values,
            "strays": self.strays,
            "examples": list(self.examples),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MostlyNumbers:
        """The finding :meth:`to_dict` wrote."""
        examples = tuple(str(v) for v in data.get("examples", ()))
        return cls(str(data["name"]), int(data["values"]), int(data["strays"]), examples)


def mostly_numbers(name: str, values: pa.ChunkedArray | pa.Array) -> MostlyNumbers | None:
    """The stray cells of a text column that is otherwise numbers; None for any other column:
    not text, fewer than :data:`STRAY_MIN_VALUES` values, no stray cell, too many of them (a
    text column that holds some numbers: the module's docstring gives the rule), or a column
    named for codes whose non-numbers all look like codes (``zip_code``: ``'M4J2K'``)."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    cells = pc.utf8_trim_whitespace(values.drop_null())
    cells = pc.filter(cells, pc.not_equal(cells, ""))
    if len(cells) < STRAY_MIN_VALUES:
        return None
    strays = pc.filter(cells, pc.invert(pc.match_substring_regex(cells, NUMBER)))
    if len(strays) == 0 or len(strays) > MARKER_SHARE * len(cells):
        return None
    distinct = [str(v) for v in pc.unique(strays).to_pylist()]
    if not (_scattered(len(strays), len(distinct), len(cells)) or _marker(distinct)):
        return None
    if names_codes(name) and all(CODE.match(v) for v in distinct):
        return None
    return MostlyNumbers(name, len(cells), len(strays), tuple(distinct[:EXAMPLES]))


def names_codes(name: str) -> bool:
    """Whether a column's name says it holds codes (a word of it in :data:`CODE_WORDS`:
    ``zip_code``, ``PostalCode``, ``phone``, ``user_id``; not ``idle`` or ``zipper``)."""
    return any(word.lower() in CODE_WORDS for word in _WORD.findall(name))


def _scattered(strays: int, distinct: int, values: int) -> bool:
    """A few non-numbers: at most STRAY_FEW or STRAY_SHARE of the values, few spellings."""
    return strays <= max(STRAY_FEW, STRAY_SHARE * values) and distinct <= STRAY_MAX_DISTINCT


def _marker(distinct: list[str]) -> bool:
    """A missing-value marker repeated (within MARKER_SHARE): a few spellings, no digit."""
    return len(distinct) <= MARKER_SPELLINGS and not any(c.isdigit() for v in distinct for c in v)


def strays_in_table(table: pa.Table, *, rows: int = SAMPLE_ROWS) -> tuple[MostlyNumbers, ...]:
    """Every column of the first ``rows`` rows of ``table`` that :func:`mostly_numbers` flags,
    in column order."""
    head = table.slice(0, rows)
    found = (mostly_numbers(name, head.column(name)) for name in head.column_names)
    return tuple(f for f in found if f is not None)


def strays_in_file(path: Path, *, rows: int = SAMPLE_ROWS) -> tuple[MostlyNumbers, ...]:
    """:func:`strays_in_table` over the text columns of the first ``rows`` rows of a Parquet
    file (a snapshot), read by record batches: only those columns and rows are read."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        schema = parquet.schema_arrow
        text = [
            f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]
        if not text:
            return ()
        batches, read = [], 0
        for batch in parquet.iter_batches(batch_size=min(rows, 65_536), columns=text):
            batches.append(batch.slice(0, rows - read))
            read += batches[-1].num_rows
            if read >= rows:
                break
    table = pa.Table.from_batches(batches, schema=pa.schema([schema.field(n) for n in text]))
    return strays_in_table(table, rows=rows)


def stray_message(found: MostlyNumbers, *, schema_file: str = "schema.yaml") -> str:
    """What a run says of a column that :func:`mostly_numbers` flagged: the column, how many
    cells are not numbers, up to three of them, what became of it, and the fixes."""
    shown = ", ".join(repr(v) for v in found.examples)
    more = ", ..." if found.strays > len(found.examples) else ""
    return (
        f"column '{found.name}' holds numbers but for {found.strays} of its {found.values} "
        f"values ({shown}{more}), so it was read as text and {schema_file} declares it a "
        "string with one category per value. Fix those cells in the data, or, if they mean "
        "'missing', list them in the source's na_values in keel.yaml (e.g. na_values: "
        f"[{', '.join(repr(v) for v in found.examples)}]); then delete {schema_file} (or run "
        "'keel schema infer --update') and run again."
    )
