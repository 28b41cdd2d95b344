"""Every source format, globs, dialect and encoding detection, comments and NA tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.config import SourceConfig
from keel.data import read_source
from keel.data.encoding import detect_encoding
from keel.errors import ConfigError, DataValidationError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_latin1_semicolon_quoted_file_is_detected(tmp_path: Path) -> None:
    text = 'id;"name";city\n1;"Zoë; Brontë";Málaga\n2;"Renée";Köln\n3;"A ""B""";?\n'
    write(tmp_path / "l1.csv", text, encoding="latin-1")
    assert detect_encoding(tmp_path / "l1.csv") != "utf-8"
    table = read_source(SourceConfig(path="l1.csv", na_values=["?"]), tmp_path)
    assert table.column_names == ["id", "name", "city"]
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("name").to_pylist() == ["Zoë; Brontë", "Renée", 'A "B"']
    assert table.column("city").to_pylist() == ["Málaga", "Köln", None]


def test_cp1252_file_is_transcoded(tmp_path: Path) -> None:
    # 0x80 (euro) and 0x93/0x94 (curly quotes) exist in cp1252 but not in latin-1
    rows = "".join(f"{i},“{i}€”,Straße\n" for i in range(50))
    write(tmp_path / "w.csv", "n,price,street\n" + rows, encoding="cp1252")
    source = SourceConfig(path="w.csv", encoding="cp1252")
    table = read_source(source, tmp_path)
    assert table.column("price").to_pylist()[:2] == ["“0€”", "“1€”"]
    assert set(table.column("street").to_pylist()) == {"Straße"}


def test_utf8_is_detected_and_unknown_encoding_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path / "u.csv", "a,b\n1,ünïcödé\n")
    assert detect_encoding(tmp_path / "u.csv") == "utf-8"
    assert read_source(SourceConfig(path="u.csv"), tmp_path).column("b").to_pylist() == ["ünïcödé"]
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        read_source(SourceConfig(path="u.csv", encoding="klingon"), tmp_path)


def test_header_and_tab_delimiter_are_detected(tmp_path: Path) -> None:
    write(tmp_path / "t.tsv", "x\ty\n1\tone\n2\ttwo\n")
    table = read_source(SourceConfig(path="t.tsv"), tmp_path)
    assert table.to_pylist() == [{"x": 1, "y": "one"}, {"x": 2, "y": "two"}]
    write(tmp_path / "n.csv", "1,one\n2,two\n")
    headless = read_source(SourceConfig(path="n.csv", header=False, columns=["x", "y"]), tmp_path)
    assert headless.to_pylist() == [{"x": 1, "y": "one"}, {"x": 2, "y": "two"}]


def test_explicit_dialect_options(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", "# exported\na|b\n'1|2'|x\n# note\n3|y\n")
    source = SourceConfig(path="d.csv", delimiter="|", quote="'", comment="#", header=True)
    table = read_source(source, tmp_path)
    assert table.to_pylist() == [{"a": "1|2", "b": "x"}, {"a": "3", "b": "y"}]


def test_comment_lines_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "c.csv", "# a comment\na,b\n1,2\n# another one\n3,4\n")
    table = read_source(SourceConfig(path="c.csv", comment="#"), tmp_path)
    assert table.to_pylist() == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]


def test_custom_na_tokens_in_text_and_numbers(tmp_path: Path) -> None:
    write(tmp_path / "na.csv", "n,s\n1,a\nNA,n/a\n-999,b\n4, NA\n")
    source = SourceConfig(path="na.csv", na_values=["NA", "n/a", "-999"])
    table = read_source(source, tmp_path)
    assert table.schema.field("n").type == pa.int64()
    assert table.column("n").to_pylist() == [1, None, None, 4]
    assert table.column("s").to_pylist() == ["a", None, "b", None]


def test_declared_types_override_detection(tmp_path: Path) -> None:
    write(tmp_path / "t.csv", "zip,v\n01234,1\n98765,2\n")
    table = read_source(SourceConfig(path="t.csv", types={"zip": "VARCHAR"}), tmp_path)
    assert table.column("zip").to_pylist() == ["01234", "98765"]
    with pytest.raises(ConfigError, match=r"types: column\(s\) \['nope'\] are not in"):
        read_source(SourceConfig(path="t.csv", types={"nope": "VARCHAR"}), tmp_path)


def test_glob_reads_every_matching_file_in_order(tmp_path: Path) -> None:
    for day in (3, 1, 2):
        write(tmp_path / "in" / f"day{day}.csv", f"day,v\n{day},{day * 10}\n")
    write(tmp_path / "in" / "notes.txt", "not data")
    table = read_source(SourceConfig(path="in/day*.csv"), tmp_path)
    assert table.to_pylist() == [{"day": 1, "v": 10}, {"day": 2, "v": 20}, {"day": 3, "v": 30}]
    with pytest.raises(ConfigError, match=r"no file matches the data source glob 'in/x\*\.csv'"):
        read_source(SourceConfig(path="in/x*.csv"), tmp_path)


def test_parquet_glob(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"a": [1], "s": [" x "]}), tmp_path / "p" / "0.parquet")
    pq.write_table(pa.table({"a": [2], "s": ["?"]}), tmp_path / "p" / "1.parquet")
    source = SourceConfig(path="p/*.parquet", format="parquet", na_values=["?"])
    assert read_source(source, tmp_path).to_pylist() == [{"a": 1, "s": "x"}, {"a": 2, "s": None}]


def test_jsonl_source(tmp_path: Path) -> None:
    lines = [{"id": 1, "city": " Oslo ", "t": 1.5}, {"id": 2, "city": "?", "t": None}]
    write(tmp_path / "e.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    source = SourceConfig(path="e.jsonl", format="jsonl", na_values=["?"])
    table = read_source(source, tmp_path)
    assert table.to_pylist() == [
        {"id": 1, "city": "Oslo", "t": 1.5},
        {"id": 2, "city": None, "t": None},
    ]


def test_malformed_jsonl_fails_by_default_naming_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "bad.jsonl", '{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(DataValidationError, match=r"bad\.jsonl:2: INVALID JSON"):
        read_source(SourceConfig(path="bad.jsonl", format="jsonl"), tmp_path)


def test_duckdb_query_source_reads_relative_files(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "k,v\n1,x\n2,y\n3,z\n")
    query = "SELECT k, upper(v) AS v FROM read_csv('a.csv') WHERE k > 1 ORDER BY k"
    table = read_source(SourceConfig(format="duckdb", query=query), tmp_path)
    assert table.to_pylist() == [{"k": 2, "v": "Y"}, {"k": 3, "v": "Z"}]


def test_source_config_needs_its_location() -> None:
    with pytest.raises(ValueError, match="a sql source needs 'url' and 'query'"):
        SourceConfig(format="sql", query="SELECT 1")
    with pytest.raises(ValueError, match="a csv source needs 'path'"):
        SourceConfig()
    with pytest.raises(ValueError, match="fraction must be in"):
        SourceConfig(path="a.csv", max_bad_rows=1.5)
