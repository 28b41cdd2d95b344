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


def test_the_summary_names_the_class_the_probability_is_of(adult: Path, rows: Path) -> None:
    """`probability` is P(income = >50K): the summary line, the JSON answer and the Python
    API say which class it is of (the column keeps its name)."""
    said = _predict(adult, rows, adult / "named.csv")
    assert "probability = P(income = >50K)" in said
    result = keel.predict("adult@1", rows, adult / "named.parquet", project=adult)
    assert (result["positive_label"], result["target"]) == (">50K", "income")
    scored = pq.read_table(adult / "named.parquet")
    positive = [p >= 0.5 for p in scored.column("probability").to_pylist()]
    assert [label == ">50K" for label in scored.column("prediction").to_pylist()] == positive
    assert 0 < sum(positive) < len(positive)  # both classes: the check above means something
    model = keel.load_model("adult@1", project=adult)
    assert model.positive_label == ">50K" and model.classes == ["<=50K", ">50K"]


def test_explain_answers_what_predict_answers_on_the_same_lines(adult: Path, rows: Path) -> None:
    """Per row, `keel explain` reports what `keel predict` wrote for it (the label as
    prediction, P(>50K) as probability, not the probability as prediction), numbered by the
    file's line as predict's rejects file numbers them (the header is line 1)."""
    _predict(adult, rows, adult / "p.csv")
    base = ["explain", "adult@1", "-i", str(rows), "-p", str(adult)]
    done = CliRunner().invoke(cli_app, [*base, "-o", str(adult / "e.csv")])
    assert done.exit_code == 0, done.output
    predicted, explained = pv.read_csv(adult / "p.csv"), pv.read_csv(adult / "e.csv")
    assert explained.column("prediction").to_pylist() == predicted["prediction"].to_pylist()
    assert explained.column("probability").to_pylist() == pytest.approx(
        predicted.column("probability").to_pylist(), abs=1e-9
    )
    rejected = pv.read_csv(adult / "p.rejects.csv").column("line").to_pylist()
    assert rejected == [5]  # body[3]: the header is line 1
    lines = [n for n in range(2, ROWS + 2) if n not in rejected]
    assert explained.column("line").to_pylist() == lines
    shown = CliRunner().invoke(cli_app, [*base, "-n", "5", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    document = orjson.loads(shown.stdout)
    assert document["lines"] == [2, 3, 4, 6]  # line 5 does not convert
    answers = [(r["prediction"], r["probability"]) for r in document["rows"]]
    first = predicted.slice(0, 4).to_pylist()
    assert answers == [(r["prediction"], pytest.approx(r["probability"])) for r in first]
    text = CliRunner().invoke(cli_app, [*base, "-n", "1"])
    expected = f"line 2: prediction {first[0]['prediction']}, probability "
    assert text.exit_code == 0 and expected in text.output


def test_model_explain_keeps_a_dataframes_index(adult: Path, rows: Path) -> None:
    """`Model.explain(frame)` numbers its rows by the DataFrame's index, and each row holds
    what `Model.predict` and `predict_proba` answer for it; request dicts have no index."""
    frame = pv.read_csv(rows).to_pandas().drop(index=3).head(5)  # row 3 does not convert
    frame["age"] = frame["age"].astype("int64")
    assert frame.index.tolist() == [0, 1, 2, 4, 5]
    model = keel.load_model("adult@1", project=adult)
    explained = model.explain(frame)
    assert explained.index == (0, 1, 2, 4, 5)
    found = explained.to_json()["rows"]
    assert [r["index"] for r in found] == [0, 1, 2, 4, 5]
    assert [r["prediction"] for r in found] == list(model.predict(frame))
    probabilities = [float(p) for p in model.predict_proba(frame)]
    assert [r["probability"] for r in found] == pytest.approx(probabilities, abs=1e-9)
    from_dicts = model.explain(frame.to_dict("records")).to_json()["rows"]
    assert "index" not in from_dicts[0] and from_dicts[0]["prediction"] == found[0]["prediction"]


def test_predict_reads_its_input_once_and_writes_the_output_once(
    adult: Path, rows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keel predict -o FILE.csv` opens its input once and writes FILE once, as the batches
    are scored: no Parquet file written first and converted (read back and written again)."""
    import keel.data.export as export
    import keel.serve.batch as batch

    opened: list[Path] = []
    copied: list[Path] = []
    open_data, duck_copy = batch.open_data, export._duck_copy

    def counted_open(path: Path, *args: object) -> object:
        opened.append(path)
        return open_data(path, *args)  # type: ignore[arg-type]

    def counted_copy(select: str, target: Path, *args: object) -> None:
        copied.append(target)
        duck_copy(select, target, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "open_data", counted_open)
    monkeypatch.setattr(export, "_duck_copy", counted_copy)
    monkeypatch.setattr("pyarrow.parquet.ParquetWriter", None)  # no Parquet at all
    _predict(adult, rows, adult / "once.csv")
    assert opened == [rows]
    assert len(copied) == 1 and copied[0].name.startswith(".once.csv.")  # renamed when done
    assert pv.read_csv(adult / "once.csv").num_rows == ROWS - 1
