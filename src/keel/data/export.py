"""Writing a result table to a file whose format its suffix names (or the caller chooses).

``keel predict -o scored.csv`` writes CSV, ``-o scored.parquet`` Parquet, ``-o scored.jsonl``
one JSON object a line and ``-o scored.json`` one JSON array: :func:`table_format` reads the
suffix (an explicit format wins, and must agree with a suffix it contradicts) and refuses one it
does not know, naming it and the accepted ones. A Parquet file is converted by DuckDB's ``COPY``
(:func:`convert_parquet`), which streams it in row groups under the same memory cap as the
ingest (:data:`keel.data.scan.MEMORY_LIMIT`), so a scored file of any size converts in bounded
memory; CSV is written with a header, missing values as empty fields.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.parquet as pq

from keel.errors import ConfigError

__all__ = ["SUFFIXES", "TableFormat", "convert_parquet", "table_format", "write_table"]

TableFormat = Literal["parquet", "csv", "jsonl", "json"]
#: File suffixes (lower case) and the format each names.
SUFFIXES: Mapping[str, TableFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}


def table_format(
    output: str | Path,
    chosen: str | None = None,
    *,
    accepted: Iterable[str] = get_args(TableFormat),
    option: str = "--output",
    override: str = "--output-format",
) -> str:
    """The format to write ``output`` in: ``chosen`` when given, else the one its suffix names.

    Args:
        output: The file to write.
        chosen: The format asked for explicitly (None: from the suffix).
        accepted: The formats the caller writes (a subset of :data:`SUFFIXES`' values, or its
            own, such as ``keel explain``'s ``json`` document).
        option: How the caller names ``output`` in messages (``--output``, ``output``).
        override: How the caller names ``chosen`` in messages.

    Raises:
        ConfigError: ``chosen`` is not accepted, contradicts the suffix, or there is no
            ``chosen`` and the suffix is unknown; the message names the suffix and lists the
            accepted ones.
    """
    formats = tuple(accepted)
    suffix = Path(output).suffix.lower()
    implied = SUFFIXES.get(suffix)
    if chosen is not None:
        if chosen not in formats:
            listed = ", ".join(formats)
            msg = f"{override} {chosen}: not a format keel writes here; use one of {listed}."
            raise ConfigError(msg, field=override.lstrip("-"))
        if implied is not None and implied != chosen:
            msg = (f"{override} {chosen} does not match {option} {output} (a {implied} file); "
                   "drop one or make them agree.")  # fmt: skip
            raise ConfigError(msg, field=override.lstrip("-"))
        return chosen
    if implied is None or implied not in formats:
        known = ", ".join(s for s, f in SUFFIXES.items() if f in formats)
        named = f"the suffix '{suffix}'" if suffix else "no suffix"
        msg = (f"{option} {output}: {named} names no format keel writes here; use one of "
               f"{known}, or pass {override} ({'|'.join(formats)}).")  # fmt: skip
        raise ConfigError(msg, field=option.lstrip("-"))
    return implied


def convert_parquet(source: str | Path, target: str | Path, fmt: str) -> None:
    """Write the rows of the Parquet file ``source`` to ``target`` as ``fmt``, streamed.

    ``target`` is written through a temporary file beside it and renamed, so a failure leaves
    no partial file.
    """
    from keel.data.scan import sql

    if fmt == "parquet":
        _atomic(Path(target), lambda tmp: shutil.copyfile(source, tmp))
        return
    select = f"SELECT * FROM read_parquet({sql(str(source))})"
    _atomic(Path(target), lambda tmp: _duck_copy(select, tmp, fmt, None))


def write_table(table: pa.Table, target: str | Path, fmt: str) -> None:
    """Write an in-memory table to ``target`` as ``fmt`` (temporary file, then rename)."""
    if fmt == "parquet":
        _atomic(Path(target), lambda tmp: pq.write_table(table, tmp))
        return
    _atomic(Path(target), lambda tmp: _duck_copy("SELECT * FROM rows", tmp, fmt, table))


def _atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Run ``write(tmp)`` on this writer's own temporary file beside ``target``, then rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


_OPTIONS = {
    "csv": "FORMAT CSV, HEADER true",
    "jsonl": "FORMAT JSON",
    "json": "FORMAT JSON, ARRAY true",
}


def _duck_copy(select: str, target: Path, fmt: str, rows: pa.Table | None) -> None:
    """DuckDB's ``COPY (select) TO target``; ``rows`` is the table ``select`` may read."""
    from keel.data.scan import connect, sql

    if fmt not in _OPTIONS:
        raise ConfigError(f"cannot write {fmt}; write one of parquet, {', '.join(_OPTIONS)}.")
    with tempfile.TemporaryDirectory(prefix="keel-export-") as spill, connect(Path(spill)) as con:
        if rows is not None:
            con.register("rows", rows)
        con.execute(f"COPY ({select}) TO {sql(str(target))} ({_OPTIONS[fmt]})")
