"""Batch scoring streams its input a batch at a time and writes the output atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

import keel
from keel.data import reader
from keel.data.sources import read_source
from keel.errors import KeelError
from keel.project import Project
from keel.serve import batch


@pytest.fixture
def adult_test(adult_project: Path) -> pa.Table:
    with Project(adult_project) as project:
        table = read_source(project.config.data.test, project.root)
    return table.drop_columns(["income"])


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 1,000 rows, and every CSV streamed with its types from DuckDB's sample."""
    monkeypatch.setattr(batch, "BATCH_ROWS", 1000)
    monkeypatch.setattr(reader, "STREAM_CSV_BYTES", 0)


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_streamed_scores_equal_the_whole_table(
    adult_project: Path, adult_test: pa.Table, tmp_path: Path, kind: str
) -> None:
    source = tmp_path / f"in.{kind}"
    if kind == "parquet":
        pq.write_table(adult_test, source, row_group_size=2500)
    else:
        pv.write_csv(adult_test, source)
    out = tmp_path / "out.parquet"
    summary = keel.predict("adult@production", source, out, project=adult_project)
    assert summary["rows"] == adult_test.num_rows == 16281
    scored = pq.read_table(out)
    model = keel.load_model("adult@production", project=adult_project)
    expected = model.predict_proba(adult_test.to_pandas())
    np.testing.assert_allclose(scored.column("probability").to_numpy(), expected, atol=1e-12)
    assert scored.column_names[-3:] == ["prediction", "probability", "model_version"]
    assert set(scored.column("model_version").to_pylist()) == {"1"}
    inputs = scored.select(adult_test.column_names)
    assert inputs.to_pylist() == adult_test.to_pylist()  # in order, values unchanged


@pytest.mark.usefixtures("small_batches")
def test_a_bad_late_row_leaves_no_output(
    adult_project: Path, adult_test: pa.Table, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    pv.write_csv(adult_test, source)
    with source.open("a", encoding="utf-8") as handle:  # age is text far past the first block
        handle.write('thirty,"Private",1,"HS-grad",9,"Divorced","Sales","Unmarried",')
        handle.write('"White","Female",0,0,40,"United-States"\n')
    out = tmp_path / "out.parquet"
    result = keel.predict("adult@production", source, out, project=adult_project)
    # the late row is not scored: it goes to the rejects file with its line; the rest is
    assert result["rows"] == adult_test.num_rows and result["rejected"] == 1
    rejects = pv.read_csv(result["rejects"]).to_pylist()
    assert rejects == [
        {
            "line": adult_test.num_rows + 2,  # the header is line 1
            "field": "age",
            "value": "thirty",
            "reason": "age: 'thirty' is not an integer (int)",
        }
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv",
        "out.parquet",
        "out.rejects.csv",
    ]


def test_a_file_that_does_not_parse_leaves_no_output(adult_project: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("age,workclass\n", encoding="utf-8")
    with pytest.raises(KeelError, match="model input"):
        keel.predict("adult@production", source, tmp_path / "out.parquet", project=adult_project)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output, no temp file
