"""What ``keel init --from`` learns from a data file before it writes a keel.yaml.

A CSV file's dialect (delimiter, quoting, header, lines to skip) is what DuckDB's sniffer finds;
its "missing" tokens (``NA``, ``?``, ...) are found in a text sample; then the file is read by
the very scan ``keel run`` uses (:func:`keel.data.scan.open_scan`), so each column's type and
values are the ones training will see. Only the head of a large file is read.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from keel.config import SourceConfig
from keel.errors import ConfigError
from keel.validate.infer_roles import SetAside, set_aside

if TYPE_CHECKING:
    import duckdb

__all__ = ["SAMPLE_ROWS", "Column", "Profile", "profile_file"]

#: Rows read to profile the columns and the target (the head of the file).
SAMPLE_ROWS = 100_000
#: Tokens taken to mean "missing" wherever they fill a whole cell.
STRONG_NA = ("NA", "N/A", "n/a", "#N/A", "NaN", "nan", "NULL", "null", "?")
#: Tokens taken to mean "missing" only in a column whose other values are all numbers.
WEAK_NA = ("None", "none", "Null", "-", ".", "missing", "--")
#: Columns with at most this many distinct values get their value counts.
COUNTED_VALUES = 100
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_PARQUET = (".parquet", ".pq", ".parq")
_JSONL = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Column:
    """One column of the sample: its kind, missing and distinct values, and value counts
    (labels spelled as the trainer spells them) when it has few values."""

    name: str
    kind: str  # bool, integer, number, text, temporal, other
    nulls: int
    distinct: int
    counts: dict[str, int]  # label -> rows, as the trainer spells labels; when few values


@dataclass(frozen=True)
class Profile:
    """A file's source section (as keel.yaml will declare it), its sampled columns, the
    "missing" tokens found, each with the columns it was found in, and the columns that look
    like ids, row counters, free text or collection labels (:mod:`keel.validate.infer_roles`)."""

    source: SourceConfig
    rows: int
    sampled: bool
    columns: dict[str, Column]
    na_found: dict[str, list[str]]  # token -> columns it was found in
    set_aside: tuple[SetAside, ...] = ()  # columns that should not be inputs (any target too)


def profile_file(file: Path) -> Profile:
    """Sniff and sample a CSV, Parquet or JSON Lines file.

    Raises:
        ConfigError: The file cannot be read as CSV.
        DataValidationError: The scan cannot read it (as ``keel run`` would report).
    """
    from keel.data.scan import connect, fetch_table, open_scan

    with tempfile.TemporaryDirectory(prefix="keel-init-") as tmp, connect(Path(tmp)) as con:
        na_found: dict[str, list[str]] = {}
        if file.suffix.lower() in _PARQUET:
            source = SourceConfig(path=str(file), format="parquet")
        elif file.suffix.lower() in _JSONL:
            source = SourceConfig(path=str(file), format="jsonl")
        else:
            source, na_found = _sniff_csv(con, file, Path(tmp))
        scan = open_scan(con, source, file.parent, Path(tmp))
        table = fetch_table(con, f"SELECT * FROM ({scan.select}) LIMIT {SAMPLE_ROWS + 1}")
    sampled = table.num_rows > SAMPLE_ROWS
    table = table.slice(0, SAMPLE_ROWS)
    columns = {name: _describe(name, table.column(name)) for name in table.column_names}
    aside = tuple(set_aside(table))
    return Profile(source, table.num_rows, sampled, columns, na_found, aside)


def _sniff_csv(
    con: duckdb.DuckDBPyConnection, file: Path, workdir: Path
) -> tuple[SourceConfig, dict[str, list[str]]]:
    """The dialect DuckDB's sniffer finds, and the NA tokens found in a raw (text) sample."""
    import duckdb

    from keel.data.encoding import detect_encoding, readable_files
    from keel.data.scan import fetch_table, sql

    encoding = detect_encoding(file)
    duck_encoding, readable = readable_files([file], encoding, workdir)
    name = sql(str(readable[0]))
    try:
        found = con.execute(
            "SELECT Delimiter, Quote, Escape, SkipRows, HasHeader "
            f"FROM sniff_csv({name}, encoding = {sql(duck_encoding)})"
        ).fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        msg = f"{file}: cannot read it as CSV ({first}). Is it a CSV or Parquet file?"
        raise ConfigError(msg, field="--from") from exc
    delimiter, quote, escape, skip, header = found[0]
    unset = "(empty)"
    options = {
        "delimiter": delimiter,
        "quote": None if quote == unset else quote,
        "escape": None if escape in (unset, quote) else escape,
        "header": bool(header),
        "skip_rows": int(skip),
    }
    given = {"delim": delimiter, "header": bool(header), "skip": int(skip)}
    given |= {"quote": options["quote"] or "", "escape": options["escape"] or ""}
    given |= {"encoding": duck_encoding, "all_varchar": True, "ignore_errors": True}
    listed = ", ".join(f"{key} = {sql(value)}" for key, value in given.items())
    raw = fetch_table(con, f"SELECT * FROM read_csv({name}, {listed}) LIMIT {SAMPLE_ROWS}")
    na_found = _na_tokens(raw)
    if encoding not in ("utf-8", "ascii"):
        options["encoding"] = encoding
    source = SourceConfig(path=str(file), format="csv", na_values=list(na_found), **options)
    return source, na_found


def _na_tokens(raw: pa.Table) -> dict[str, list[str]]:
    """Tokens that fill whole cells and mean "missing", with the columns they were found in."""
    found: dict[str, list[str]] = {}
    tokens = pa.array([*STRONG_NA, *WEAK_NA])
    for name in raw.column_names:
        cells = pc.utf8_trim_whitespace(raw.column(name))
        hits = pc.filter(cells, pc.is_in(cells, value_set=tokens))
        if len(hits) == 0:
            continue
        rest = pc.filter(cells, pc.invert(pc.is_in(cells, value_set=pa.array(["", *tokens]))))
        numeric = len(rest) > 0 and bool(pc.all(pc.match_substring_regex(rest, _NUMBER)).as_py())
        for token in pc.unique(hits).to_pylist():
            if token in STRONG_NA or numeric:
                found.setdefault(str(token), []).append(name)
    return found


def _describe(name: str, values: pa.ChunkedArray) -> Column:
    kind = _kind(values.type)
    distinct = int(pc.count_distinct(values).as_py())
    counts: dict[str, int] = {}
    if 0 < distinct <= COUNTED_VALUES and kind != "other":
        labels = _labels(values.drop_null())
        tallied = pc.value_counts(labels)
        values_, counts_ = tallied.field("values").to_pylist(), tallied.field("counts").to_pylist()
        counts = {str(v): int(c) for v, c in sorted(zip(values_, counts_, strict=True))}
    return Column(name, kind, values.null_count, distinct, counts)


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "text"
    if pa.types.is_temporal(dtype):
        return "temporal"
    return "other"


def _labels(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Values as the trainer spells class labels (see :func:`keel.train.target.encode_target`)."""
    if pa.types.is_boolean(values.type):
        return pc.if_else(values, "True", "False")
    return pc.cast(values, pa.string())
