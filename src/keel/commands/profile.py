"""What ``keel init --from`` learns from a data file before it writes a keel.yaml.

A CSV file's dialect (delimiter, quoting, header, lines to skip) is what DuckDB's sniffer finds;
its "missing" tokens (``NA``, ``?``, ...) are found in a text sample; then the file is read by
the very scan ``keel run`` uses (:func:`keel.data.scan.open_scan`), so each column's type and
values are the ones training will see. Only the head of a large file is read.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from keel.config import SourceConfig
from keel.errors import ConfigError
from keel.validate.infer_roles import SetAside, set_aside
from keel.validate.numeric_text import NUMBER as _NUMBER
from keel.validate.numeric_text import MostlyNumbers, strays_in_table

if TYPE_CHECKING:
    import duckdb

    from keel.data.dialect import ReadOptions

__all__ = ["SAMPLE_ROWS", "Column", "MostlyNumbers", "Profile", "profile_file"]

#: Rows read to profile the columns and the target (the head of the file).
SAMPLE_ROWS = 100_000
#: Tokens taken to mean "missing" wherever they fill a whole cell.
STRONG_NA = ("NA", "N/A", "n/a", "#N/A", "NaN", "nan", "NULL", "null", "?")
#: Tokens taken to mean "missing" only in a column whose other values are all numbers.
WEAK_NA = ("None", "none", "Null", "-", ".", "missing", "--")
#: Columns with at most this many distinct values get their value counts.
COUNTED_VALUES = 100
#: A column that alone decides a class target on every one of at least this many rows (and
#: this many of each class) is a leak of the target, not evidence for it.
LEAK_MIN_ROWS = 50
LEAK_MIN_CLASS_ROWS = 5
#: Columns with at most this many values are checked for deciding the target value by value.
LEAK_MAX_VALUES = 20
#: A whole-number target with at most this many values is a set of classes, not a quantity
#: (``keel init`` makes it multiclass); a numeric target with more is a regression target.
MAX_INT_CLASSES = 10
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
    like ids, row counters, free text or collection labels (:mod:`keel.validate.infer_roles`),
    or that leak the target (with ``profile_file``'s ``target``)."""

    source: SourceConfig
    rows: int
    sampled: bool
    columns: dict[str, Column]
    na_found: dict[str, list[str]]  # token -> columns it was found in
    set_aside: tuple[SetAside, ...] = ()  # columns that should not be inputs (any target too)
    mostly_numbers: tuple[MostlyNumbers, ...] = ()  # text only because of a few stray cells
    unix_time: dict[str, str] = field(default_factory=dict)  # column -> unit (s, ms, us)
    warnings: tuple[str, ...] = ()  # about how the file was read (a header read as data)


