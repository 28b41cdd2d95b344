"""Read a declared source (CSV or Parquet) into an Arrow table, cleaned the same way every time.

CSV parsing is Arrow's multi-threaded reader. Cleaning is vectorised: string cells are trimmed
(UCI files put a space after each comma), NA tokens become nulls, and per-column ``replace`` maps
normalise values (e.g. adult.test's trailing dots on labels).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from keel.config import SourceConfig
from keel.errors import ConfigError, DataValidationError

__all__ = ["read_source", "read_table"]


def read_source(source: SourceConfig, root: Path) -> pa.Table:
    """Read and clean the table a source describes.

    Args:
        source: The source section of keel.yaml.
        root: The project directory that relative paths start from.

    Returns:
        The cleaned table.

    Raises:
        ConfigError: The file does not exist.
        DataValidationError: The file cannot be parsed; the message names file and cause.
    """
    path = Path(source.path).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise ConfigError(f"{path}: data file not found (data source path '{source.path}').")
    if source.format == "parquet":
        table = pq.read_table(path)
        if source.columns:
            table = _rename(table, source.columns, path)
    else:
        table = _read_csv(path, source)
    return clean_table(table, na_values=source.na_values, replace=source.replace)


def read_table(path: str | Path) -> pa.Table:
    """Read a CSV (with header) or Parquet file chosen by its extension, for scoring or monitoring.

    Raises:
        ConfigError: The file is missing or its extension is not .csv or .parquet.
    """
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{file}: no such file.")
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pq.read_table(file)
    if suffix in (".csv", ".txt"):
        return clean_table(_read_csv(file, SourceConfig(path=str(file))), na_values=[], replace={})
    raise ConfigError(f"{file}: unsupported file type '{suffix}'. Use a .csv or .parquet file.")


def _read_csv(path: Path, source: SourceConfig) -> pa.Table:
    read = pv.ReadOptions(
        skip_rows=source.skip_rows,
        column_names=None if source.header else source.columns,
        autogenerate_column_names=not source.header and not source.columns,
    )
    nulls = [""] + list(source.na_values) + [f" {token}" for token in source.na_values]
    convert = pv.ConvertOptions(null_values=nulls, strings_can_be_null=True)
    try:
        table = pv.read_csv(
            path,
            read_options=read,
            parse_options=pv.ParseOptions(delimiter=source.delimiter),
            convert_options=convert,
        )
    except pa.ArrowInvalid as exc:
        msg = f"{path}: cannot parse as CSV: {exc}. Check delimiter, header and columns."
        raise DataValidationError(msg) from exc
    if source.header and source.columns:
        table = _rename(table, source.columns, path)
    return table


def _rename(table: pa.Table, columns: list[str], path: Path) -> pa.Table:
    if len(columns) != table.num_columns:
        msg = (
            f"{path}: keel.yaml lists {len(columns)} columns but the file has "
            f"{table.num_columns}. Make data.*.columns match the file."
        )
        raise DataValidationError(msg)
    return table.rename_columns(columns)


def clean_table(
    table: pa.Table, *, na_values: list[str], replace: dict[str, dict[str, str]]
) -> pa.Table:
    """Trim string cells, turn NA tokens into nulls, apply per-column value replacements."""
    for name in replace:
        if name not in table.column_names:
            msg = f"replace: column '{name}' is not in the data (columns: {table.column_names})."
            raise ConfigError(msg)
    tokens = pa.array(na_values, type=pa.string())
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.utf8_trim_whitespace(column)
            if na_values:
                column = pc.if_else(pc.is_in(column, value_set=tokens), None, column)
            column = pc.if_else(pc.equal(column, ""), None, column)
            original = column
            # match against the original cells so replacements never chain (a->b, b->c)
            for old, new in replace.get(name, {}).items():
                hit = pc.fill_null(pc.equal(original, old), False)
                column = pc.if_else(hit, new, column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)
