"""Ingestion into content-addressed snapshots, incremental ingestion, listing and showing."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.config import IncrementalConfig, KeelConfig, SourceConfig
from keel.data import (
    ingest,
    list_snapshots,
    read_snapshot,
    read_source,
    show_snapshot,
    source_fingerprint,
)
from keel.data.snapshots import schema_fingerprint
from keel.errors import ConfigError, DataValidationError, NotFoundError

from .conftest import Stores


def test_adult_snapshot_equals_read_source(
    adult_config: KeelConfig, adult_root: Path, adult_train_table: pa.Table, stores: Stores
) -> None:
    result = ingest(adult_config.data.train, adult_root, stores, split="train")
    table = read_snapshot(stores.artifacts, result.snapshot.sha256)
    assert table.equals(adult_train_table)
    meta = result.snapshot.metadata
    assert (result.rows, result.bad_rows, result.new_rows, result.quarantine) == (
        32561,
        0,
        32561,
        None,
    )
    assert meta["rows"] == 32561 and meta["source"] == "data/adult.data"
    assert meta["files"] == ["data/adult.data"] and meta["dialect"] == {
        "encoding": "utf-8",
        "delimiter": ",",
        "quote": None,
        "escape": None,
        "comment": None,
        "header": False,
    }
    assert meta["columns"] == adult_train_table.column_names
    assert meta["schema_fingerprint"] == schema_fingerprint(adult_train_table.schema)
    assert stores.metadata.get_artifact(result.snapshot.sha256).kind == "snapshot"


def test_same_data_gives_the_same_snapshot(tmp_path: Path, stores: Stores) -> None:
    rows = "".join(f"{i},v{i % 7},{i / 3}\n" for i in range(300_000))
    (tmp_path / "a.csv").write_text("n,s,f\n" + rows)
    first = ingest(SourceConfig(path="a.csv"), tmp_path, stores)
    second = ingest(SourceConfig(path="a.csv"), tmp_path, stores)
    assert first.snapshot.sha256 == second.snapshot.sha256
    assert first.rows == 300_000


def test_incremental_reads_only_new_rows_and_chains_parents(tmp_path: Path, stores: Stores) -> None:
    data = tmp_path / "events.csv"
    data.write_text("id,at,v\n1,2024-01-01 10:00:00,a\n2,2024-01-02 10:00:00,b\n")
    source = SourceConfig(path="events.csv", incremental=IncrementalConfig(column="at"))
    first = ingest(source, tmp_path, stores)
    assert (first.rows, first.new_rows) == (2, 2)
    assert first.snapshot.metadata["watermark"] == "2024-01-02 10:00:00"
    assert first.snapshot.metadata["parent"] is None

    # one old row is edited in place: an incremental read must not pick it up again
    data.write_text(
        "id,at,v\n1,2024-01-01 10:00:00,EDITED\n2,2024-01-02 10:00:00,b\n"
        "3,2024-01-03 09:00:00,c\n4,2024-01-04 09:00:00,d\n"
    )
    second = ingest(source, tmp_path, stores)
    assert (second.rows, second.new_rows) == (4, 2)
    meta = second.snapshot.metadata
    assert meta["parent"] == first.snapshot.sha256
    assert meta["watermark"] == "2024-01-04 09:00:00"
    table = read_snapshot(stores.artifacts, second.snapshot.sha256)
    assert table.column("v").to_pylist() == ["a", "b", "c", "d"]
    assert table.column("id").to_pylist() == [1, 2, 3, 4]

    third = ingest(source, tmp_path, stores)  # nothing new: the parent stands
    assert third.snapshot.sha256 == second.snapshot.sha256 and third.new_rows == 0

    with data.open("a") as handle:
        handle.write("5,2024-01-05 09:00:00,e\n")
    fourth = ingest(source, tmp_path, stores)
    assert fourth.snapshot.metadata["parent"] == second.snapshot.sha256
    assert fourth.rows == 5 and fourth.new_rows == 1


def test_incremental_integer_watermark(tmp_path: Path, stores: Stores) -> None:
    (tmp_path / "a.csv").write_text("seq,x\n1,1.5\n2,2.5\n")
    source = SourceConfig(path="a.csv", incremental=IncrementalConfig(column="seq"))
    assert ingest(source, tmp_path, stores).snapshot.metadata["watermark"] == 2
    (tmp_path / "a.csv").write_text("seq,x\n1,1.5\n2,2.5\n3,3.5\n")
    result = ingest(source, tmp_path, stores)
    assert (result.rows, result.new_rows) == (3, 1)
    assert result.snapshot.metadata["watermark"] == 3


def test_incremental_column_must_exist(tmp_path: Path, stores: Stores) -> None:
    (tmp_path / "a.csv").write_text("seq,x\n1,1.5\n")
    source = SourceConfig(path="a.csv", incremental=IncrementalConfig(column="when"))
    with pytest.raises(ConfigError, match=r"incremental\.column 'when' is not a column"):
        ingest(source, tmp_path, stores)


def test_list_and_show(tmp_path: Path, stores: Stores) -> None:
    (tmp_path / "a.csv").write_text("n,s\n1,x\n2,\n3,z\n")
    result = ingest(SourceConfig(path="a.csv"), tmp_path, stores, split="test")
    listed = list_snapshots(stores)
    assert [s["sha256"] for s in listed] == [result.snapshot.sha256]
    assert listed[0]["rows"] == 3 and listed[0]["split"] == "test"
    shown = show_snapshot(stores, result.snapshot.sha256[:8], head=2)
    assert shown["columns"] == [
        {"name": "n", "type": "int64", "nullable": True},
        {"name": "s", "type": "string", "nullable": True},
    ]
    assert shown["head"] == [{"n": 1, "s": "x"}, {"n": 2, "s": None}]
    assert shown["rows"] == 3 and shown["source"] == "a.csv" and shown["bad_rows"] == 0
    quarantine = stores.artifacts.put(b"x", kind="quarantine")
    stores.metadata.record_artifact(quarantine)
    with pytest.raises(NotFoundError, match="is a quarantine, not a snapshot"):
        show_snapshot(stores, quarantine.sha256)


def test_fingerprint_follows_content_and_glob_members(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.csv").write_text("a\n1\n")
    glob = SourceConfig(path="d/*.csv")
    before = source_fingerprint(glob, tmp_path)
    assert source_fingerprint(glob, tmp_path) == before
    (tmp_path / "d" / "2.csv").write_text("a\n2\n")
    added = source_fingerprint(glob, tmp_path)
    assert added != before
    os.utime(tmp_path / "d" / "2.csv", (0, 0))  # mtime alone does not matter
    assert source_fingerprint(glob, tmp_path) == added
    (tmp_path / "d" / "2.csv").write_text("a\n3\n")
    assert source_fingerprint(glob, tmp_path) != added
    query = SourceConfig(format="duckdb", query="SELECT 1")
    assert source_fingerprint(query, tmp_path) != source_fingerprint(query, tmp_path)


def test_read_source_matches_snapshot_for_every_format(tmp_path: Path, stores: Stores) -> None:
    (tmp_path / "a.jsonl").write_text('{"a": 1, "b": " x"}\n{"a": 2, "b": null}\n')
    source = SourceConfig(path="a.jsonl", format="jsonl")
    snapshot = ingest(source, tmp_path, stores).snapshot
    assert read_snapshot(stores.artifacts, snapshot).equals(read_source(source, tmp_path))


def _write_events(path: Path, rows: list[tuple[int, str | None]]) -> None:
    """Events ``(id, at)``: a CSV with an empty cell, or Parquet with a null, where at is None."""
    if path.suffix == ".csv":
        path.write_text("id,at\n" + "".join(f"{i},{at or ''}\n" for i, at in rows))
        return
    at = pa.array([at for _, at in rows], pa.string()).cast(pa.timestamp("us"))
    pq.write_table(pa.table({"id": [i for i, _ in rows], "at": at}), path)


_FIRST = [(1, "2024-01-01 10:00:00"), (2, None), (3, "2024-01-02 10:00:00")]
_LATER = [*_FIRST, (4, "2024-01-03 10:00:00"), (5, None), (6, "2024-01-04 10:00:00")]


@pytest.mark.parametrize("name", ["events.csv", "events.parquet"])
def test_incremental_skips_new_null_watermark_rows_and_says_so(
    tmp_path: Path, stores: Stores, name: str
) -> None:
    fmt = "csv" if name.endswith(".csv") else "parquet"
    source = SourceConfig(path=name, format=fmt, incremental=IncrementalConfig(column="at"))
    _write_events(tmp_path / name, _FIRST)
    first = ingest(source, tmp_path, stores)  # the full ingestion takes the NULL row
    assert (first.rows, first.new_rows, first.skipped_null_watermark) == (3, 3, 0)
    assert first.warnings == ()
    meta = first.snapshot.metadata
    assert (meta["watermark_nulls"], meta["skipped_null_watermark"]) == (1, 0)

    _write_events(tmp_path / name, _LATER)
    second = ingest(source, tmp_path, stores)
    assert (second.rows, second.new_rows, second.skipped_null_watermark) == (5, 2, 1)
    table = read_snapshot(stores.artifacts, second.snapshot)
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 6]
    meta = second.snapshot.metadata
    assert (meta["watermark_nulls"], meta["skipped_null_watermark"]) == (2, 1)
    assert meta["watermark"] == "2024-01-04 10:00:00" and meta["bad_rows"] == 0
    [warning] = second.warnings
    assert f"data.train ({name}): 1 new row(s) with no value (NULL)" in warning
    assert "watermark column 'at' were not taken" in warning
    assert "Give them a value in 'at', or ingest the source without 'incremental'" in warning
    shown = show_snapshot(stores, second.snapshot.sha256)
    assert (shown["watermark_nulls"], shown["skipped_null_watermark"]) == (2, 1)

    third = ingest(source, tmp_path, stores)  # told once: the snapshot recorded both NULL rows
    assert third.snapshot.sha256 == second.snapshot.sha256
    assert (third.rows, third.new_rows, third.skipped_null_watermark) == (5, 0, 0)


def test_null_watermark_rows_without_new_dated_rows_are_reported_each_run(
    tmp_path: Path, stores: Stores
) -> None:
    source = SourceConfig(path="e.csv", incremental=IncrementalConfig(column="at"))
    _write_events(tmp_path / "e.csv", _FIRST)
    first = ingest(source, tmp_path, stores)
    _write_events(tmp_path / "e.csv", [*_FIRST, (4, None)])
    for _ in range(2):  # no new snapshot records the row, so every run says it again
        again = ingest(source, tmp_path, stores)
        assert again.snapshot.sha256 == first.snapshot.sha256
        assert (again.rows, again.new_rows, again.skipped_null_watermark) == (3, 0, 1)
        assert len(again.warnings) == 1


def test_null_watermark_rows_count_against_a_set_max_bad_rows(
    tmp_path: Path, stores: Stores
) -> None:
    at = IncrementalConfig(column="at")
    strict = SourceConfig(path="e.csv", incremental=at, max_bad_rows=0)
    _write_events(tmp_path / "e.csv", _FIRST)
    assert ingest(strict, tmp_path, stores).rows == 3  # the full ingestion takes them
    _write_events(tmp_path / "e.csv", _LATER)
    with pytest.raises(DataValidationError) as caught:
        ingest(strict, tmp_path, stores)
    message = str(caught.value)
    assert "1 new row(s) with no value (NULL) in the incremental watermark column 'at'" in message
    assert "1 bad row(s) (16.67% of 6), over max_bad_rows = 0" in message
    assert caught.value.field == "max_bad_rows"
    lenient = SourceConfig(path="e.csv", incremental=at, max_bad_rows=1)
    assert ingest(lenient, tmp_path, stores).skipped_null_watermark == 1


def test_incremental_after_an_all_null_watermark_takes_dated_rows_once(
    tmp_path: Path, stores: Stores
) -> None:
    source = SourceConfig(path="e.csv", incremental=IncrementalConfig(column="at"))
    (tmp_path / "e.csv").write_text("id,at\n1,\n2,\n")
    first = ingest(source, tmp_path, stores)
    assert first.snapshot.metadata["watermark"] is None
    assert first.snapshot.metadata["watermark_nulls"] == 2
    (tmp_path / "e.csv").write_text("id,at\n1,\n2,\n3,2024-01-01 10:00:00\n")
    second = ingest(source, tmp_path, stores)  # the undated rows are not read a second time
    assert (second.rows, second.new_rows, second.skipped_null_watermark) == (3, 1, 0)
    assert read_snapshot(stores.artifacts, second.snapshot).column("id").to_pylist() == [1, 2, 3]


def test_parent_without_a_null_count_counts_its_own_null_rows(
    tmp_path: Path, stores: Stores
) -> None:
    source = SourceConfig(path="e.csv", incremental=IncrementalConfig(column="at"))
    _write_events(tmp_path / "e.csv", _FIRST)
    first = ingest(source, tmp_path, stores).snapshot
    # a snapshot written before watermark_nulls was recorded (different bytes, same rows)
    legacy_meta = {k: v for k, v in first.metadata.items() if "null" not in k}
    table = read_snapshot(stores.artifacts, first)
    legacy = stores.artifacts.put(
        _parquet_bytes(table, compression="snappy"), kind="snapshot", metadata=legacy_meta
    )
    stores.metadata.record_artifact(legacy)
    _write_events(tmp_path / "e.csv", _LATER)
    second = ingest(source, tmp_path, stores)
    assert second.snapshot.metadata["parent"] == legacy.sha256
    assert (second.rows, second.new_rows, second.skipped_null_watermark) == (5, 2, 1)


def _parquet_bytes(table: pa.Table, *, compression: str) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression)
    data: bytes = sink.getvalue().to_pybytes()
    return data
