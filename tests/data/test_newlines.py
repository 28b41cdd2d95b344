"""A CSV whose lines end in both ``\\r\\n`` and ``\\n`` is read as if they were all one.

Python's ``csv`` module ends lines with ``\\r\\n``; rows appended by ``echo`` (or another tool)
end with ``\\n``. DuckDB's sniffer gives up on such a file ("Error when sniffing file"), which
made `keel feedback`, `keel predict` and ingestion refuse a file every other tool reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import SourceConfig
from keel.data import encoding, read_source
from keel.data.encoding import uniform_newlines
from keel.data.reader import open_file, read_file
from keel.data.snapshots import ingest, read_snapshot
from tests.data.conftest import Stores

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")


def mixed(lines: list[str], path: Path, switch: int = 300) -> Path:
    """The first ``switch`` lines end in CRLF (as csv.writer writes), the rest in LF."""
    crlf = "".join(f"{line}\r\n" for line in lines[:switch])
    lf = "".join(f"{line}\n" for line in lines[switch:])
    path.write_bytes((crlf + lf).encode("utf-8"))
    return path


def test_mixed_line_endings_read_as_the_original(tmp_path: Path, stores: Stores) -> None:
    path = mixed(PENGUINS.read_text(encoding="utf-8").splitlines(), tmp_path / "mixed.csv")
    table, bad = read_file(path)
    assert bad == () and table.equals(read_file(PENGUINS)[0])
    assert table.num_rows == 344 and table.column("island").to_pylist()[-1] == "Dream"
    declared = SourceConfig(path=str(path), na_values=["NA"])
    assert read_source(declared, tmp_path).equals(
        read_source(SourceConfig(path=str(PENGUINS), na_values=["NA"]), tmp_path)
    )
    snapshot = ingest(declared, tmp_path, stores)
    assert read_snapshot(stores.artifacts, snapshot.snapshot).num_rows == 344


def test_a_bad_line_keeps_its_number_and_file_name(tmp_path: Path) -> None:
    lines = PENGUINS.read_text(encoding="utf-8").splitlines()
    lines[310] += ",extra"  # file line 311, after the switch to LF
    lines[5] += ",extra"  # file line 6, among the CRLF lines
    path = mixed(lines, tmp_path / "labels.csv")
    csv = open_file(path)
    assert [(b.line, b.kind) for b in csv.bad_lines] == [
        (6, "too_many_fields"),
        (311, "too_many_fields"),
    ]
    assert all(b.file == str(path) for b in csv.bad_lines)
    assert csv.read().num_rows == 342


def test_only_mixed_files_are_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = PENGUINS.read_text(encoding="utf-8").splitlines()
    lf = tmp_path / "lf.csv"
    lf.write_bytes("".join(f"{line}\n" for line in lines).encode())
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    work = tmp_path / "work"
    work.mkdir()
    assert uniform_newlines([lf, crlf], "utf-8", work) == [lf, crlf]
    both = mixed(lines, tmp_path / "both.csv")
    assert uniform_newlines([both], "utf-16", work) == [both]  # CR is not one byte there
    # chunks of 7 bytes: many a \r\n is split across two reads, and found whole
    monkeypatch.setattr(encoding, "_CHUNK_BYTES", 7)
    (copy,) = uniform_newlines([both], "utf-8", work)
    assert copy.parent == work
    assert copy.read_bytes() == lf.read_bytes()
