"""SQL sources: any SQLAlchemy URL plus a query, fetched in chunks into Parquet parts.

Rows are streamed from the server (``stream_results``) ``chunk_size`` at a time; each chunk is
written as one Parquet part, so memory holds one chunk. DuckDB then reads the parts as one
table, unifying column types that differ between chunks (a column that is all null in one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from keel.config import SourceConfig
from keel.errors import BackendError, ConfigError, DataValidationError

__all__ = ["fetch_parts", "safe_url"]


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and metadata."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid url>"


def fetch_parts(
    source: SourceConfig, workdir: Path, *, after: tuple[str, Any] | None = None
) -> list[Path]:
    """Run the source's query and write its rows to Parquet parts in ``workdir``.

    Args:
        source: A ``format: sql`` source (``url`` and ``query`` set).
        workdir: Where the parts go.
        after: ``(column, watermark)``: only rows with ``column > watermark`` (or a NULL
            ``column``, which ingest counts and reports) are fetched.

    Returns:
        The part files, in order (at least one, possibly empty).

    Raises:
        ConfigError: The URL is invalid or its database driver is not installed.
        BackendError: The database cannot be reached.
        DataValidationError: The query fails.
    """
    assert source.url is not None and source.query is not None  # checked by SourceConfig
    try:
        engine = sa.create_engine(source.url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        msg = f"data source url {safe_url(source.url)}: {exc}. Check the URL and its driver."
        raise ConfigError(msg, field="url") from exc
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        msg = f"{safe_url(source.url)}: cannot connect: {_first_line(exc)}. Is the database up?"
        raise BackendError(msg) from exc
    try:
        with conn:
            query = _query(source.query, conn.dialect, after)
            result = conn.execution_options(stream_results=True).execute(query, _params(after))
            with result:
                return _write_parts(result, workdir, source.chunk_size)
    except sa.exc.DBAPIError as exc:
        msg = f"{safe_url(source.url)}: the query failed: {_first_line(exc)}. Fix data.*.query."
        raise DataValidationError(msg) from exc
    finally:
        engine.dispose()


def _query(query: str, dialect: sa.Dialect, after: tuple[str, Any] | None) -> sa.TextClause:
    if after is None:
        return sa.text(query)
    column = dialect.identifier_preparer.quote(after[0])
    inner = query.strip().rstrip(";")
    # NULL watermarks come too: ingest counts them and reports new ones instead of dropping them
    return sa.text(
        f"SELECT * FROM ({inner}) AS keel_source "
        f"WHERE {column} > :keel_watermark OR {column} IS NULL"
    )


def _params(after: tuple[str, Any] | None) -> dict[str, Any]:
    return {} if after is None else {"keel_watermark": after[1]}


def _write_parts(result: sa.CursorResult[Any], workdir: Path, chunk_size: int) -> list[Path]:
    names = list(result.keys())
    parts: list[Path] = []
    while rows := result.fetchmany(chunk_size):
        columns = list(zip(*rows, strict=True))
        part = workdir / f"sql-part-{len(parts):06d}.parquet"
        pq.write_table(pa.table({n: list(c) for n, c in zip(names, columns, strict=True)}), part)
        parts.append(part)
    if not parts:
        part = workdir / "sql-part-empty.parquet"
        pq.write_table(pa.table({n: pa.array([], pa.string()) for n in names}), part)
        parts.append(part)
    return parts


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
