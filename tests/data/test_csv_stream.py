"""Large CSV files are streamed: same values as a whole read, types widened like a whole read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from keel.data import reader
from keel.data.reader import CsvFile, CsvTypeChanged, open_file
from keel.data.sources import read_table
from keel.validate.anomalies import validate_data
from keel.validate.schema import ColumnSchema, Schema

REPO = Path(__file__).resolve().parents[2]
BIKE = REPO / "tests" / "fixtures" / "bike-sharing" / "hour.csv"  # CC BY 4.0, see SOURCE.md


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CSV is 'large': read in batches on every pass, types from DuckDB's sample."""
    monkeypatch.setattr(reader, "STREAM_CSV_BYTES", 0)


def late_types_csv(tmp_path: Path) -> Path:
    """Past the sniffer's 20,480-row sample: a float in an int column, text in another."""
    lines = ["id,amount,code,label"]
    lines += [f"{i},{i % 7}, c{i % 3} ,yes" for i in range(25_000)]
    lines += ["25000,2.5x,c1,no", "25001,4,??,  ", "25002,5,17x,no"]
    path = tmp_path / "late.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.usefixtures("streamed")
def test_late_cells_widen_types_as_a_whole_read_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = late_types_csv(tmp_path)
    csv = open_file(path)
    assert isinstance(csv, CsvFile) and csv.streamed
    assert csv.schema.field("amount").type == pa.int64()
    with pytest.raises(CsvTypeChanged, match=r"late\.csv: column\(s\) \['amount'\]"):
        list(csv.tables(batch_rows=1000))
    assert csv.retype(CsvTypeChanged("x"))
    monkeypatch.setattr(reader, "STREAM_CSV_BYTES", 1 << 40)
    whole = read_table(path)
    assert csv.schema == whole.schema and whole.schema.field("amount").type == pa.string()
    streamed = pa.concat_tables(csv.tables(batch_rows=1000))
    assert streamed.equals(whole)  # cleaned alike: trimmed, blank cells null
    assert streamed.column("label").null_count == 1
    part = pa.concat_tables(csv.tables(["code"], batch_rows=700))
    assert part.column_names == ["code"] and part.num_rows == 25_003
    assert not csv.retype(CsvTypeChanged("x"))  # settled: nothing left to widen


@pytest.mark.usefixtures("streamed")
def test_validate_streams_a_large_csv_with_the_same_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = late_types_csv(tmp_path)
    widened: list[bool] = []
    retype = CsvFile.retype

    def counted(self: CsvFile, exc: BaseException) -> bool:
        widened.append(retype(self, exc))
        return widened[-1]

    monkeypatch.setattr(CsvFile, "retype", counted)
    schema = Schema(
        columns={
            "id": ColumnSchema(type="int", min=0, max=24_999),
            "amount": ColumnSchema(type="string"),
            "code": ColumnSchema(type="string", categories=["c0", "c1", "c2"]),
            "label": ColumnSchema(type="string", nullable=False, max_null_fraction=0.0),
        }
    )
    streamed = validate_data(path, schema=schema, name="late.csv")
    assert widened == [True]  # read once with the sample's types, then again
    monkeypatch.setattr(reader, "STREAM_CSV_BYTES", 1 << 40)
    whole = validate_data(read_table(path), schema=schema, name="late.csv")
    assert streamed.to_dict() == whole.to_dict()
    kinds = {(a.column, a.kind) for a in streamed.anomalies}
    assert {("id", "out_of_range"), ("code", "unseen_category")} <= kinds
    assert ("label", "null_fraction") in kinds


@pytest.mark.usefixtures("streamed")
def test_bike_sharing_streamed_matches_the_whole_read(monkeypatch: pytest.MonkeyPatch) -> None:
    streamed_file = open_file(BIKE)
    assert isinstance(streamed_file, CsvFile) and streamed_file.streamed
    reference = read_table(BIKE).slice(0, 8000)
    streamed = validate_data(BIKE, reference=reference, name="hour.csv")
    monkeypatch.setattr(reader, "STREAM_CSV_BYTES", 1 << 40)
    whole = validate_data(read_table(BIKE), reference=reference, name="hour.csv")
    assert streamed.rows == 17379
    assert streamed.to_dict() == whole.to_dict()
    assert any(a.kind == "distribution_shift" for a in streamed.anomalies)


@pytest.mark.usefixtures("streamed")
def test_a_broken_line_in_a_streamed_csv_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("a,b\n" + "1,2\n" * 3000 + "1,2,3\n" + "4,5\n", encoding="utf-8")
    csv = open_file(path)
    assert isinstance(csv, CsvFile) and csv.bad_lines == ()  # not read through yet
    table = pa.concat_tables(csv.tables(batch_rows=1000))
    assert table.num_rows == 3001
    assert [(b.line, b.kind, b.raw) for b in csv.bad_lines] == [(3002, "too_many_fields", "1,2,3")]
    assert csv.line_numbers(2999, 2).tolist() == [3001, 3003]
    report = validate_data(path, name="broken.csv")
    assert report.rows == 3001 and [a.kind for a in report.errors] == ["malformed_row"]
