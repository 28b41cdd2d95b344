"""`keel init --from` reads a CSV whose lines end in both CRLF and LF (the Palmer penguins as a
user's script writes them: csv.writer, then rows appended by echo). It answered "cannot read it
as CSV (Invalid Input Error: Error when sniffing file ...). Is it a CSV or Parquet file?"."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keel.commands.init import init_from_file

PENGUINS = Path(__file__).resolve().parents[3] / "shared" / "data" / "palmer-penguins"
pytestmark = pytest.mark.skipif(not PENGUINS.exists(), reason="the shared datasets are not here")


def test_init_from_a_file_with_mixed_line_endings(tmp_path: Path) -> None:
    lines = (PENGUINS / "penguins.csv").read_text(encoding="utf-8").splitlines()
    mixed = tmp_path / "penguins.csv"
    crlf, lf = lines[:300], lines[300:]
    mixed.write_bytes(
        "".join(f"{x}\r\n" for x in crlf).encode() + "".join(f"{x}\n" for x in lf).encode()
    )
    made = init_from_file(tmp_path / "project", mixed, "species")
    assert made.task == "multiclass"
    config = yaml.safe_load((made.directory / "keel.yaml").read_text())
    train = config["data"]["train"]
    assert (train["delimiter"], train["header"], train["na_values"]) == (",", True, ["NA"])
    assert (made.directory / train["path"]).read_bytes() == mixed.read_bytes()  # copied as is
