"""Reading and cleaning declared sources: the real Adult files, plus small hand-made ones."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from keel.config import SourceConfig
from keel.data import read_source, read_table
from keel.data.sources import clean_table
from keel.errors import ConfigError, DataValidationError

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]


def test_adult_test_shape_and_types(adult_test_table: pa.Table) -> None:
    assert adult_test_table.num_rows == 16281  # the '|1x3 Cross validator' line is skipped
    assert adult_test_table.column_names == ADULT_COLUMNS
    assert adult_test_table.schema.field("age").type == pa.int64()
    assert adult_test_table.schema.field("workclass").type == pa.string()


def test_adult_test_labels_lose_their_trailing_dot(adult_test_table: pa.Table) -> None:
    counts = pc.value_counts(adult_test_table.column("income")).to_pylist()
    assert {c["values"]: c["counts"] for c in counts} == {"<=50K": 12435, ">50K": 3846}


def test_question_marks_become_nulls(adult_test_table: pa.Table) -> None:
    assert adult_test_table.column("workclass").null_count == 963
    for name in ("workclass", "occupation", "native-country"):
        assert "?" not in set(adult_test_table.column(name).to_pylist())
    assert adult_test_table.column("age").null_count == 0


def test_string_cells_are_trimmed(adult_test_table: pa.Table) -> None:
    for name in ("workclass", "education", "sex", "income"):
        column = adult_test_table.column(name).drop_null()
        trimmed = pc.utf8_trim_whitespace(column)
        assert pc.all(pc.equal(column, trimmed)).as_py(), name
    assert adult_test_table.slice(0, 1).to_pylist()[0] == {
        "age": 25,
        "workclass": "Private",
        "fnlwgt": 226802,
        "education": "11th",
        "education-num": 7,
        "marital-status": "Never-married",
        "occupation": "Machine-op-inspct",
        "relationship": "Own-child",
        "race": "Black",
        "sex": "Male",
        "capital-gain": 0,
        "capital-loss": 0,
        "hours-per-week": 40,
        "native-country": "United-States",
        "income": "<=50K",
    }


def test_adult_train(adult_train_table: pa.Table) -> None:
    assert adult_train_table.num_rows == 32561
    assert adult_train_table.column("workclass").null_count == 1836
    assert set(adult_train_table.column("income").to_pylist()) == {"<=50K", ">50K"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_column_count_mismatch_without_header(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "1, x\n2, y\n")
    source = SourceConfig(path="a.csv", header=False, columns=["n", "s", "extra"])
    with pytest.raises(
        DataValidationError, match=r"a\.csv: keel.yaml lists 3 columns but the file has 2"
    ):
        read_source(source, tmp_path)


def test_column_count_mismatch_with_header(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "n,s\n1,x\n")
    source = SourceConfig(path="a.csv", columns=["n", "s", "extra"])
    with pytest.raises(DataValidationError, match="lists 3 columns but the file has 2"):
        read_source(source, tmp_path)


def test_header_columns_are_renamed(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "N,S\n1,x\n")
    table = read_source(SourceConfig(path="a.csv", columns=["n", "s"]), tmp_path)
    assert table.to_pylist() == [{"n": 1, "s": "x"}]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.csv: data file not found"):
        read_source(SourceConfig(path="nope.csv"), tmp_path)


def test_absolute_path_ignores_root(tmp_path: Path) -> None:
    file = write(tmp_path / "a.csv", "n\n1\n")
    table = read_source(SourceConfig(path=str(file)), Path("/nonexistent"))
    assert table.to_pylist() == [{"n": 1}]


def test_na_tokens_empty_cells_and_replacements(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "1, a \n2, b\n3, ?\n4,\n5, c\n")
    source = SourceConfig(
        path="a.csv",
        header=False,
        columns=["n", "s"],
        na_values=["?"],
        replace={"s": {"a": "b", "b": "c"}},
    )
    table = read_source(source, tmp_path)
    # replacements apply to the original cells: a->b and b->c, never a->b->c
    assert table.column("s").to_pylist() == ["b", "c", None, None, "c"]


def test_replacement_text_is_literal() -> None:
    table = pa.table({"s": ["a.b", "axb", r"\1"]})
    cleaned = clean_table(table, na_values=[], replace={"s": {"a.b": r"\0", r"\1": "$"}})
    assert cleaned.column("s").to_pylist() == [r"\0", "axb", "$"]


def test_replace_unknown_column_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="replace: column 'q' is not in the data"):
        clean_table(pa.table({"s": ["a"]}), na_values=[], replace={"q": {"a": "b"}})


def test_numeric_na_tokens(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "1, 2.5\n?, ?\n3, 4\n")
    source = SourceConfig(path="a.csv", header=False, columns=["i", "f"], na_values=["?"])
    table = read_source(source, tmp_path)
    assert table.schema.field("i").type == pa.int64()
    assert table.column("i").to_pylist() == [1, None, 3]
    assert table.column("f").to_pylist() == [2.5, None, 4.0]


def test_delimiter_and_skip_rows(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "junk line\nn;s\n1; x\n")
    table = read_source(SourceConfig(path="a.csv", delimiter=";", skip_rows=1), tmp_path)
    assert table.to_pylist() == [{"n": 1, "s": "x"}]


def test_parquet_source(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2], "b": [" x", None]}), tmp_path / "t.parquet")
    source = SourceConfig(path="t.parquet", format="parquet", columns=["n", "s"])
    table = read_source(source, tmp_path)
    assert table.to_pylist() == [{"n": 1, "s": "x"}, {"n": 2, "s": None}]
    bad = SourceConfig(path="t.parquet", format="parquet", columns=["n"])
    with pytest.raises(DataValidationError, match="lists 1 columns but the file has 2"):
        read_source(bad, tmp_path)


def test_read_table_csv_and_parquet(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "n,s\n1, x \n2,\n")
    assert read_table(tmp_path / "a.csv").to_pylist() == [{"n": 1, "s": "x"}, {"n": 2, "s": None}]
    original = pa.table({"n": [1, 2], "s": ["x", None]})
    pq.write_table(original, tmp_path / "a.parquet")
    assert read_table(tmp_path / "a.parquet").equals(original)
    pq.write_table(original, tmp_path / "b.PQ")
    assert read_table(str(tmp_path / "b.PQ")).equals(original)


def test_read_table_rejects_other_extensions(tmp_path: Path) -> None:
    write(tmp_path / "a.json", "[]")
    with pytest.raises(ConfigError, match=r"unsupported file type '\.json'"):
        read_table(tmp_path / "a.json")


def test_read_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_table(tmp_path / "gone.csv")
