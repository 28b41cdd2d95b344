"""The reading options as a user meets them: `keel validate`, `keel predict`, `keel monitor
--input` and `keel data show FILE` read files alike, print what they read them as, report
malformed lines with their numbers, and refuse a file without the expected columns with the
fix in the message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
STUDENT = SHARED / "student-performance" / "student-mat.csv"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Penguins as train/test files, and the test file spoilt in the ways users spoil them."""
    root = tmp_path_factory.mktemp("penguins")
    (root / "data").mkdir()
    header, *rows = PENGUINS.read_text(encoding="utf-8").splitlines()
    test, train = rows[::4], [r for i, r in enumerate(rows) if i % 4]
    write(root / "data" / "train.csv", [header, *train])
    write(root / "data" / "test.csv", [header, *test])
    write(root / "semicolons.csv", [line.replace(",", ";") for line in [header, *train]])
    write(root / "no-header.csv", train)
    spoilt = [header, *train]
    spoilt[4] += ",extra"  # line 5
    spoilt[8] += ",1,2"  # line 9
    write(root / "malformed.csv", spoilt)
    return root


def write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def project(files: Path) -> Path:
    config = {
        "project": "penguins",
        "data": {
            "train": {"path": "data/train.csv", "na_values": ["NA"]},
            "test": {"path": "data/test.csv", "na_values": ["NA"]},
            "target": "species",
        },
        "model": {
            "name": "penguins",
            "flavor": "lightgbm",
            "task": "multiclass",
            "params": {"n_estimators": 20},
        },
        "registry": {"alias": "production"},
    }
    (files / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    ran = keel_cli("run", cwd=files)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return files


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


# --- keel validate ----------------------------------------------------------------------------


def test_validate_prints_the_sniffed_dialect(tmp_path: Path) -> None:
    text = keel_cli("validate", str(STUDENT), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "read " in text.stderr and "as csv, delimiter ';', quote '\"', header" in text.stderr
    body = json.loads(keel_cli("validate", str(STUDENT), "-f", "json", cwd=tmp_path).stdout)
    assert body["rows"] == 395 and body["dialect"]["delimiter"] == ";"
    assert body["dialect"]["detected"] == ["delimiter", "quote", "header", "encoding"]


def test_validate_with_the_wrong_delimiter_names_the_right_one(files: Path) -> None:
    result = keel_cli("validate", "semicolons.csv", "--reference", "data/train.csv",
                      "--delimiter", ",", cwd=files)  # fmt: skip
    assert result.returncode == 1
    assert "none of the 8 reference columns was found" in result.stderr
    assert "pass --delimiter ';'" in result.stderr
    no_traceback(result)


def test_validate_a_headerless_file_names_the_columns_to_pass(files: Path) -> None:
    result = keel_cli("validate", "no-header.csv", "--reference", "data/train.csv", cwd=files)
    assert result.returncode == 1
    assert "The file has no header line: pass --columns species,island," in result.stderr
    no_traceback(result)
    header = PENGUINS.read_text(encoding="utf-8").splitlines()[0]
    fixed = keel_cli("validate", "no-header.csv", "--reference", "data/train.csv",
                     "--no-header", "--columns", header, "-f", "json", cwd=files)  # fmt: skip
    body = json.loads(fixed.stdout)
    assert body["rows"] == 258 and body["dialect"]["given"] == ["header"]
    assert not [a for a in body["anomalies"] if a["kind"] == "missing_column"]


def test_validate_lists_malformed_lines_and_checks_the_rest(files: Path) -> None:
    result = keel_cli("validate", "malformed.csv", "-f", "json", cwd=files)
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["rows"] == 256  # 258 rows, 2 left out
    (finding,) = [a for a in body["anomalies"] if a["kind"] == "malformed_row"]
    assert finding["severity"] == "error" and finding["details"]["rows"] == 2
    lines = [(b["line"], b["reason"]) for b in finding["details"]["lines"]]
    assert lines == [(5, "expected 8 fields, found 9"), (9, "expected 8 fields, found 10")]
    text = keel_cli("validate", "malformed.csv", cwd=files)
    assert "FAILED" in text.stdout and "line 5: expected 8 fields, found 9" in text.stdout


def test_a_malformed_option_is_a_usage_error(files: Path) -> None:
    result = keel_cli("validate", "data/test.csv", "--delimiter", ";;", cwd=files)
    assert result.returncode == 2
    assert "--delimiter: delimiter must be one character, got ';;'" in result.stderr
    no_traceback(result)


# --- keel data show FILE ----------------------------------------------------------------------


def test_data_show_a_file(files: Path) -> None:
    shown = keel_cli("data", "show", "malformed.csv", cwd=files)
    assert shown.returncode == 0, shown.stderr
    assert "read as: csv, delimiter ',', no quoting, header, utf-8 (detected)" in shown.stdout
    assert "malformed.csv:5: expected 8 fields, found 9" in shown.stderr
    body = json.loads(keel_cli("data", "show", "semicolons.csv", "-f", "json", cwd=files).stdout)
    assert body["rows"] == 258 and body["dialect"]["delimiter"] == ";"
    assert body["columns"][0] == {"name": "species", "type": "string", "nullable": True}


# --- keel predict and keel monitor --input ----------------------------------------------------


def test_predict_reads_a_semicolon_file_and_says_so(project: Path) -> None:
    result = keel_cli("predict", "penguins", "-i", "semicolons.csv", "-o", "out.parquet",
                      cwd=project)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "read semicolons.csv as csv, delimiter ';'" in result.stderr
    assert pq.read_table(project / "out.parquet").num_rows == 258


def test_predict_reports_malformed_lines(project: Path) -> None:
    result = keel_cli("predict", "penguins", "-i", "malformed.csv", "-o", "m.parquet",
                      "-f", "json", cwd=project)  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["rows"] == 256 and body["dialect"]["delimiter"] == ","
    assert [(b["file"], b["line"], b["raw"][-6:]) for b in body["bad_lines"]] == [
        ("malformed.csv", 5, ",extra"),
        ("malformed.csv", 9, "07,1,2"),
    ]
    text = keel_cli("predict", "penguins", "-i", "malformed.csv", "-o", "m.parquet", cwd=project)
    assert "malformed.csv:9: expected 8 fields, found 10 (left out)" in text.stderr


@pytest.mark.parametrize(
    ("args", "problem", "fix"),
    [
        (["-i", "semicolons.csv", "-d", ","], "none of the 7 model input columns was found",
         "pass --delimiter ';'"),
        (["-i", "no-header.csv"], "none of the 7 model input columns was found",
         "The file has no header line: pass --columns"),
        (["-i", str(STUDENT)], "6 of the 7 model input columns are missing",
         "Check the file, or how it is read"),
    ],
    ids=["wrong-delimiter", "no-header", "other-file"],
)  # fmt: skip
@pytest.mark.parametrize("verb", ["monitor", "predict"])
def test_a_file_without_the_model_columns_is_refused(
    project: Path, verb: str, args: list[str], problem: str, fix: str
) -> None:
    extra = ["-o", "never.parquet"] if verb == "predict" else []
    result = keel_cli(verb, "penguins", *args, *extra, cwd=project)
    assert result.returncode == 1
    assert problem in result.stderr and fix in result.stderr
    assert "stable" not in result.stdout
    no_traceback(result)
    assert not (project / "never.parquet").exists()


def test_monitor_reads_a_headerless_file_with_columns(project: Path) -> None:
    header = PENGUINS.read_text(encoding="utf-8").splitlines()[0]
    result = keel_cli("monitor", "penguins", "-i", "no-header.csv", "--no-header",
                      "--columns", header, "-f", "json", cwd=project)  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["rows"] == 258 and body["dialect"]["header"] is False
    assert body["bad_lines"] == [] and body["missing_columns"] == []
