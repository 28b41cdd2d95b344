"""Columns of a new data file that should not be model inputs, each with the reason why.

``keel init --from`` reads the head of a file and writes a keel.yaml; the columns found here go
into its ``drop:`` list, each explained in a comment, so the first ``keel run`` already trains
without them. Four kinds are recognised, all from the column's name, order and values:

- **id**: the name says so (``Individual ID``, ``customer_id``, ``identifier``, ``uuid``,
  ``Sample Number``, ``row_no``) and the column has many distinct values (at least
  :data:`ID_SHARE` of its rows and :data:`MIN_DISTINCT`), so it names rows rather than groups.
- **counter**: a whole-number column that never decreases and mostly steps by one in file order
  (``1, 2, 3, ...``): a row number, whatever its name.
- **free text**: long strings of several words (at least :data:`TEXT_CHARS` characters and
  :data:`TEXT_WORDS` words on average) that are mostly distinct, or that sit in a column named
  like a note (``Comments``, ``notes``, ``description``). A tree model reads each text as one
  category: it memorises the rows rather than learning from the words.
- **collection label**: the name says which study, batch or data set the rows came from
  (``studyName``, ``batch``): a model that learns it does not carry over to the next study.

The first two (:func:`identifiers`) also check a hand-written project: a model input that names
rows is a validation finding (``id_feature``, :mod:`keel.validate.id_features`).

Every check is vectorised over the sample (Arrow compute and NumPy); nothing loops over rows.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.arrays import numbers

__all__ = ["ID_KINDS", "ID_SHARE", "MIN_DISTINCT", "TEXT_CHARS", "TEXT_WORDS", "SetAside",
           "identifiers", "may_name_rows", "name_words", "set_aside"]  # fmt: skip

#: An id-named column is an id when at least this share of its values are distinct...
ID_SHARE = 0.3
#: ... and it has at least this many distinct values (fewer are groups: store_id 1..12).
MIN_DISTINCT = 20
#: Steps of exactly +1, among the steps between consecutive values, that make a counter.
COUNTER_STEPS = 0.9
#: Free text: at least this many characters and words per value, on average.
TEXT_CHARS = 20
TEXT_WORDS = 3.0
#: Free text without a note-like name: at least this share of distinct values.
TEXT_SHARE = 0.5

#: The kinds that name rows rather than describe them (:func:`identifiers`).
ID_KINDS = ("id", "counter")

_ID_WORDS = frozenset({"id", "ids", "identifier", "uuid", "guid"})
_ROW_WORDS = frozenset({"sample", "row", "record", "serial", "case", "entry", "observation",
                        "obs", "specimen", "seq", "sequence", "index", "line"})  # fmt: skip
_NUMBER_WORDS = frozenset({"number", "no", "num", "nr", "n", "idx", "index"})
_NOTE_WORDS = frozenset({"comment", "comments", "note", "notes", "remark", "remarks",
                         "description", "memo", "freetext", "narrative"})  # fmt: skip
_COLLECTION_WORDS = frozenset({"study", "batch", "dataset"})


@dataclass(frozen=True)
class SetAside:
    """A column to leave out of the model's inputs.

    Attributes:
        name: The column.
        kind: ``id``, ``counter``, ``free text`` or ``collection label``.
        why: One sentence with the evidence, for the keel.yaml comment.
    """

    name: str
    kind: str
    why: str


def set_aside(table: pa.Table, target: str | None = None) -> list[SetAside]:
    """The columns of ``table`` (rows in file order) that should not be model inputs.

    Args:
        table: The head of the data file, as ``keel run`` reads it.
        target: The label column (never set aside), when known.

    Returns:
        One entry per column to drop, in the table's column order.
    """
    found = []
    for name in table.column_names:
        if name == target:
            continue
        reason = _judge(name, table.column(name))
        if reason is not None:
            found.append(reason)
    return found


def identifiers(table: pa.Table) -> list[SetAside]:
    """The columns of ``table`` (rows in file order) that name rows: an id or a row counter,
    by the rules :func:`set_aside` applies (free text and collection labels are not
    identifiers). Dictionary-encoded columns (Parquet's strings) are judged by their values.
    """
    found = []
    for name in table.column_names:
        if not may_name_rows(name, table.schema.field(name).type):
            continue
        values = table.column(name)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        if not _id_named(name_words(name)) and not _rising(values):
            continue  # whole numbers that fall somewhere: no counter (and no distinct count)
        reason = _judge(name, values)
        if reason is not None and reason.kind in ID_KINDS:
            found.append(reason)
    return found


def may_name_rows(name: str, kind: pa.DataType) -> bool:
    """Whether a column could be an id or a counter at all: named like an id, or holding whole
    numbers. A caller reads only these columns' values for :func:`identifiers`."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return _id_named(name_words(name)) or pa.types.is_integer(kind)


def name_words(name: str) -> list[str]:
    """A column name as lower-case words: ``studyName`` -> study, name; ``Sample No.`` ->
    sample, no; ``customerID`` -> customer, id."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def _judge(name: str, values: pa.ChunkedArray) -> SetAside | None:
    present = values.drop_null()
    rows = len(present)
    if rows < 2:
        return None
    distinct = int(pc.count_distinct(present).as_py())
    share = distinct / rows
    words = name_words(name)
    counted = f"{distinct:,} distinct values in {rows:,} rows ({share:.0%})"
    if _id_named(words) and distinct >= MIN_DISTINCT and share >= ID_SHARE:
        like = "an id" if _ID_WORDS.intersection(words) else "a row number"
        why = f"named like {like}, with {counted}: it names rows, it does not describe them"
        return SetAside(name, "id", why)
    if pa.types.is_integer(present.type) and distinct >= MIN_DISTINCT:
        whole = numbers(present).astype(np.int64, copy=False)  # buffers: no pandas import
        steps = np.diff(whole)
        if steps.size and bool((steps >= 0).all()) and np.mean(steps == 1) >= COUNTER_STEPS:
            why = (
                f"rises by one from row to row ({whole[0]}, {whole[1]}, ... {whole[-1]}): "
                "a counter that numbers the rows of this file, not what they describe"
            )
            return SetAside(name, "counter", why)
    if pa.types.is_string(present.type) or pa.types.is_large_string(present.type):
        chars = float(pc.mean(pc.utf8_length(present)).as_py() or 0.0)
        spaces = pc.count_substring_regex(pc.utf8_trim_whitespace(present), r"\s+")
        word_count = float(pc.mean(spaces).as_py() or 0.0) + 1.0
        noted = bool(_NOTE_WORDS.intersection(words))
        if chars >= TEXT_CHARS and word_count >= TEXT_WORDS and (noted or share >= TEXT_SHARE):
            evidence = "named like a note" if noted else f"{share:.0%} of its values distinct"
            why = (
                f"free text ({evidence}; {chars:.0f} characters and {word_count:.1f} words a "
                "value on average): a tree model reads each text as one category and "
                "memorises rows instead of learning from the words"
            )
            return SetAside(name, "free text", why)
    if _collection_named(words) and not _numeric(present.type) and distinct < rows:
        why = (
            f"named like a label of the study or batch the rows were collected in ({distinct} "
            "values): a model that learns it does not carry over to data from the next one"
        )
        return SetAside(name, "collection label", why)
    return None


def _rising(values: pa.ChunkedArray) -> bool:
    """Whether whole numbers never decrease in file order (what a counter needs first)."""
    whole = numbers(values).astype(np.int64, copy=False)  # unsigned: no wrap-around
    return bool(whole.size > 1 and (np.diff(whole) >= 0).all())


def _collection_named(words: list[str]) -> bool:
    """``studyName``, ``batch``, ``dataset_id``: a collection word with at most a naming word
    beside it; ``batch_size`` or ``study_hours`` describe the row and are kept."""
    return bool(_COLLECTION_WORDS.intersection(words)) and set(words) <= (
        _COLLECTION_WORDS | {"name", "label", "code", "id", "tag"}
    )


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _id_named(words: list[str]) -> bool:
    if _ID_WORDS.intersection(words):
        return True
    if words in (["index"], ["idx"], ["rownum"], ["rowid"]):
        return True
    return any(a in _ROW_WORDS and b in _NUMBER_WORDS for a, b in itertools.pairwise(words))
