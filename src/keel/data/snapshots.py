"""Ingestion: a declared source -> a versioned, content-addressed Parquet snapshot artifact.

DuckDB streams the cleaned rows straight into a Parquet file (``COPY ... TO``) under a memory
cap, so a file of any size is ingested in bounded memory; the file is then stored as a
``snapshot`` artifact whose metadata carries rows, columns, schema fingerprint and source.
Rows that do not parse go to a ``quarantine`` artifact (see :mod:`keel.data.quarantine`).

Incremental ingestion (``incremental: {column: ...}``) finds the newest snapshot of the same
source, reads only rows whose column is above its watermark, and writes parent rows + new rows
as the new snapshot, so training always reads one complete table.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from keel.config import SourceConfig
from keel.data.quarantine import bad_row_count, check_bad_rows, collect_rejects
from keel.data.scan import Scan, connect, open_scan, quote_ident, sql
from keel.data.sources import source_identity
from keel.errors import ConfigError, DataValidationError, NotFoundError
from keel.store.artifacts import ArtifactStore
from keel.store.metadata import MetadataStore
from keel.types import Artifact

__all__ = [
    "IngestResult",
    "Stores",
    "ingest",
    "list_snapshots",
    "read_snapshot",
    "schema_fingerprint",
    "show_snapshot",
]

#: Rows per Parquet row group in a snapshot.
ROW_GROUP_ROWS = 122_880
_SCAN_LIMIT = 10_000
_FILES_SHOWN = 100


class Stores(Protocol):
    """Where artifacts and their records go; a :class:`keel.project.Project` is one."""

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store."""
        ...

    @property
    def metadata(self) -> MetadataStore:
        """The metadata store."""
        ...


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ingestion produced.

    Attributes:
        snapshot: The Parquet snapshot artifact (recorded in the metadata store).
        quarantine: The bad rows artifact, or None when every row parsed.
        rows: Rows in the snapshot.
        bad_rows: Rows that did not parse (quarantined).
        new_rows: Rows read from the source this time (equals ``rows`` unless incremental).
    """

    snapshot: Artifact
    quarantine: Artifact | None
    rows: int
    bad_rows: int
    new_rows: int


def ingest(
    source: SourceConfig, root: Path, stores: Stores, *, split: str = "train"
) -> IngestResult:
    """Read a source in bounded memory into a Parquet snapshot artifact.

    Args:
        source: The source section of keel.yaml (``data.train`` or ``data.test``).
        root: The project directory relative paths start from.
        stores: Where the artifacts go (a Project).
        split: ``train`` or ``test``, recorded in the metadata and used in messages.

    Returns:
        The snapshot, the quarantine (if any row was bad) and the row counts.

    Raises:
        ConfigError: A file is missing, or an option or the incremental column is wrong.
        DataValidationError: The source cannot be read, or it has more bad rows than
            ``max_bad_rows`` (the quarantine artifact is stored first and named).

    Example:
        >>> result = ingest(project.config.data.train, project.root, project)  # doctest: +SKIP
        >>> read_snapshot(project.artifacts, result.snapshot.sha256).num_rows  # doctest: +SKIP
    """
    identity = source_identity(source)
    parent = _parent(stores.metadata, source, identity)
    after = _watermark_filter(source, parent)
    with tempfile.TemporaryDirectory(prefix="keel-ingest-") as tmp:
        work = Path(tmp)
        with connect(work) as con:
            scan = open_scan(con, source, root, work, after=after)
            fresh = work / "new.parquet"
            new_rows = _copy(con, scan, fresh, identity)
            rejects = collect_rejects(con, scan)
            target = fresh
            if parent is not None and new_rows:
                target = work / "snapshot.parquet"
                _append(con, stores.artifacts.local_path(parent.sha256), fresh, target)
            facts = _facts(con, source, target, parent)
        rows = int(facts["rows"])
        quarantine = _put_quarantine(stores, rejects, identity, split)
        check_bad_rows(
            rejects,
            good_rows=rows,
            limit=source.max_bad_rows,
            where=f"data.{split} ({identity})",
            quarantine=quarantine.sha256 if quarantine else None,
        )
        bad = bad_row_count(rejects)
        if parent is not None and new_rows == 0:
            return IngestResult(parent, quarantine, rows, bad, 0)
        files = [_relative(f, root) for f in scan.files[:_FILES_SHOWN]]
        extra = {"files": files, "dialect": scan.dialect, "new_rows": new_rows}
        metadata = facts | extra | _lineage(identity, split, bad, quarantine, parent)
        snapshot = stores.artifacts.put(target, kind="snapshot", metadata=metadata)
    stores.metadata.record_artifact(snapshot)
    return IngestResult(snapshot, quarantine, rows, bad, new_rows)


def read_snapshot(artifacts: ArtifactStore, sha: str | Artifact) -> pa.Table:
    """The table in a snapshot artifact, after verifying its bytes against the sha256.

    Raises:
        NotFoundError: No blob has this sha256.
        IntegrityError: The stored bytes were modified.
    """
    digest = sha.sha256 if isinstance(sha, Artifact) else sha
    return pq.read_table(artifacts.local_path(digest))


def list_snapshots(stores: Stores, *, limit: int = 100) -> list[dict[str, Any]]:
    """Recorded snapshots, newest first, as plain dicts (sha256, size and their metadata)."""
    found = stores.metadata.list_artifacts(kind="snapshot", limit=limit)
    return [{"sha256": a.sha256, "size": a.size} | dict(a.metadata) for a in found]


def show_snapshot(stores: Stores, ref: str, *, head: int = 5) -> dict[str, Any]:
    """One snapshot in detail: metadata, columns with their types, and its first rows.

    Args:
        stores: Where the snapshot is recorded (a Project).
        ref: The snapshot's sha256 or a unique prefix of at least 6 hex digits.
        head: How many leading rows to include.

    Raises:
        NotFoundError: No snapshot matches ``ref``.
        ConfigError: ``ref`` is not a hex prefix.
    """
    artifact = stores.metadata.get_artifact(ref)
    if artifact.kind != "snapshot":
        msg = (
            f"artifact {artifact.short} is a {artifact.kind}, not a snapshot. See 'keel data list'."
        )
        raise NotFoundError(msg, field="snapshot")
    file = pq.ParquetFile(stores.artifacts.local_path(artifact.sha256))
    try:
        schema, count = file.schema_arrow, file.metadata.num_rows
        first = next(file.iter_batches(batch_size=max(head, 1)), None)
    finally:
        file.close()
    columns = [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]
    rows = [] if first is None or head <= 0 else _jsonable(first.slice(0, head))
    details = {"sha256": artifact.sha256, "size": artifact.size} | dict(artifact.metadata)
    return details | {"columns": columns, "rows": count, "head": rows}


def schema_fingerprint(schema: pa.Schema) -> str:
    """16 hex digits identifying column names, order and types (not nullability)."""
    text = "\n".join(f"{field.name}:{field.type}" for field in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- steps of ingest ----------------------------------------------------------------------------


def _parent(metadata: MetadataStore, source: SourceConfig, identity: str) -> Artifact | None:
    if source.incremental is None:
        return None
    column = source.incremental.column
    for artifact in metadata.list_artifacts(kind="snapshot", limit=_SCAN_LIMIT):
        meta = artifact.metadata
        if meta.get("source") == identity and meta.get("watermark_column") == column:
            return artifact
    return None


def _watermark_filter(source: SourceConfig, parent: Artifact | None) -> tuple[str, Any] | None:
    if source.incremental is None or parent is None:
        return None
    value = parent.metadata.get("watermark")
    if value is None:
        return None
    kind = str(parent.metadata.get("watermark_type", ""))
    if isinstance(value, str) and kind.startswith("TIMESTAMP"):
        return source.incremental.column, datetime.fromisoformat(value)
    if isinstance(value, str) and kind == "DATE":
        return source.incremental.column, date.fromisoformat(value)
    return source.incremental.column, value


def _copy(con: duckdb.DuckDBPyConnection, scan: Scan, target: Path, identity: str) -> int:
    try:
        return _write_parquet(con, scan.select, target)
    except duckdb.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"{identity}: cannot read the source: {reason}. Check its format and options."
        raise DataValidationError(msg) from exc


def _append(con: duckdb.DuckDBPyConnection, parent: Path, fresh: Path, target: Path) -> None:
    # one multi-file scan keeps file order: parent rows first, then the new ones
    files = sql([str(parent), str(fresh)])
    _write_parquet(con, f"SELECT * FROM read_parquet({files}, union_by_name = true)", target)


def _write_parquet(con: duckdb.DuckDBPyConnection, select: str, target: Path) -> int:
    """Stream ``select`` into Parquet with fixed-size row groups; returns the row count.

    DuckDB's own ``COPY ... TO`` cuts row groups by timing and memory pressure, so the same
    rows can give different bytes; re-chunking DuckDB's ordered batches into row groups of
    exactly ``ROW_GROUP_ROWS`` makes equal data give an equal sha256.
    """
    reader = con.sql(select).to_arrow_reader(batch_size=ROW_GROUP_ROWS)
    rows = 0
    with pq.ParquetWriter(target, reader.schema, compression="zstd") as writer:
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in reader:
            pending.append(batch)
            held += batch.num_rows
            if held >= ROW_GROUP_ROWS:
                table = pa.Table.from_batches(pending, schema=reader.schema)
                full = held - held % ROW_GROUP_ROWS
                writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP_ROWS)
                rest = table.slice(full)
                pending, held, rows = rest.to_batches(), rest.num_rows, rows + full
        if held or rows == 0:
            writer.write_table(pa.Table.from_batches(pending, schema=reader.schema))
            rows += held
    return rows


def _facts(
    con: duckdb.DuckDBPyConnection, source: SourceConfig, file: Path, parent: Artifact | None
) -> dict[str, Any]:
    schema = pq.read_schema(file)
    facts: dict[str, Any] = {
        "rows": pq.read_metadata(file).num_rows,
        "columns": schema.names,
        "schema_fingerprint": schema_fingerprint(schema),
    }
    if source.incremental is None:
        return facts
    column = source.incremental.column
    if column not in schema.names:
        msg = (
            f"incremental.column '{column}' is not a column of the source "
            f"(columns: {schema.names}). Name the column that grows with new rows."
        )
        raise ConfigError(msg, field="incremental.column")
    row = con.execute(
        f"SELECT max({quote_ident(column)}), typeof(max({quote_ident(column)})) "
        f"FROM read_parquet({sql(str(file))})"
    ).fetchone()
    value, kind = (row[0], row[1]) if row else (None, None)
    if value is None and parent is not None:
        value, kind = parent.metadata.get("watermark"), parent.metadata.get("watermark_type")
    return facts | {
        "watermark_column": column,
        "watermark": _json_value(value),
        "watermark_type": kind,
    }


def _relative(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root))
    except ValueError:
        return str(file)


def _lineage(
    identity: str, split: str, bad: int, quarantine: Artifact | None, parent: Artifact | None
) -> dict[str, Any]:
    return {
        "source": identity,
        "split": split,
        "bad_rows": bad,
        "quarantine": quarantine.sha256 if quarantine else None,
        "parent": parent.sha256 if parent else None,
    }


def _put_quarantine(
    stores: Stores, rejects: pa.Table, identity: str, split: str
) -> Artifact | None:
    if rejects.num_rows == 0:
        return None
    sink = pa.BufferOutputStream()
    pq.write_table(rejects, sink, compression="zstd")
    metadata = {
        "source": identity,
        "split": split,
        "bad_rows": bad_row_count(rejects),
        "errors": rejects.num_rows,
    }
    artifact = stores.artifacts.put(
        sink.getvalue().to_pybytes(), kind="quarantine", metadata=metadata
    )
    stores.metadata.record_artifact(artifact)
    return artifact


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _jsonable(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    # decimals become text so the rows stay JSON-able
    columns = [
        column.cast(pa.string()) if pa.types.is_decimal(column.type) else column
        for column in batch.columns
    ]
    table = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows
