"""`keel predict -o FILE` writes the format FILE's suffix names (or --output-format says): CSV,
JSON Lines and a JSON array hold the same rows as the Parquet output; an unknown suffix is a
usage error (exit 2, no traceback) naming it and the accepted ones, before the model is loaded;
`keel explain` follows the same rules. The Python API writes what the CLI writes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import keel
from keel.cli import app as cli_app
from keel.errors import ConfigError

ROWS = 300  # scored rows: enough for every column kind, quick to compare


@pytest.fixture(scope="module")
def adult(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained Adult project (a small model: the output format is what is tested)."""
    root = tmp_path_factory.mktemp("predict-out") / "adult"
    keel.init(root, example="adult")
    config = root / "keel.yaml"
    text = re.sub(r"n_estimators: \d+", "n_estimators: 20", config.read_text())
    config.write_text(text.replace("roc_auc >= 0.9", "roc_auc >= 0.5"))
    keel.run(root)
    return root


@pytest.fixture(scope="module")
def rows(adult: Path) -> Path:
    """Test rows with a missing value and a value that does not convert (one reject)."""
    source = adult / "data" / "adult.test"
    lines = source.read_text().splitlines()[1 : ROWS + 1]
    header = (
        "age,workclass,fnlwgt,education,education-num,marital-status,occupation,"
        "relationship,race,sex,capital-gain,capital-loss,hours-per-week,native-country"
    )
    body = [",".join(part.strip() for part in line.split(",")[:14]) for line in lines]
    body[3] = body[3].replace(body[3].split(",")[0], "not-a-number", 1)  # age: rejected
    path = adult / "rows.csv"
    path.write_text("\n".join([header, *body]) + "\n")
    return path


def _predict(adult: Path, rows: Path, output: Path, *more: str) -> str:
    args = ["predict", "adult@1", "-i", str(rows), "-o", str(output), "-p", str(adult), *more]
    done = CliRunner().invoke(cli_app, args)
    assert done.exit_code == 0, done.output
    return done.output


def test_csv_and_json_outputs_hold_the_rows_of_the_parquet_output(adult: Path, rows: Path) -> None:
    _predict(adult, rows, adult / "scored.parquet")
    said = _predict(adult, rows, adult / "scored.csv")
    _predict(adult, rows, adult / "scored.jsonl")
    _predict(adult, rows, adult / "scored.json")
    assert "scored.csv (csv)" in said
    parquet = pq.read_table(adult / "scored.parquet")
    assert parquet.num_rows == ROWS - 1  # the row whose age does not convert is a reject
    assert {"prediction", "probability", "model_version"} <= set(parquet.column_names)
    missing = pv.ConvertOptions(strings_can_be_null=True)  # a missing value: an empty field
    csv = pv.read_csv(adult / "scored.csv", convert_options=missing)
    assert not (adult / "scored.csv").read_bytes().startswith(b"PAR1")
    assert csv.column_names == parquet.column_names
    for name in parquet.column_names:
        expected = parquet.column(name).to_pylist()
        read = csv.column(name).cast(parquet.schema.field(name).type).to_pylist()
        assert read == expected, name
    lines = [orjson.loads(x) for x in (adult / "scored.jsonl").read_bytes().splitlines()]
    array = orjson.loads((adult / "scored.json").read_bytes())
    assert lines == array == parquet.to_pylist()
    rejects = pv.read_csv(adult / "scored.rejects.csv")
    assert rejects.column("field").to_pylist() == ["age"]
    assert not [p.name for p in adult.iterdir() if p.name.startswith(".scored")]  # no leftovers


def test_output_format_overrides_a_missing_suffix_and_must_agree_with_one(
    adult: Path, rows: Path
) -> None:
    _predict(adult, rows, adult / "scored-out", "--output-format", "csv")
    assert pv.read_csv(adult / "scored-out").num_rows == ROWS - 1
    args = ["predict", "adult@1", "-i", str(rows), "-o", str(adult / "x.parquet"),
            "-p", str(adult), "--output-format", "csv"]  # fmt: skip
    done = CliRunner().invoke(cli_app, args)
    assert isinstance(done.exception, ConfigError)
    assert "does not match --output" in done.exception.message


def test_an_unknown_suffix_is_a_usage_error_naming_it(adult: Path, rows: Path) -> None:
    target = adult / "scored.xlsx"
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "predict", "adult@1", "-i", str(rows), "-o",
         str(target), "-p", str(adult)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "'.xlsx'" in message and ".csv" in message and ".parquet" in message
    assert "--output-format" in message and "Traceback" not in done.stderr
    assert not target.exists()


def test_the_python_api_writes_the_suffix_format(adult: Path, rows: Path) -> None:
    result = keel.predict("adult@1", rows, adult / "api.csv", project=adult)
    assert result["format"] == "csv" and result["rows"] == ROWS - 1
    assert pv.read_csv(adult / "api.csv").num_rows == ROWS - 1
    with pytest.raises(ConfigError, match=r"'\.txt'"):
        keel.predict("adult@1", rows, adult / "api.txt", project=adult)


def test_explain_takes_the_same_table_formats(adult: Path, rows: Path) -> None:
    table = pv.read_csv(rows).slice(0, 3)
    head = adult / "head.parquet"
    pq.write_table(table, head)
    base = ["explain", "adult@1", "-i", str(head), "-p", str(adult)]
    done = CliRunner().invoke(cli_app, [*base, "-o", str(adult / "why.csv")])
    assert done.exit_code == 0, done.output
    explained = pv.read_csv(adult / "why.csv")
    assert explained.num_rows == 3 and "contribution.age" in explained.column_names
    done = CliRunner().invoke(cli_app, [*base, "-o", str(adult / "why.txt")])
    assert isinstance(done.exception, ConfigError)
    assert "'.txt'" in done.exception.message