def profile_file(file: Path, target: str | None = None, read: ReadOptions | None = None) -> Profile:
    """Sniff and sample a CSV, Parquet or JSON Lines file.

    ``read`` gives a CSV file's dialect and column names (``keel init --delimiter``,
    ``--header``, ``--columns``...); what it leaves unset is sniffed. ``columns`` names the
    fields in file order, as ``keel predict`` reads them: a headerless file's (MovieLens'
    u.data), or in place of a header's names; ``header`` says whether the first line is a
    header to skip (sniffed when None, with a warning when ``columns`` replace its names).

    With ``target``, a column that alone decides a class target on every sampled row (a
    threshold of a number for two classes, or each of a few values standing for one class) is
    set aside as a leak of it: a value known only after the outcome, such as the grade that a
    pass/fail target is computed from. A regression target's leaks are the columns it is
    computed from (``cnt = casual + registered``) and any copy or monotone transform of it
    (:func:`keel.commands.leak_sums.regression_leaks`).

    Raises:
        ConfigError: The file cannot be read as CSV, reading options were given for a Parquet
            or JSON Lines file, or ``read.columns`` does not name every field of a line.
        DataValidationError: The scan cannot read it (as ``keel run`` would report).
    """
    from keel.data.dialect import ReadOptions
    from keel.data.scan import connect, fetch_table, open_scan

    read = read or ReadOptions()
    warnings: tuple[str, ...] = ()
    with tempfile.TemporaryDirectory(prefix="keel-init-") as tmp, connect(Path(tmp)) as con:
        na_found: dict[str, list[str]] = {}
        if file.suffix.lower() in _PARQUET + _JSONL:
            parquet = file.suffix.lower() in _PARQUET
            _no_reading(read, file, "parquet" if parquet else "jsonl")
            source = SourceConfig(path=str(file), format="parquet" if parquet else "jsonl")
        else:
            source, na_found, warnings = _sniff_csv(con, file, Path(tmp), read)
        scan = open_scan(con, source, file.parent, Path(tmp))
        table = fetch_table(con, f"SELECT * FROM ({scan.select}) LIMIT {SAMPLE_ROWS + 1}")
    sampled = table.num_rows > SAMPLE_ROWS
    table, unix_time = _unix_times(table.slice(0, SAMPLE_ROWS), target)
    columns = {name: _describe(name, table.column(name)) for name in table.column_names}
    found = set_aside(table)
    aside = tuple(found) + tuple(_leaks(table, target, {f.name for f in found}) if target else ())
    strays = strays_in_table(table)
    return Profile(
        source, table.num_rows, sampled, columns, na_found, aside, strays, unix_time, warnings
    )


def _no_reading(read: ReadOptions, file: Path, kind: str) -> None:
    """Reading options name a CSV file's dialect: given for another format, they are a mistake."""
    given = [*read.given, *(["columns"] if read.columns is not None else [])]
    if given:
        options = ", ".join(f"--{name}" for name in given)
        msg = (
            f"{options}: {file.name} is a {'Parquet' if kind == 'parquet' else 'JSON Lines'} "
            "file, whose columns carry their names; these options are for CSV files."
        )
        raise ConfigError(msg, field=f"--{given[0]}")


def _unix_times(table: pa.Table, target: str | None) -> tuple[pa.Table, dict[str, str]]:
    """Columns of unix times (:func:`keel.validate.epochs.epoch_unit`; never the target) read
    as the timestamps ``keel run`` will make of them, and each one's unit."""
    from keel.validate.epochs import epoch_unit, to_timestamps

    units: dict[str, str] = {}
    for i, name in enumerate(table.column_names):
        unit = None if name == target else epoch_unit(name, table.column(name))
        if unit is not None:
            times, _ = to_timestamps(table.column(name).combine_chunks(), unit)
            table = table.set_column(i, name, times)
            units[name] = unit
    return table, units


def _leaks(table: pa.Table, target: str, aside: set[str] | None = None) -> list[SetAside]:
    """The columns that alone decide the class of ``target`` on every row of ``table``; for a
    regression target, those it is computed from (:mod:`keel.commands.leak_sums`). Columns in
    ``aside`` (ids, counters) are no candidates for the regression checks."""
    if target not in table.column_names:
        return []
    found = []
    if _regression_target(table.column(target)):
        from keel.commands.leak_sums import regression_leaks

        found = regression_leaks(table, target, aside or set())
    return found + _class_leaks(table, target, {f.name for f in found})


def _class_leaks(table: pa.Table, target: str, known: set[str]) -> list[SetAside]:
    """The columns (not in ``known``) that alone decide the class of ``target`` on every row."""
    if _kind(table.column(target).type) in ("number", "other"):
        return []
    table = table.filter(pc.is_valid(table.column(target)))
    tallied = pc.value_counts(table.column(target))
    counts = tallied.field("counts").to_pylist()
    if table.num_rows < LEAK_MIN_ROWS or not 2 <= len(counts) <= LEAK_MAX_VALUES:
        return []
    if min(counts) < LEAK_MIN_CLASS_ROWS:
        return []
    found = []
    for name in table.column_names:
        kind = _kind(table.column(name).type)
        if name == target or name in known or kind in ("temporal", "other"):
            continue
        why = None
        if kind in ("integer", "number") and len(counts) == 2:
            why = _threshold(table, name, target)
        if why is None and 2 <= pc.count_distinct(table.column(name)).as_py() <= LEAK_MAX_VALUES:
            why = _by_value(table, name, target)
        if why is not None:
            found.append(SetAside(name, "leak", why))
    return found


