"""Two things a new user meets on real data (the UCI student-performance file).

A number column that a few stray cells made text ('seventeen' in ``age``) is a run warning
when ``keel run`` infers schema.yaml for a hand-written keel.yaml (no ``keel init``): it names
the column, the count, the values and the fixes; the fix it names works. ``keel explain`` on a
file with a bad cell names the file and the line (CSV: header = line 1; Parquet: the row from
1), explains the other rows and writes the bad one to a rejects file as ``keel predict`` does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from keel.cli import app as cli_app
from keel.validate.numeric_text import mostly_numbers, strays_in_file, strays_in_table

STUDENTS = Path(__file__).parents[1] / "fixtures" / "student-performance" / "student-por.csv"
KEEL_YAML = """\
project: students
data:
  train:
    path: data/students.csv{na}
  target: higher
  drop: [G1, G2, G3]
model:
  name: students
  flavor: lightgbm
  task: binary
  params: {{n_estimators: 20}}
"""


def _lines() -> tuple[str, list[list[str]]]:
    header, *body = STUDENTS.read_text().splitlines()
    return header, [line.split(";") for line in body]


def _project(root: Path, strays: dict[int, str], na: str = "") -> Path:
    """A hand-written keel.yaml over the student file with ``age`` cells replaced."""
    header, rows = _lines()
    age = header.split(";").index("age")
    for row, value in strays.items():
        rows[row][age] = value
    (root / "data").mkdir(parents=True)
    text = "\n".join([header, *(";".join(r) for r in rows)]) + "\n"
    (root / "data" / "students.csv").write_text(text)
    (root / "keel.yaml").write_text(KEEL_YAML.format(na=na))
    return root


def _keel(*args: str) -> str:
    done = CliRunner().invoke(cli_app, list(args))
    assert done.exit_code == 0, done.output
    return " ".join(done.output.split())  # rich wraps lines: compare words


def _failing(*args: str) -> str:
    """A command that fails, run as a user runs it: its stderr, as words."""
    done = subprocess.run([sys.executable, "-m", "keel.cli", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A trained project whose ``age`` has two stray cells, and what its first run said."""
    root = _project(tmp_path_factory.mktemp("students") / "p", {5: "seventeen", 40: "16 yrs"})
    return root, _keel("run", "-p", str(root))


def test_a_stray_cell_in_a_number_column_is_a_run_warning(students: tuple[Path, str]) -> None:
    root, said = students
    assert "warning: column 'age' holds numbers but for 2 of its" in said
    assert "('seventeen', '16 yrs')" in said and "na_values" in said
    assert "string with one category per value" in said
    schema = (root / "schema.yaml").read_text()
    assert "  age:\n    type: string" in schema  # what the warning is about
    step_run = said.split("to see them: keel runs show ")[1].split(" ")[0]
    shown = _keel("runs", "show", step_run, "-p", str(root))
    assert "column 'age' holds numbers" in shown  # stored with the run


def test_the_fix_it_names_makes_the_column_a_number(tmp_path: Path) -> None:
    na = '\n    na_values: [seventeen, "16 yrs"]'
    root = _project(tmp_path / "p", {5: "seventeen", 40: "16 yrs"}, na=na)
    said = _keel("run", "-p", str(root))
    assert "holds numbers" not in said
    assert "  age:\n    type: int" in (root / "schema.yaml").read_text()


