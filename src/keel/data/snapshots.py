"""Ingestion: a declared source -> a versioned, content-addressed Parquet snapshot artifact.

DuckDB streams the cleaned rows straight into a Parquet file (``COPY ... TO``) under a memory
cap, so a file of any size is ingested in bounded memory; the file is then stored as a
``snapshot`` artifact whose metadata carries rows, columns, schema fingerprint and source.
Rows that do not parse go to a ``quarantine`` artifact (see :mod:`keel.data.quarantine`).

Incremental ingestion (``incremental: {column: ...}``) finds the newest snapshot of the same
source, reads only rows whose column is above its watermark, and writes parent rows + new rows
as the new snapshot, so training always reads one complete table. A row whose column is NULL
cannot be placed after a watermark: the first, full ingestion takes such rows, later ones leave
them out, and every snapshot records how many the source had (``watermark_nulls``) so that a run
finding more than its parent recorded says so (``skipped_null_watermark``, a warning, and bad
rows against an explicitly set ``max_bad_rows``) instead of dropping them silently.
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
import pyarrow.compute as pc
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
        skipped_null_watermark: New rows of an incremental source left out because their
            watermark column is NULL (more such rows than the parent snapshot recorded).
        warnings: What the user should be told (skipped rows: which column, how many, what
            to do); empty when all is well.
    """

    snapshot: Artifact
    quarantine: Artifact | None
    rows: int
    bad_rows: int
    new_rows: int
    skipped_null_watermark: int = 0
    warnings: tuple[str, ...] = ()


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
            ``max_bad_rows`` (the quarantine artifact is stored first and named). When
            ``max_bad_rows`` is set in keel.yaml, rows skipped for a NULL watermark count too.

    Example:
        >>> result = ingest(project.config.data.train, project.root, project)  # doctest: +SKIP
        >>> read_snapshot(project.artifacts, result.snapshot.sha256).num_rows  # doctest: +SKIP
    """
    identity = source_identity(source)
    where = f"data.{split} ({identity})"
    parent = _parent(stores.metadata, source, identity)
    after = _watermark_filter(source, parent)
    # an incremental run leaves out (and counts) rows it cannot place after the watermark
    undated = source.incremental.column if source.incremental and parent else None
    with tempfile.TemporaryDirectory(prefix="keel-ingest-") as tmp:
        work = Path(tmp)
        with connect(work) as con:
            scan = open_scan(con, source, root, work, after=after)
            fresh = work / "new.parquet"
            new_rows, nulls = _copy(con, scan, fresh, identity, drop_null=undated)
            rejects = collect_rejects(con, scan)
            target = fresh
            if parent is not None and new_rows:
                target = work / "snapshot.parquet"
                _append(con, stores.artifacts.local_path(parent.sha256), fresh, target)
            facts = _facts(con, source, target, parent, nulls=nulls if undated else None)
            if parent is not None and undated:
                facts |= _skipped(con, stores.artifacts, parent, undated, nulls)
        rows = int(facts["rows"] if new_rows or parent is None else parent.metadata["rows"])
        quarantine = _put_quarantine(stores, rejects, identity, split)
        limit = source.max_bad_rows
        sha = quarantine.sha256 if quarantine else None
        check_bad_rows(rejects, good_rows=rows, limit=limit, where=where, quarantine=sha)
        bad = bad_row_count(rejects)
        skipped = int(facts.get("skipped_null_watermark", 0))
        warnings = _skipped_warnings(source, parent, skipped, where)
        if skipped and "max_bad_rows" in source.model_fields_set:
            _check_skipped(warnings[0], bad, skipped, rows, limit)
        if parent is not None and new_rows == 0:
            return IngestResult(parent, quarantine, rows, bad, 0, skipped, warnings)
        files = [_relative(f, root) for f in scan.files[:_FILES_SHOWN]]
        extra = {"files": files, "dialect": scan.dialect, "new_rows": new_rows}
        metadata = facts | extra | _lineage(identity, split, bad, quarantine, parent)
        snapshot = stores.artifacts.put(target, kind="snapshot", metadata=metadata)
    stores.metadata.record_artifact(snapshot)
    return IngestResult(snapshot, quarantine, rows, bad, new_rows, skipped, warnings)


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


def _copy(
    con: duckdb.DuckDBPyConnection,
    scan: Scan,
    target: Path,
    identity: str,
    *,
    drop_null: str | None,
) -> tuple[int, int]:
    try:
        return _write_parquet(con, scan.select, target, drop_null=drop_null)
    except duckdb.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"{identity}: cannot read the source: {reason}. Check its format and options."
        raise DataValidationError(msg) from exc


def _append(con: duckdb.DuckDBPyConnection, parent: Path, fresh: Path, target: Path) -> None:
    # one multi-file scan keeps file order: parent rows first, then the new ones
    files = sql([str(parent), str(fresh)])
    _write_parquet(con, f"SELECT * FROM read_parquet({files}, union_by_name = true)", target)


def _write_parquet(
    con: duckdb.DuckDBPyConnection, select: str, target: Path, *, drop_null: str | None = None
) -> tuple[int, int]:
    """Stream ``select`` into Parquet with fixed-size row groups.

    DuckDB's own ``COPY ... TO`` cuts row groups by timing and memory pressure, so the same
    rows can give different bytes; re-chunking DuckDB's ordered batches into row groups of
    exactly ``ROW_GROUP_ROWS`` makes equal data give an equal sha256.

    Returns:
        Rows written, and rows left out because ``drop_null`` (a column) was NULL in them.
    """
    reader = con.sql(select).to_arrow_reader(batch_size=ROW_GROUP_ROWS)
    rows = dropped = 0
    with pq.ParquetWriter(target, reader.schema, compression="zstd") as writer:
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in reader:
            if drop_null is not None and batch.column(drop_null).null_count:
                dropped += batch.column(drop_null).null_count
                batch = batch.filter(pc.is_valid(batch.column(drop_null)))
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
    return rows, dropped


def _facts(
    con: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    file: Path,
    parent: Artifact | None,
    *,
    nulls: int | None,
) -> dict[str, Any]:
    """Rows, columns, fingerprint; for an incremental source its watermark and how many
    source rows have none (``nulls`` when the caller counted them, else counted in ``file``)."""
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
    name = quote_ident(column)
    # max() comes from the Parquet statistics; counting NULLs reads the column (~10 ms a 1M rows)
    counted = f"count(*) - count({name})" if nulls is None else sql(nulls)
    row = con.execute(
        f"SELECT max({name}), typeof(max({name})), {counted} FROM read_parquet({sql(str(file))})"
    ).fetchone()
    value, kind, in_source = (row[0], row[1], int(row[2])) if row else (None, None, 0)
    if value is None and parent is not None:
        value, kind = parent.metadata.get("watermark"), parent.metadata.get("watermark_type")
    return facts | {
        "watermark_column": column,
        "watermark": _json_value(value),
        "watermark_type": kind,
        "watermark_nulls": in_source,
        "skipped_null_watermark": 0,
    }


def _skipped(
    con: duckdb.DuckDBPyConnection,
    artifacts: ArtifactStore,
    parent: Artifact,
    column: str,
    nulls: int,
) -> dict[str, int]:
    """NULL-watermark rows beyond those the parent recorded: new ones this run cannot place."""
    known = parent.metadata.get("watermark_nulls")
    if not isinstance(known, int):  # a snapshot from before the count: the NULL rows it holds
        file = sql(str(artifacts.local_path(parent.sha256)))
        row = con.execute(
            f"SELECT count(*) - count({quote_ident(column)}) FROM read_parquet({file})"
        ).fetchone()
        known = int(row[0]) if row else 0
    return {"skipped_null_watermark": max(nulls - known, 0)}


def _skipped_warnings(
    source: SourceConfig, parent: Artifact | None, skipped: int, where: str
) -> tuple[str, ...]:
    if not skipped or source.incremental is None or parent is None:
        return ()
    column = source.incremental.column
    return (
        f"{where}: {skipped} new row(s) with no value (NULL) in the incremental watermark "
        f"column '{column}' were not taken: they cannot be placed after the last snapshot's "
        f"watermark ({parent.metadata.get('watermark')}). Give them a value in '{column}', "
        "or ingest the source without 'incremental' to take every row.",
    )


def _check_skipped(warning: str, bad: int, skipped: int, rows: int, limit: int | float) -> None:
    """Skipped rows count as bad rows against an explicitly set ``max_bad_rows``."""
    total = bad + skipped
    fraction = total / (total + rows)
    if (fraction <= limit) if isinstance(limit, float) else (total <= limit):
        return
    msg = (
        f"{warning} With {bad} unparseable row(s) that makes {total} bad row(s) "
        f"({fraction:.2%} of {total + rows}), over max_bad_rows = {limit}."
    )
    details = {"bad_rows": bad, "skipped_null_watermark": skipped, "rows": total + rows}
    raise DataValidationError(msg, field="max_bad_rows", details=details)


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