def _regression_target(values: pa.ChunkedArray) -> bool:
    """Whether ``keel init`` makes ``values`` a regression target: numbers, not a few whole
    ones (see :func:`keel.commands.init._infer_task`)."""
    kind = _kind(values.type)
    if kind not in ("integer", "number"):
        return False
    if pc.count_distinct(values).as_py() > MAX_INT_CLASSES:
        return True
    present = pc.cast(values.drop_null(), pa.float64())
    return kind == "number" and not pc.all(pc.equal(pc.floor(present), present)).as_py()


def _threshold(table: pa.Table, name: str, target: str) -> str | None:
    """'x <= 9 for every fail, >= 10 for every pass' when a threshold on ``name`` decides."""
    rows = table.select([name, target]).filter(pc.is_valid(table.column(name)))
    if rows.num_rows < table.num_rows:  # a missing value decides nothing: not a clean split
        return None
    spans = rows.group_by(target).aggregate([(name, "min"), (name, "max")]).to_pylist()
    low, high = sorted(spans, key=lambda s: s[f"{name}_min"])
    if low[f"{name}_max"] >= high[f"{name}_min"]:
        return None
    return (
        f"it alone decides '{target}' on all {rows.num_rows} sampled rows ({name} <= "
        f"{low[f'{name}_max']} for every '{low[target]}', >= {high[f'{name}_min']} for every "
        f"'{high[target]}'): a value known only after the outcome leaks the target"
    )


def _by_value(table: pa.Table, name: str, target: str) -> str | None:
    """'each value stands for one class' when every value of ``name`` has a single class."""
    rows = table.select([name, target]).filter(pc.is_valid(table.column(name)))
    if rows.num_rows < table.num_rows:
        return None
    classes = rows.group_by(name).aggregate([(target, "count_distinct")])
    if pc.max(classes.column(f"{target}_count_distinct")).as_py() != 1:
        return None
    return (
        f"each of its {classes.num_rows} values goes with one value of '{target}' on all "
        f"{rows.num_rows} sampled rows: it restates the target"
    )


def _sniff_csv(
    con: duckdb.DuckDBPyConnection, file: Path, workdir: Path, read: ReadOptions
) -> tuple[SourceConfig, dict[str, list[str]], tuple[str, ...]]:
    """The dialect DuckDB's sniffer finds (given options kept as given), the NA tokens found in
    a raw (text) sample, and a warning when ``--columns`` replace a sniffed header's names."""
    from keel.data.encoding import detect_encoding, readable_files
    from keel.data.scan import fetch_table, sql

    encoding = read.encoding or detect_encoding(file)
    duck_encoding, readable = readable_files([file], encoding, workdir)
    given = {"delim": read.delimiter, "quote": read.quote, "header": read.header}
    given = {key: value for key, value in given.items() if value is not None}
    found, readable = _sniffed(con, file, (readable, workdir), duck_encoding, given)
    delimiter, quote, escape, skip, looks_header, fields = found
    unset = "(empty)"
    quote_char = None if quote == unset else quote
    escape_char = None if escape in (unset, quote) else escape
    header, warnings = _header(file, read, looks_header)
    if read.columns is not None:
        _check_fields(file, encoding, read.columns, fields, delimiter, skip)
    listed = {"delim": delimiter, "header": header, "skip": skip}
    listed |= {"quote": quote_char or "", "escape": escape_char or ""}
    listed |= {"encoding": duck_encoding, "all_varchar": True, "ignore_errors": True}
    spelled = ", ".join(f"{key} = {sql(value)}" for key, value in listed.items())
    name = sql(str(readable[0]))
    raw = fetch_table(con, f"SELECT * FROM read_csv({name}, {spelled}) LIMIT {SAMPLE_ROWS}")
    if read.columns is not None:
        raw = raw.rename_columns(list(read.columns))
    na_found = _na_tokens(raw)
    source = SourceConfig(
        path=str(file),
        format="csv",
        delimiter=delimiter,
        quote=quote_char,
        escape=escape_char,
        header=header,
        columns=list(read.columns) if read.columns is not None else None,
        skip_rows=skip,
        encoding=encoding if read.encoding or encoding not in ("utf-8", "ascii") else None,
        na_values=list(na_found),
    )
    return source, na_found, warnings