def test_a_clean_file_says_nothing_and_the_sample_is_bounded(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", {})
    assert "holds numbers" not in _keel("run", "-p", str(root))
    ages = pa.table({"age": [str(15 + i % 6) for i in range(200)]})
    ages = ages.set_column(0, "age", pa.array([*ages.column(0).to_pylist()[:150], *["x"] * 50]))
    pq.write_table(ages, tmp_path / "ages.parquet")
    assert strays_in_file(tmp_path / "ages.parquet", rows=100) == ()  # strays past the sample
    found = strays_in_file(tmp_path / "ages.parquet", rows=152)
    assert [(f.name, f.values, f.strays, f.examples) for f in found] == [("age", 152, 2, ("x",))]
    assert strays_in_table(ages) == ()  # 50 of 200: a text column that holds some numbers
    assert mostly_numbers("n", pa.chunked_array([list(range(50))])) is None  # not text


def _bad_rows(root: Path) -> Path:
    """Ten rows of the file; line 4 (header = line 1) has Medu 'four'."""
    header, rows = _lines()
    rows = rows[:10]
    rows[2][header.split(";").index("Medu")] = "four"
    path = root / "bad.csv"
    path.write_text("\n".join([header, *(";".join(r) for r in rows)]) + "\n")
    return path


def test_explain_names_the_file_and_line_and_skips_the_row(students: tuple[Path, str]) -> None:
    root, _ = students
    bad = _bad_rows(root)
    said = _keel("explain", "students@1", "-i", str(bad), "-p", str(root))
    assert f"warning: {bad}: 1 row(s) not explained" in said
    assert "line 4: Medu: 'four' is not an integer (int)" in said
    assert "line 3: prediction" in said and "line 4: prediction" not in said
    out = root / "why.csv"
    said = _keel("explain", "students@1", "-i", str(bad), "-o", str(out), "-p", str(root))
    assert "explained 9 rows" in said and "why.rejects.csv" in said
    rejects = pv.read_csv(root / "why.rejects.csv").to_pylist()
    assert rejects == [
        {"line": 4, "field": "Medu", "value": "four", "reason": rejects[0]["reason"]}
    ]
    explained = pv.read_csv(out)
    assert explained.column("line").to_pylist() == [2, 3, 5, 6, 7, 8, 9, 10, 11]


def test_explain_json_and_parquet_name_rows(students: tuple[Path, str]) -> None:
    root, _ = students
    bad = _bad_rows(root)
    done = CliRunner().invoke(
        cli_app, ["explain", "students@1", "-i", str(bad), "-f", "json", "-p", str(root)]
    )
    assert done.exit_code == 0, done.output
    document = orjson.loads(done.stdout)
    assert document["lines"] == [2, 3, 5, 6, 7, 8, 9, 10, 11] and document["rejected"] == 1
    table = pv.read_csv(bad, parse_options=pv.ParseOptions(delimiter=";"))
    pq.write_table(table, root / "bad.parquet")
    said = _keel("explain", "students@1", "-i", str(root / "bad.parquet"), "-p", str(root))
    assert "row 3: Medu: 'four' is not an integer" in said and "row 1: prediction" in said


def test_explain_errors_name_the_file_plainly(students: tuple[Path, str]) -> None:
    root, _ = students
    header, rows = _lines()
    one = root / "one.csv"
    medu = header.split(";").index("Medu")
    rows[0][medu] = "four"
    one.write_text(f"{header}\n{';'.join(rows[0])}\n")
    said = _failing("explain", "students@1", "-i", str(one), "-p", str(root))
    assert f"{one}, line 2: Medu: 'four' is not an integer (int)" in said
    assert "no row is left to explain" in said
    out = root / "none.parquet"
    said = _failing("explain", "students@1", "-i", str(one), "-o", str(out), "-p", str(root))
    assert f"all are in {root / 'none.rejects.csv'}" in said and not out.exists()
    assert pv.read_csv(root / "none.rejects.csv").column("line").to_pylist() == [2]
    table = pv.read_csv(_bad_rows(root), parse_options=pv.ParseOptions(delimiter=";"))
    pq.write_table(table.drop(["age", "Medu"]), root / "less.parquet")
    said = _failing("explain", "students@1", "-i", str(root / "less.parquet"), "-p", str(root))
    assert "less.parquet: 2 of the 29 model input columns are missing: Medu, age." in said
    assert "['" not in said


def test_schema_infer_on_a_file_names_the_stray_cells(tmp_path: Path) -> None:
    """`keel schema infer FILE` (print-only) warns as `keel run` does, on stderr, and still
    prints the schema on stdout (`> schema.yaml` stays a clean YAML file)."""
    root = _project(tmp_path / "p", {5: "seventeen", 40: "16 yrs"})
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "schema", "infer", str(root / "data" / "students.csv")],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "column 'age' holds numbers but for 2 of its 649 values" in said
    assert "'seventeen'" in said and "na_values" in said
    assert "holds numbers" not in done.stdout
    schema = yaml.safe_load(done.stdout)  # a clean YAML document: the warning is not in it
    assert schema["columns"]["age"]["type"] == "string"
