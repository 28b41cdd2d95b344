"""keel.yaml ``data:``: sources (CSV, Parquet, JSON Lines, SQL, DuckDB), incremental ingestion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from keel.config.base import Frozen

__all__ = ["DataConfig", "IncrementalConfig", "SourceConfig"]


class IncrementalConfig(Frozen):
    """Incremental ingestion: read only rows whose ``column`` is above the last watermark."""

    column: str


SourceFormat = Literal["csv", "parquet", "jsonl", "sql", "duckdb"]


class SourceConfig(Frozen):
    """Where a table comes from and how to parse it.

    ``path`` (csv, parquet, jsonl) may be a glob. CSV options left unset (``header``,
    ``delimiter``, ``quote``, ``escape``, ``encoding``) are detected from the file. ``sql`` reads
    ``query`` from the SQLAlchemy ``url``; ``duckdb`` runs ``query`` in DuckDB.
    """

    path: str | None = None
    format: SourceFormat = "csv"
    header: bool | None = None
    columns: list[str] | None = None
    delimiter: str | None = None
    quote: str | None = None
    escape: str | None = None
    comment: str | None = None
    encoding: str | None = None
    skip_rows: int = Field(default=0, ge=0)
    na_values: list[str] = Field(default_factory=list)
    replace: dict[str, dict[str, str]] = Field(default_factory=dict)
    types: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    query: str | None = None
    chunk_size: int = Field(default=100_000, ge=1)
    max_bad_rows: int | float = 0
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
    test: SourceConfig | None = None
    target: str
    positive_label: str | None = None
    sensitive: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    max_null_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