def _header(file: Path, read: ReadOptions, looks_header: bool) -> tuple[bool, tuple[str, ...]]:
    """Whether the first line is a header: as given, else as sniffed (``--columns`` or not, as
    ``keel predict`` reads a file); a warning when a sniffed header's names are replaced."""
    if read.header is not None:
        return read.header, ()
    if read.columns is None or not looks_header:
        return looks_header, ()
    warning = (
        f"the first line of {file.name} looks like a header: it is skipped and --columns "
        "replace its names; if it is data, add --no-header (or write header: false below)"
    )
    return True, (warning,)


def _sniffed(
    con: duckdb.DuckDBPyConnection,
    file: Path,
    files: tuple[list[Path], Path],
    encoding: str,
    given: dict[str, str | bool | None],
) -> tuple[tuple[str, str, str, int, bool, int], list[Path]]:
    """DuckDB's sniffer's delimiter, quote, escape, lines skipped, header and field count (with
    the ``given`` options), and the files it read: ``files``' own, or copies in their workdir
    whose newlines were made uniform."""
    import duckdb

    from keel.data.encoding import uniform_newlines
    from keel.data.scan import sql

    readable, workdir = files
    extra = "".join(f", {key} = {sql(value)}" for key, value in given.items())
    sniff = (
        "SELECT Delimiter, Quote, Escape, SkipRows, HasHeader, len(Columns) "
        f"FROM sniff_csv({{}}, encoding = {sql(encoding)}{extra})"
    )
    try:
        try:
            found = con.execute(sniff.format(sql(str(readable[0])))).fetchall()
        except duckdb.Error:  # lines ending in both \r\n and \n defeat the sniffer
            uniform = uniform_newlines(readable, encoding, workdir)
            if uniform == readable:
                raise
            readable = uniform
            found = con.execute(sniff.format(sql(str(readable[0])))).fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        options = "".join(f" --{_FLAGS[key]}" for key in given)
        hint = f" with{options} as given" if options else ""
        msg = f"{file}: cannot read it as CSV{hint} ({first}). Is it a CSV or Parquet file?"
        raise ConfigError(msg, field="--from") from exc
    delimiter, quote, escape, skip, header, fields = found[0]
    return (str(delimiter), str(quote), str(escape), int(skip), bool(header), int(fields)), readable


_FLAGS = {"delim": "delimiter", "quote": "quote", "header": "header"}


def _check_fields(
    file: Path, encoding: str, names: tuple[str, ...], fields: int, delimiter: str, skip: int
) -> None:
    """``--columns`` names every field of a line, or the error says both counts and shows the
    first line (a wrong delimiter shows there as fields that did not split)."""
    if len(names) == fields:
        return
    with file.open(encoding=encoding, errors="replace", newline="") as text:
        for _ in range(skip):
            text.readline()
        line = text.readline().rstrip("\r\n")
    shown = line if len(line) <= 60 else line[:57] + "..."
    split = {"\t": "tab", " ": "space"}.get(delimiter, repr(delimiter))
    msg = (
        f"--columns gives {len(names)} names but {file.name} has {fields} field(s) per line "
        f"(split by {split}); its first line is {shown!r}. Give one name per field, in the "
        "file's order, or the right --delimiter."
    )
    raise ConfigError(msg, field="--columns")


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
