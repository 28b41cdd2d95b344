"""The one reader on real files: sniffed dialects, the same table as ingestion, malformed lines
with their line numbers, and expected columns that name the fix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.config import SourceConfig
from keel.data import read_source
from keel.data.columns import check_columns
from keel.data.dialect import BadLine, Dialect, ReadOptions
from keel.data.reader import CsvFile, open_file, read_file, show_file
from keel.data.snapshots import ingest, read_snapshot
from keel.data.sources import read_table
from keel.errors import ConfigError, DataValidationError
from tests.data.conftest import Stores

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
STUDENT = SHARED / "student-performance" / "student-mat.csv"  # ';'-separated, quoted
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"  # NA for missing
PENGUINS_RAW = SHARED / "palmer-penguins" / "penguins_raw.csv"  # quoted commas, a date
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")


def csv_of(path: Path) -> CsvFile:
    opened = open_file(path)
    assert isinstance(opened, CsvFile)
    return opened


def header_and_rows(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], lines[1:]


# --- dialects, sniffed ----------------------------------------------------------------------


def test_student_file_is_read_as_semicolon_separated_and_quoted() -> None:
    csv = csv_of(STUDENT)
    assert (csv.dialect.delimiter, csv.dialect.quote, csv.dialect.header) == (";", '"', True)
    assert csv.dialect.describe() == "csv, delimiter ';', quote '\"', header, utf-8 (detected)"
    table = csv.read()
    assert table.num_rows == 395 and table.num_columns == 33
    assert table.column("school").to_pylist()[:2] == ["GP", "GP"]  # quotes taken off
    assert table.schema.field("age").type == pa.int64()
    assert csv.bad_lines == ()


def test_penguins_raw_quoted_commas_stay_in_their_cell() -> None:
    table, bad = read_file(PENGUINS_RAW)
    assert bad == () and table.num_rows == 344 and table.num_columns == 17
    assert table.column("Stage").to_pylist()[0] == "Adult, 1 Egg Stage"
    assert pa.types.is_date(table.schema.field("Date Egg").type)


@pytest.mark.parametrize("path", [STUDENT, PENGUINS, PENGUINS_RAW], ids=lambda p: p.name)
def test_the_reader_gives_the_table_ingestion_gives(
    path: Path, tmp_path: Path, stores: Stores
) -> None:
    table, _ = read_file(path)
    assert table.equals(read_source(SourceConfig(path=str(path)), tmp_path))
    snapshot = ingest(SourceConfig(path=str(path)), tmp_path, stores)
    assert table.equals(read_snapshot(stores.artifacts, snapshot.snapshot))
    with_na = read_file(path, ReadOptions(na_values=("NA",)))[0]
    declared = SourceConfig(path=str(path), na_values=["NA"])
    assert with_na.equals(read_source(declared, tmp_path))


def test_headerless_copy_with_columns_reads_as_the_original(tmp_path: Path) -> None:
    header, rows = header_and_rows(PENGUINS)
    copy = tmp_path / "no-header.csv"
    copy.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sniffed = csv_of(copy)
    assert sniffed.dialect.header is False
    assert sniffed.schema.names == [f"column{i}" for i in range(8)]
    names = tuple(header.split(","))
    named = open_file(copy, ReadOptions(header=False, columns=names))
    assert isinstance(named, CsvFile) and named.dialect.given == ("header",)
    assert named.read().equals(read_file(PENGUINS)[0])


def test_given_options_win_and_are_reported_as_given(tmp_path: Path) -> None:
    path = tmp_path / "pipes.txt"
    path.write_text("a|b\n1|x\n2|y\n", encoding="utf-8")
    csv = open_file(path, ReadOptions(delimiter="|", quote="'", encoding="latin-1"))
    assert isinstance(csv, CsvFile)
    assert csv.read().to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    body = csv.dialect.to_dict()
    assert body["given"] == ["delimiter", "quote", "encoding"] and body["detected"] == ["header"]
    assert Dialect.from_dict(body) == csv.dialect
    assert csv.dialect.describe().endswith("(detected: header)")


def test_a_cp1252_file_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "cafe.csv"
    path.write_bytes("name;city\nJosé;Besançon\nRenée;Zürich\n".encode("cp1252"))
    table, _ = read_file(path)
    assert table.column("city").to_pylist() == ["Besançon", "Zürich"]


# --- malformed lines --------------------------------------------------------------------------


def test_extra_and_missing_fields_are_bad_lines_with_their_numbers(tmp_path: Path) -> None:
    header, rows = header_and_rows(PENGUINS)
    rows[3] += ",extra"  # file line 5
    rows[7] += ",1,2"  # file line 9
    rows[20] = rows[20].rsplit(",", 2)[0]  # file line 22: two fields short
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    csv = csv_of(path)
    assert [(b.line, b.kind, b.reason) for b in csv.bad_lines] == [
        (5, "too_many_fields", "expected 8 fields, found 9"),
        (9, "too_many_fields", "expected 8 fields, found 10"),
        (22, "too_few_fields", "expected 8 fields, found 6"),
    ]
    assert csv.bad_lines[0].raw == rows[3] and str(csv.bad_lines[0]).endswith(
        ":5: " + csv.bad_lines[0].reason
    )
    table = csv.read()
    assert table.num_rows == 344 - 3
    # every good row knows its line: rows 3 and 4 sit on lines 5 and 7 (line 5 was bad)
    assert csv.line_numbers(0, 8).tolist() == [2, 3, 4, 6, 7, 8, 10, 11]
    with pytest.raises(DataValidationError, match=r"bad\.csv: 3 malformed line\(s\) \(line 5: "):
        read_table(path)


def test_a_broken_quote_is_one_bad_line_not_the_whole_file(tmp_path: Path) -> None:
    """One value quoted only in part used to make DuckDB drop quoting: 344 bad lines, no rows."""
    header, rows = header_and_rows(PENGUINS_RAW)
    rows[4] = rows[4].replace('"Adult, 1 Egg Stage"', '"Adult, 1 Egg" Stage')  # line 6
    path = tmp_path / "raw.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    csv = csv_of(path)
    assert csv.dialect.quote == '"'
    assert [(b.line, b.kind) for b in csv.bad_lines] == [(6, "broken_quoting")]
    assert "text after a closing" in csv.bad_lines[0].reason
    table = csv.read()
    assert table.num_rows == 343 and set(table.column("Stage").to_pylist()) >= {
        "Adult, 1 Egg Stage"
    }
    assert csv.line_numbers(3, 2).tolist() == [5, 7]


def test_broken_quoting_with_the_dialect_given(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text('a,b,c\n1,"x",3\n2,"y"z,4\n3,"w",5\n4,"open,6\n5,v,7\n', encoding="utf-8")
    csv = open_file(path, ReadOptions(quote='"', delimiter=","))
    assert isinstance(csv, CsvFile)
    assert [(b.line, b.kind) for b in csv.bad_lines] == [
        (3, "broken_quoting"),
        (5, "broken_quoting"),
    ]
    assert "never closed" in csv.bad_lines[1].reason and csv.bad_lines[1].raw == '4,"open,6'
    assert csv.read().column("b").to_pylist() == ["x", "w", "v"]


def test_bad_line_round_trips_as_a_record() -> None:
    line = BadLine("f.csv", 7, "expected 3 fields, found 4", "1,2,3,4", "too_many_fields")
    assert BadLine(**line.to_dict()) == line


# --- options and files refused ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delimiter": ";;"}, "delimiter must be one character"),
        ({"quote": ""}, "quote must be one character"),
        ({"columns": ("a", "a")}, "'a' appears twice"),
        ({"columns": ("a", " ")}, "name 2 is empty"),
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
    ],
)
def test_malformed_options_are_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReadOptions(**options)  # type: ignore[arg-type]


def test_wrong_number_of_column_names(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("1,2,3\n4,5,6\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"2 column names were given .* has 3 fields"):
        open_file(path, ReadOptions(columns=("x", "y")))


def test_empty_missing_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"empty\.csv: the file is empty"):
        open_file(tmp_path / "empty.csv")
    with pytest.raises(ConfigError, match="no such file"):
        open_file(tmp_path / "gone.csv")
    (tmp_path / "book.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(ConfigError, match=r"unsupported file type '\.xlsx'"):
        open_file(tmp_path / "book.xlsx")


def test_parquet_is_left_to_stream_and_shown(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    assert open_file(path) == path
    shown = show_file(path)
    assert shown["rows"] == 3 and shown["dialect"]["format"] == "parquet"
    assert shown["bad_lines"] == []


# --- expected columns -----------------------------------------------------------------------

STUDENT_COLUMNS = ["school", "sex", "age", "address", "famsize", "Pstatus", "Medu", "Fedu"]


def test_wrong_delimiter_names_the_right_one() -> None:
    wrong = open_file(STUDENT, ReadOptions(delimiter=","))
    with pytest.raises(DataValidationError) as info:
        check_columns(wrong, STUDENT_COLUMNS, of="model input")
    message = info.value.message
    assert "none of the 8 model input columns was found" in message
    assert "Found 1: 'school;sex;age;" in message
    assert "looks ';'-separated (it was read with ','): pass --delimiter ';'" in message
    assert info.value.details["missing"] == STUDENT_COLUMNS


def test_no_header_names_the_columns_to_pass(tmp_path: Path) -> None:
    header, rows = header_and_rows(PENGUINS)
    copy = tmp_path / "no-header.csv"
    copy.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=f"pass --columns {header} "):
        check_columns(open_file(copy), header.split(","), of="model input")
    read_as_data = open_file(PENGUINS, ReadOptions(header=False))
    with pytest.raises(DataValidationError, match="holds the column names: pass --header"):
        check_columns(read_as_data, header.split(","))


def test_a_header_of_other_names_is_replaced_by_columns_not_read_as_data(tmp_path: Path) -> None:
    """penguins_raw's header names other columns: the hint was 'No header line? Pass
    --no-header --columns ...', though its first line is plainly a header; --columns alone
    replaces a header's names (as keel init and keel predict read them)."""
    header, rows = header_and_rows(PENGUINS)
    renamed = tmp_path / "renamed.csv"
    other = ",".join(f"col {i}" for i in range(len(header.split(","))))
    renamed.write_text("\n".join([other, *rows]) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        check_columns(open_file(renamed), header.split(","), of="model input")
    message = info.value.message
    assert "Its header names other columns ('col 0', 'col 1', 'col 2', ...)" in message
    assert f"pass --columns {header} " in message and "which replace the header's names" in message
    assert message.endswith("if its first line is data, not a header, add --no-header.")


def test_some_columns_missing(tmp_path: Path) -> None:
    csv = open_file(PENGUINS)
    with pytest.raises(DataValidationError, match=r"1 of the 3 expected columns are missing: Sex"):
        check_columns(csv, ["species", "island", "Sex"])
    with pytest.raises(DataValidationError, match="The file has 'sex' for 'Sex'"):
        check_columns(csv, ["species", "Sex"])
    check_columns(csv, ["species", "Sex"], some_missing_ok=True)  # validate's findings say it
    check_columns(csv, ["species", "island"])


def test_none_of_a_parquet_files_columns() -> None:
    table = pa.table({"x": [1]})
    with pytest.raises(DataValidationError, match="Rename the file's columns"):
        check_columns(table, ["age"], where="batch")


def test_ingestion_records_the_dialect_it_read_with(tmp_path: Path, stores: Stores) -> None:
    """A few malformed lines once made the recorded dialect differ from the one the scan used
    (`keel data show` printed '|' for a comma-separated file)."""
    path = tmp_path / "few-bad.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6,7\n8,9\n10,11,12\n", encoding="utf-8")
    result = ingest(SourceConfig(path=str(path), max_bad_rows=2), tmp_path, stores)
    assert result.bad_rows == 2 and result.snapshot.metadata["dialect"]["delimiter"] == ","
    assert csv_of(path).dialect.delimiter == ","
