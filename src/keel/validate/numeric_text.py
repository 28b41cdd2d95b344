"""Numeric columns that a few stray cells made text.

One cell such as ``seventeen`` or ``16 yrs`` in a column of numbers makes the reader type the
whole column as text; the schema inferred from it then declares a string column with one
category per number, and the model learns nothing of the order of the values. Nothing fails,
so nothing says so. :func:`mostly_numbers` finds such a column (a text column whose values are
numbers but for at most :data:`STRAY_SHARE` of them) with Arrow compute over a bounded sample,
and :func:`stray_message` says which column, how many cells, which values and the fixes.

``keel init --from`` (:mod:`keel.commands.profile`) and the first ``keel run`` (the ``profile``
step, which records what it finds in the training statistics for the ``schema`` step) use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "NUMBER",
    "SAMPLE_ROWS",
    "STRAY_MIN_VALUES",
    "STRAY_SHARE",
    "MostlyNumbers",
    "mostly_numbers",
    "stray_message",
    "strays_in_file",
    "strays_in_table",
]

#: A text column is "numbers with a few stray cells" when at most this share of its non-blank
#: values are not numbers, and it has at least STRAY_MIN_VALUES of them.
STRAY_SHARE = 0.05
STRAY_MIN_VALUES = 20
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
    """The stray cells of a text column that is otherwise numbers; None for any other column
    (not text, fewer than :data:`STRAY_MIN_VALUES` values, no stray cell, or more than
    :data:`STRAY_SHARE` of them: a text column that holds some numbers)."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    cells = pc.utf8_trim_whitespace(values.drop_null())
    cells = pc.filter(cells, pc.not_equal(cells, ""))
    if len(cells) < STRAY_MIN_VALUES:
        return None
    strays = pc.filter(cells, pc.invert(pc.match_substring_regex(cells, NUMBER)))
    if len(strays) == 0 or len(strays) > STRAY_SHARE * len(cells):
        return None
    examples = tuple(str(v) for v in pc.unique(strays).to_pylist()[:EXAMPLES])
    return MostlyNumbers(name, len(cells), len(strays), examples)


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
