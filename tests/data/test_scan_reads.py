"""A CSV file is sniffed once and read once: its dialect, columns and types are found by one
``sniff_csv`` and spelled out for the scan, so describing, limiting and fetching the scan do not
sniff it again. Counted as the bytes this process reads (Linux's ``/proc/self/io``): a file
smaller than DuckDB's 32 MiB buffer is read whole by the sniffer, then by the scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pytest

from keel.config import SourceConfig
from keel.data import reader
from keel.data.files import open_data, read_batches
from keel.data.reader import read_file
from keel.data.scan import connect, fetch_table, open_scan

IO = Path("/proc/self/io")
pytestmark = pytest.mark.skipif(not IO.exists(), reason="counts reads with Linux's /proc/self/io")


def bytes_read() -> int:
    fields = dict(line.split(": ") for line in IO.read_text().splitlines())
    return int(fields["rchar"])


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 40_000
    table = pa.table(
        {
            "age": rng.integers(17, 90, n),
            "score": rng.random(n),
            "kind": pa.array([f"kind-{i % 7}" for i in range(n)]),
            "day": pa.array([f"2024-01-{1 + i % 28:02d}" for i in range(n)]),
        }
    )
    file = tmp_path_factory.mktemp("reads") / "rows.csv"
    pv.write_csv(table, file)
    read_file(file)  # the readers' imports, out of the count
    return file


def reads_of(file: Path, read: object) -> float:
    """How many times ``read()`` read ``file`` over (bytes read / the file's size)."""
    before = bytes_read()
    assert callable(read)
    read()
    return (bytes_read() - before) / file.stat().st_size


def test_a_file_read_whole_is_sniffed_once_and_read_once(csv_file: Path) -> None:
    table, bad = read_file(csv_file)
    assert (table.num_rows, bad) == (40_000, ())
    assert table.schema.field("day").type == pa.date32()  # the sniffed date format is kept
    assert 2.0 <= reads_of(csv_file, lambda: read_file(csv_file)) < 2.2


def test_a_streamed_file_is_sniffed_once_and_read_once_per_pass(
    csv_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "STREAM_CSV_BYTES", 1 << 10)

    def one_pass() -> int:
        opened = open_data(csv_file)
        assert isinstance(opened, reader.CsvFile) and opened.streamed
        return sum(table.num_rows for table in read_batches(opened, None, 1 << 20))

    assert one_pass() == 40_000
    assert 2.0 <= reads_of(csv_file, one_pass) < 2.2


def test_ingestion_describes_its_scan_without_reading_the_file(
    csv_file: Path, tmp_path: Path
) -> None:
    source = SourceConfig(path=str(csv_file), types={"age": "DOUBLE"})
    with connect(tmp_path) as con:
        before = bytes_read()
        scan = open_scan(con, source, csv_file.parent, tmp_path, text=frozenset({"kind"}))
        con.execute(f"DESCRIBE {scan.select}").fetchall()
        fetch_table(con, f"SELECT * FROM ({scan.select}) LIMIT 0")
        sniffed = (bytes_read() - before) / csv_file.stat().st_size
        table = fetch_table(con, scan.select)
    assert 1.0 <= sniffed < 1.2  # the sniffer's read; DESCRIBE and LIMIT 0 read nothing
    assert scan.dialect["delimiter"] == "," and scan.dialect["header"] is True
    types = {f.name: str(f.type) for f in table.schema}
    assert types == {"age": "double", "score": "double", "kind": "string", "day": "date32[day]"}


def test_several_files_are_still_sniffed_each_and_their_types_unified(tmp_path: Path) -> None:
    """One sniff of the first file would read ``a`` as numbers and reject the second file's
    ``q``; DuckDB sniffing each file reads the column as text, as ingestion always has."""
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "p1.csv").write_text("a,b\n1,x\n")
    (parts / "p2.csv").write_text("a,b\nq,y\n3,z\n")
    source = SourceConfig(path="parts/*.csv")
    with connect(tmp_path) as con:
        scan = open_scan(con, source, tmp_path, tmp_path)
        table = fetch_table(con, scan.select)
        assert scan.rejects is not None
        rejects = fetch_table(con, scan.rejects)
    assert table.column("a").to_pylist() == ["1", "q", "3"]
    assert rejects.num_rows == 0
