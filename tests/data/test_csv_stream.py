"""Large CSV files are streamed: same values as a whole read, types widened like a whole read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from keel.data import sources
from keel.data.sources import CsvFile, CsvTypeChanged, open_table, read_table
from keel.errors import DataValidationError
from keel.validate.anomalies import validate_data
from keel.validate.schema import ColumnSchema, Schema

REPO = Path(__file__).resolve().parents[2]
BIKE = REPO / "tests" / "fixtures" / "bike-sharing" / "hour.csv"  # CC BY 4.0, see SOURCE.md


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CSV is 'large' and types come from its first 4 KiB, so late cells matter."""
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 4096)
    monkeypatch.setattr(sources, "STREAM_CSV_BYTES", 0)


def late_types_csv(tmp_path: Path) -> Path:
    lines = ["id,amount,code,label"]
    lines += [f"{i},{i % 7}, c{i % 3} ,yes" for i in range(3000)]
    lines += ["3000,2.5,c1,no", "3001,4,??,  ", "3002,5,17x,no"]
    path = tmp_path / "late.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.usefixtures("small_blocks")
def test_late_cells_widen_types_as_a_whole_read_does(tmp_path: Path) -> None:
    path = late_types_csv(tmp_path)
    csv = open_table(path)
    assert isinstance(csv, CsvFile) and csv.schema.field("amount").type == pa.int64()
    with pytest.raises(CsvTypeChanged, match=r"late\.csv: .*conversion error to int64"):
        list(csv.tables(batch_rows=1000))
    assert csv.retype(CsvTypeChanged("x"))
    whole = read_table(path)
    assert csv.schema == whole.schema  # amount: double, as the whole read promotes it
    streamed = pa.concat_tables(csv.tables(batch_rows=1000))
    assert streamed.equals(whole)  # cleaned alike: trimmed, empty cells null
    assert streamed.column("label").null_count == 1
    part = pa.concat_tables(csv.tables(["code"], batch_rows=700))
    assert part.column_names == ["code"] and part.num_rows == 3003
    assert not csv.retype(CsvTypeChanged("x"))  # settled: nothing left to widen


@pytest.mark.usefixtures("small_blocks")
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
            "id": ColumnSchema(type="int", min=0, max=2999),
            "amount": ColumnSchema(type="int"),
            "code": ColumnSchema(type="string", categories=["c0", "c1", "c2"]),
            "label": ColumnSchema(type="string", nullable=False, max_null_fraction=0.0),
        }
    )
    streamed = validate_data(path, schema=schema, name="late.csv")
    assert widened == [True]  # read once with the first block's types, then again
    whole = validate_data(read_table(path), schema=schema, name="late.csv")
    assert streamed.to_dict() == whole.to_dict()
    kinds = {(a.column, a.kind) for a in streamed.anomalies}
    assert {("id", "out_of_range"), ("code", "unseen_category")} <= kinds
    assert ("label", "null_fraction") in kinds


@pytest.mark.usefixtures("small_blocks")
def test_bike_sharing_streamed_matches_the_whole_read() -> None:
    reference = read_table(BIKE).slice(0, 8000)
    streamed = validate_data(BIKE, reference=reference, name="hour.csv")
    whole = validate_data(read_table(BIKE), reference=reference, name="hour.csv")
    assert streamed.rows == 17379
    assert streamed.to_dict() == whole.to_dict()
    assert any(a.kind == "distribution_shift" for a in streamed.anomalies)


@pytest.mark.usefixtures("small_blocks")
def test_a_broken_line_in_a_streamed_csv_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("a,b\n" + "1,2\n" * 3000 + "1,2,3\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"broken.csv: cannot parse as CSV"):
        validate_data(path)
