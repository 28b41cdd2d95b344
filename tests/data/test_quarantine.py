"""Bad rows are quarantined with file, line and reason; too many of them fail the ingestion."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from keel.config import SourceConfig
from keel.data import ingest, read_snapshot
from keel.errors import DataValidationError

from .conftest import Stores

GOOD = "".join(f"{i},name{i},{i * 1.5}\n" for i in range(1, 21))


def make(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


def quarantined(stores: Stores, sha: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = pq.read_table(stores.artifacts.local_path(sha)).to_pylist()
    return rows


def test_truncated_last_line_and_too_many_fields(tmp_path: Path, stores: Stores) -> None:
    # line 1 is the header; line 6 has a fourth field; line 23 (the last) is cut short
    lines = ["id,name,score", *GOOD.splitlines()]
    lines.insert(5, "99,extra,1.0,surplus")
    make(tmp_path / "a.csv", ("\n".join(lines) + "\n21").encode())
    source = SourceConfig(path="a.csv", max_bad_rows=2)
    result = ingest(source, tmp_path, stores, split="train")
    assert (result.rows, result.bad_rows) == (20, 2)
    assert result.quarantine is not None and result.quarantine.kind == "quarantine"
    bad = quarantined(stores, result.quarantine.sha256)
    assert [(r["line"], r["kind"]) for r in bad] == [
        (6, "TOO MANY COLUMNS"),
        (23, "MISSING COLUMNS"),
    ]
    assert bad[0]["raw"] == "99,extra,1.0,surplus"
    assert bad[1]["raw"] == "21"  # one row for the line, not one per missing column
    assert all(str(r["file"]).endswith("a.csv") for r in bad)
    assert result.snapshot.metadata["quarantine"] == result.quarantine.sha256
    assert result.snapshot.metadata["bad_rows"] == 2
    assert (
        99 not in read_snapshot(stores.artifacts, result.snapshot.sha256).column("id").to_pylist()
    )


def test_unparseable_typed_value_and_undecodable_bytes(tmp_path: Path, stores: Stores) -> None:
    body = b"id,name,score\n" + GOOD.encode() + b"abc,x,1\n22,\xff\xfe,2\n"
    make(tmp_path / "b.csv", body)
    source = SourceConfig(path="b.csv", encoding="utf-8", types={"id": "BIGINT"}, max_bad_rows=0.2)
    result = ingest(source, tmp_path, stores, split="train")
    assert result.bad_rows == 2 and result.rows == 20
    assert result.quarantine is not None
    bad = quarantined(stores, result.quarantine.sha256)
    assert [(r["line"], r["kind"], r["column"]) for r in bad] == [
        (22, "CAST", "id"),
        (23, "INVALID ENCODING", "name"),
    ]
    assert "abc" in str(bad[0]["reason"])


def test_exceeding_the_count_fails_with_lines_and_the_fix(tmp_path: Path, stores: Stores) -> None:
    make(tmp_path / "c.csv", ("id,name,score\n" + GOOD + "1,2\n3,4,5,6\n").encode())
    with pytest.raises(DataValidationError) as caught:
        ingest(SourceConfig(path="c.csv", max_bad_rows=1), tmp_path, stores, split="train")
    message = caught.value.message
    assert "data.train (c.csv): 2 bad row(s)" in message
    assert "c.csv:22: MISSING COLUMNS" in message and "c.csv:23: TOO MANY COLUMNS" in message
    assert "max_bad_rows = 1" in message and "raise the source's max_bad_rows" in message
    # the quarantine is kept for inspection even though the ingestion failed
    sha = caught.value.details["quarantine"]
    assert stores.metadata.get_artifact(sha).kind == "quarantine"
    assert stores.metadata.list_artifacts(kind="snapshot") == []


def test_default_limit_is_zero(tmp_path: Path, stores: Stores) -> None:
    make(tmp_path / "d.csv", ("id,name,score\n" + GOOD + "7,7\n").encode())
    with pytest.raises(DataValidationError, match="1 bad row"):
        ingest(SourceConfig(path="d.csv"), tmp_path, stores, split="train")


def test_fraction_limit(tmp_path: Path, stores: Stores) -> None:
    make(tmp_path / "e.csv", ("id,name,score\n" + GOOD + "7,7\n").encode())  # 1 bad of 21
    assert ingest(SourceConfig(path="e.csv", max_bad_rows=0.05), tmp_path, stores).bad_rows == 1
    with pytest.raises(DataValidationError, match=r"4\.76% of 21"):
        ingest(SourceConfig(path="e.csv", max_bad_rows=0.04), tmp_path, stores)


def test_glob_reports_the_file_of_each_bad_row(tmp_path: Path, stores: Stores) -> None:
    (tmp_path / "in").mkdir()
    make(tmp_path / "in" / "1.csv", ("id,name,score\n" + GOOD).encode())
    make(tmp_path / "in" / "2.csv", ("id,name,score\n" + GOOD + "1,2,3,4\n").encode())
    result = ingest(SourceConfig(path="in/*.csv", max_bad_rows=5), tmp_path, stores)
    assert result.rows == 40 and result.quarantine is not None
    bad = quarantined(stores, result.quarantine.sha256)
    assert [(Path(str(r["file"])).name, r["line"]) for r in bad] == [("2.csv", 22)]


def test_transcoded_file_keeps_its_name_and_lines(tmp_path: Path, stores: Stores) -> None:
    body = ("n,s\n" + "".join(f"{i},€{i}\n" for i in range(30)) + "1,2,3\n").encode("cp1252")
    make(tmp_path / "w.csv", body)
    source = SourceConfig(path="w.csv", encoding="cp1252", max_bad_rows=1)
    result = ingest(source, tmp_path, stores)
    assert result.quarantine is not None
    bad = quarantined(stores, result.quarantine.sha256)
    assert [(Path(str(r["file"])).name, r["line"]) for r in bad] == [("w.csv", 32)]


def test_bad_rows_name_columns_as_keel_yaml_does(tmp_path: Path, stores: Stores) -> None:
    make(tmp_path / "h.csv", (GOOD + "x,name,1.0\n").encode())
    source = SourceConfig(
        path="h.csv",
        header=False,
        columns=["id", "name", "score"],
        types={"id": "BIGINT"},
        max_bad_rows=1,
    )
    result = ingest(source, tmp_path, stores)
    assert result.quarantine is not None
    bad = quarantined(stores, result.quarantine.sha256)
    assert [(r["line"], r["kind"], r["column"]) for r in bad] == [(21, "CAST", "id")]


def test_malformed_json_lines_are_quarantined(tmp_path: Path, stores: Stores) -> None:
    lines = ['{"id": 1, "s": "a"}', "", '{"id": 2, "s": ', '{"id": 3, "s": "c,\\"d\\""}', "{oops}"]
    make(tmp_path / "e.jsonl", ("\n".join(lines) + "\n").encode())
    source = SourceConfig(path="e.jsonl", format="jsonl", max_bad_rows=2)
    result = ingest(source, tmp_path, stores)
    assert (result.rows, result.bad_rows) == (2, 2)
    table = read_snapshot(stores.artifacts, result.snapshot.sha256)
    assert table.to_pylist() == [{"id": 1, "s": "a"}, {"id": 3, "s": 'c,"d"'}]
    assert result.quarantine is not None
    bad = quarantined(stores, result.quarantine.sha256)
    assert [(Path(str(r["file"])).name, r["line"], r["kind"], r["raw"]) for r in bad] == [
        ("e.jsonl", 3, "INVALID JSON", '{"id": 2, "s": '),
        ("e.jsonl", 5, "INVALID JSON", "{oops}"),
    ]
