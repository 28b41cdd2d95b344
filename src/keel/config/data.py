"""keel.yaml ``data:``: sources (CSV, Parquet, JSON Lines, SQL, DuckDB), incremental ingestion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from keel.config.base import Frozen

__all__ = ["DataConfig", "IncrementalConfig", "SourceConfig"]


class IncrementalConfig(Frozen):
    """Incremental ingestion: read only rows whose ``column`` is above the last watermark."""

    column: str = Field(
        description="The column that grows with new rows (a time or an id): each ingest reads "
        "only the rows above the highest value already ingested.",
    )


SourceFormat = Literal["csv", "parquet", "jsonl", "sql", "duckdb"]


class SourceConfig(Frozen):
    """Where a table comes from and how to parse it.

    ``path`` (csv, parquet, jsonl) may be a glob. CSV options left unset (``header``,
    ``delimiter``, ``quote``, ``escape``, ``encoding``) are detected from the file. ``sql`` reads
    ``query`` from the SQLAlchemy ``url``; ``duckdb`` runs ``query`` in DuckDB.
    """

    path: str | None = Field(
        default=None,
        description="The file, or a glob of files, relative to the project directory unless "
        "absolute (csv, parquet, jsonl).",
    )
    format: SourceFormat = Field(
        default="csv",
        description="csv, parquet, jsonl (JSON Lines), sql (query a database at url) or duckdb (a "
        "query DuckDB runs).",
    )
    header: bool | None = Field(
        default=None,
        description="CSV: whether the first line holds the column names; unset: detected from the "
        "file.",
    )
    columns: list[str] | None = Field(
        default=None,
        description="The column names, in file order: for a file without a header, or to rename "
        "every column. Must name all of them.",
    )
    delimiter: str | None = Field(
        default=None,
        description="CSV: the one-character field separator (',', ';', tab, ...); unset: detected.",
    )
    quote: str | None = Field(
        default=None,
        description="CSV: the quote character; unset: detected.",
    )
    escape: str | None = Field(
        default=None,
        description="CSV: the character that escapes a quote inside a quoted field; unset: "
        "detected.",
    )
    comment: str | None = Field(
        default=None,
        description="CSV: lines that start with this character are skipped.",
    )
    encoding: str | None = Field(
        default=None,
        description="The text encoding (utf-8, latin-1, cp1252, ...); unset: detected from the "
        "file.",
    )
    skip_rows: int = Field(
        default=0,
        ge=0,
        description="Lines to skip at the top of the file, before the header or the data.",
    )
    na_values: list[str] = Field(
        default_factory=list,
        description="Cell values that mean missing, besides empty cells, e.g. [NA, '?']. Cells "
        "are trimmed first.",
    )
    replace: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per column, cell values to replace as read: {income: {'>50K.': '>50K'}}.",
    )
    types: dict[str, str] = Field(
        default_factory=dict,
        description="CSV: per column, the DuckDB type to read it as (VARCHAR, DOUBLE, BIGINT, "
        "DATE, ...) instead of the detected one.",
    )
    unix_time: dict[str, Literal["s", "ms", "us"]] = Field(
        default_factory=dict,
        description="Per column, numbers of seconds (s), milliseconds (ms) or microseconds (us) "
        "since 1970-01-01 UTC to read as timestamps: {timestamp: s}. Converted once, as the "
        "source is read; schema.yaml's unit: then reads the same numbers in requests.",
    )
    url: str | None = Field(
        default=None,
        description="sql: the database's SQLAlchemy URL (${VAR} expansion keeps passwords out of "
        "the file).",
    )
    query: str | None = Field(
        default=None,
        description="sql and duckdb: the query whose rows are the table.",
    )
    chunk_size: int = Field(
        default=100_000,
        ge=1,
        description="sql: rows fetched from the database at a time.",
    )
    max_bad_rows: int | float = Field(
        default=0,
        description="Rows that fail to parse (kept in a quarantine artifact with file and line) "
        "that ingestion tolerates: a count, or a fraction of the rows such as 0.01. "
        "More fail the ingest.",
    )
    incremental: IncrementalConfig | None = None

    @field_validator("delimiter", "quote", "escape", "comment")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"must be one character, got {value!r}")
        return value

    @field_validator("max_bad_rows")
    @classmethod
    def _bad_rows_limit(cls, value: int | float) -> int | float:
        if isinstance(value, float) and not 0.0 <= value < 1.0:
            raise ValueError(
                f"a fraction must be in [0, 1), got {value!r}; write a whole number for a count"
            )
        if value < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return value

    @model_validator(mode="after")
    def _where_from(self) -> SourceConfig:
        needs = {"sql": ("url", "query"), "duckdb": ("query",)}.get(self.format, ("path",))
        missing = [key for key in needs if getattr(self, key) is None]
        if missing:
            keys = " and ".join(f"'{key}'" for key in needs)
            raise ValueError(f"a {self.format} source needs {keys}; add {missing[0]}")
        return self


class DataConfig(Frozen):
    """The training data, the optional held-out test data, and the roles of columns."""

    train: SourceConfig
    test: SourceConfig | None = Field(
        default=None,
        description="Held-out test data. Without it, keel run holds out split.test_fraction "
        "of data.train itself (the split: section says how), recorded with the 'split' run.",
    )
    target: str = Field(
        description="The column to predict.",
    )
    positive_label: str | None = Field(
        default=None,
        description="Binary tasks: the class whose probability the model gives (default: the last "
        "of the two values in sort order).",
    )
    sensitive: list[str] = Field(
        default_factory=list,
        description="Columns to audit for fairness (metrics and gaps per group); they stay model "
        "inputs.",
    )
    drop: list[str] = Field(
        default_factory=list,
        description="Columns the model must not see: ids, leaks of the target, a sample weight "
        "column.",
    )
    max_null_fraction: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="The inferred schema's ceiling on a column's share of missing values (a "
        "column with more in training gets about twice its share).",
    )
