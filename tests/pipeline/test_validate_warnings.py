"""Every warning the validate step counts is shown: printed by ``keel run`` (the first five,
then how many more and ``keel runs show RUN``), kept with the run (``keel runs show``, for the
step run and for the pipeline run) and in ``--format json``. The test side of a split is
judged against ``split.test_fraction``: a correct split never reads as a partial load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

import keel
from keel.project import Project
from keel.validate.anomalies import ExpectedRows, validate_data
from keel.validate.schema import Schema

SPLIT_WARNINGS = [
    "train: 16 rows repeat an earlier row (0.1%), e.g. rows [3897, 7334, 9320, 10466, 12068]. "
    "Deduplicate the source if they are not genuine repeats.",
    "test: 1 row repeats an earlier row (0.0%), e.g. rows [1025]. "
    "Deduplicate the source if they are not genuine repeats.",
]
DECLARED_WARNINGS = [
    "train: 24 rows repeat an earlier row (0.1%), e.g. rows [4881, 5104, 9171, 11631, 13084]. "
    "Deduplicate the source if they are not genuine repeats.",
    "test: column 'fnlwgt' has 0 rows below 12285.0 and 1 above 1484705.0.",
    "test: 5 rows repeat an earlier row (0.0%), e.g. rows [864, 11189, 11212, 13848, 15960]. "
    "Deduplicate the source if they are not genuine repeats.",
]
#: How the validate step's warnings start (the evaluate step's say "test data:").
VALIDATION = ("warning: train:", "warning: test:")
#: Columns emptied in the test file of the all-nulls case.
EMPTIED = ("occupation", "workclass", "native-country", "education")


def adult(root: Path, *, declared_test: bool = True) -> Path:
    """The Adult example with a quick model; without ``data.test`` the split step runs."""
    made = keel.init(root, example="adult")
    config = yaml.safe_load((made / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 40, "learning_rate": 0.2})
    config["model"]["early_stopping_rounds"] = None  # 40 rounds never stop early: no warning
    if not declared_test:
        del config["data"]["test"]
    (made / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return made


def keel_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}  # one warning a line: the lines compare exactly
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=root, env=env,
                          text=True, capture_output=True, timeout=300)  # fmt: skip


def warning_lines(stdout: str) -> list[str]:
    return [line.rstrip() for line in stdout.splitlines() if line.startswith("warning:")]


def validate_step(summary: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in summary["steps"] if s["step"] == "validate")


@pytest.fixture(scope="module")
def split_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adult(tmp_path_factory.mktemp("split") / "adult", declared_test=False)


def test_a_split_run_shows_every_validation_warning_and_no_row_count_one(
    split_project: Path,
) -> None:
    done = keel_cli(split_project, "run")
    assert done.returncode == 0, done.stderr
    assert warning_lines(done.stdout) == [f"warning: {w}" for w in SPLIT_WARNINGS]
    assert "partial or duplicated load" not in done.stdout
    assert "rows against" not in done.stdout
    assert "errors=0, warnings=2" in done.stdout
    assert "... and" not in done.stdout  # two warnings: both printed, nothing held back
    summary_line = next(line for line in done.stdout.splitlines() if "warning(s)" in line)
    assert summary_line.startswith("2 warning(s) (2 from this run); to see them: keel runs show ")
    assert summary_line.endswith(" (validate)")

    # --format json: a cached rerun keeps (and reports) the warnings of the run it reused
    again = keel_cli(split_project, "run", "--format", "json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    step = validate_step(summary)
    assert step["status"] == "cached" and step["warnings"] == SPLIT_WARNINGS
    assert step["facts"] == {"errors": 0, "warnings": 2}

    # keel runs show: the pipeline run lists its steps' warnings, in text and in JSON
    shown = keel_cli(split_project, "runs", "show", summary["pipeline_run"][:12])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    heading = f"warnings 2 (validate run {step['run_id'][:12]})"
    assert heading in lines
    at = lines.index(heading)
    assert lines[at + 1 : at + 3] == [f"  - {w}" for w in SPLIT_WARNINGS]
    as_json = json.loads(keel_cli(split_project, "runs", "show", summary["pipeline_run"],
                                  "--format", "json").stdout)  # fmt: skip
    assert validate_step(as_json)["warnings"] == SPLIT_WARNINGS
    # and the validation report holds no row-count anomaly for the split's test side
    report = keel.get_run(step["run_id"], project=split_project)
    sha = report["lineage"]["outputs"]["validation"]["sha256"]
    with Project(split_project) as project:
        kinds = {a["kind"] for a in json.loads(project.artifacts.get(sha))["anomalies"]}
    assert kinds == {"duplicate_rows"}


def test_the_shipped_example_shows_its_three_validation_warnings(tmp_path: Path) -> None:
    root = adult(tmp_path / "adult")
    done = keel_cli(root, "run")
    assert done.returncode == 0, done.stderr
    shown = warning_lines(done.stdout)
    validation = [line for line in shown if line.startswith(VALIDATION)]
    assert validation == [f"warning: {w}" for w in DECLARED_WARNINGS]
    # the evaluate step's coercion does not say the fnlwgt range finding again in other words
    assert not [line for line in shown if line.startswith("warning: test data:")], shown
    assert "errors=0, warnings=3" in done.stdout
    assert "partial or duplicated load" not in done.stdout
    (run,) = keel.runs('step = "validate"', project=root)
    assert run["warnings"] == DECLARED_WARNINGS
    step_show = keel_cli(root, "runs", "show", run["id"][:12])
    assert "warnings 3" in step_show.stdout
    assert all(f"  - {w}" in step_show.stdout.splitlines() for w in DECLARED_WARNINGS)


def test_a_test_file_with_empty_columns_is_shown_blocking_then_as_warnings(
    tmp_path: Path,
) -> None:
    root = adult(tmp_path / "adult")
    raw = (root / "data" / "adult.test").read_text().splitlines()
    names = yaml.safe_load((root / "keel.yaml").read_text())["data"]["test"]["columns"]
    emptied = [names.index(c) for c in EMPTIED]
    rows = [raw[0]]  # the file's '|1x3 Cross validator' line
    for line in raw[1:]:
        cells = line.split(", ")
        if len(cells) == len(names):
            cells = ["?" if i in emptied else c for i, c in enumerate(cells)]
        rows.append(", ".join(cells))
    (root / "data" / "adult.test").write_text("\n".join(rows) + "\n")

    failed = keel_cli(root, "run")
    assert failed.returncode != 0
    assert "test: column 'occupation' is 100.0% null, the schema allows" in failed.stderr

    # the reviewed schema makes null columns a warning: the run goes on and shows them all
    schema = yaml.safe_load((root / "schema.yaml").read_text())
    schema["severities"] = {"null_fraction": "warning"}
    (root / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    done = keel_cli(root, "run")
    assert "Traceback" not in done.stderr, done.stderr
    (run,) = keel.runs('step = "validate" and status = "succeeded"', project=root)
    kept = run["warnings"]
    assert len(kept) == 7 and sum("100.0% null" in w for w in kept) == len(EMPTIED)
    assert kept[0] == DECLARED_WARNINGS[0]
    for column in EMPTIED:
        assert any(w.startswith(f"test: column '{column}' is 100.0% null") for w in kept)
    printed = [w for w in warning_lines(done.stdout) if w.startswith(VALIDATION)]
    assert printed == [f"warning: {w}" for w in kept[:5]]  # five printed, in order
    assert f"  ... and 2 more: keel runs show {run['id'][:12]}" in done.stdout.splitlines()
    assert "errors=0, warnings=7" in done.stdout


def test_the_row_count_check_knows_a_split(
    adult_test_table: pa.Table, adult_statistics: dict[str, Any], adult_schema: Schema
) -> None:
    quarter = adult_test_table.slice(0, adult_statistics["rows"] // 4)  # 0.25x

    def row_count(table: pa.Table, expected: ExpectedRows | None) -> list[str]:
        report = validate_data(table, schema=adult_schema, reference=adult_statistics,
                               name="test", expected_rows=expected)  # fmt: skip
        return [a.message for a in report.anomalies if a.kind == "row_count"]

    # a declared test file a quarter the size of train: a partial load, perhaps
    assert row_count(quarter, None) == [
        "test: 8140 rows against 32561 in the reference (0.25x); a partial or duplicated load?"
    ]
    split = ExpectedRows(ratio=0.2 / 0.8, why="split.test_fraction 0.2")
    assert row_count(quarter, split) == []  # the test side of a 0.2 split: as it should be
    tiny = adult_test_table.slice(0, 2000)
    assert row_count(tiny, split) == [
        "test: 2000 rows against 32561 in the reference (0.06x) where split.test_fraction 0.2 "
        "gives about 0.25x; check how the rows were split."
    ]
