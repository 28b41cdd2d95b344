"""Acceptance for `keel validate` on real data, driven through the CLI as a new user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pytest

from keel.validate.anomalies import validate_data
from keel.validate.schema import infer_schema, write_schema
from keel.validate.statistics import compute_statistics

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIKE = REPO / "tests" / "fixtures" / "bike-sharing" / "hour.csv"  # CC BY 4.0, see SOURCE.md
DEMAND = {"cnt", "casual", "registered"}  # cnt = casual + registered: one demand shift
WEATHER = {"weathersit", "temp", "atemp", "hum", "windspeed", "season", "mnth"}


def keel_validate(*args: str, cwd: Path) -> tuple[int, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", "validate", *args],
        cwd=cwd, text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    if "--format" in args and "json" in args and result.returncode in (0, 1):
        return result.returncode, json.loads(result.stdout)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def bike_years(tmp_path_factory: pytest.TempPathFactory) -> Path:
    table = pv.read_csv(BIKE)
    folder = tmp_path_factory.mktemp("bike")
    pv.write_csv(table.filter(pc.equal(table["yr"], 0)), folder / "y2011.csv")
    pv.write_csv(table.filter(pc.equal(table["yr"], 1)), folder / "y2012.csv")
    return folder


def test_bike_2012_against_2011_reports_demand_and_weather_shift(bike_years: Path) -> None:
    code, body = keel_validate(
        "y2012.csv", "--reference", "y2011.csv", "--format", "json", cwd=bike_years
    )
    assert code == 1 and body["ok"] is False and body["rows"] == 8734
    errors = {(a["column"], a["kind"]) for a in body["anomalies"] if a["severity"] == "error"}
    shifts = {a["column"] for a in body["anomalies"] if a["kind"] == "distribution_shift"}
    assert ("cnt", "distribution_shift") in errors
    assert errors <= {(c, "distribution_shift") for c in DEMAND}  # nothing else is an error
    assert shifts & WEATHER >= {"hum"}
    # instant (an id) and dteday (a date) move by nature; yr was constant in 2011
    assert not {a["column"] for a in body["anomalies"]} & {"instant", "dteday"}
    yr = {a["kind"]: a["severity"] for a in body["anomalies"] if a["column"] == "yr"}
    assert set(yr.values()) == {"warning"}


def test_bike_with_cnt_as_target_and_its_parts_dropped(bike_years: Path) -> None:
    # as the bike example would declare it: casual + registered = cnt, so both leak the target
    reference = pv.read_csv(bike_years / "y2011.csv")
    stats = compute_statistics(reference)
    schema = infer_schema(stats, target="cnt", drop=["casual", "registered"])
    report = validate_data(pv.read_csv(bike_years / "y2012.csv"), schema=schema, reference=stats)
    assert {(a.column, a.kind) for a in report.errors} == {("cnt", "distribution_shift")}
    assert "hum" in {a.column for a in report.anomalies if a.kind == "distribution_shift"}


@pytest.fixture(scope="module")
def adult_files(tmp_path_factory: pytest.TempPathFactory, adult_train_table: pa.Table) -> Path:
    folder = tmp_path_factory.mktemp("adult")
    train = adult_train_table
    pv.write_csv(train, folder / "train.csv")
    stats = compute_statistics(train)
    # a reviewer's schema: the inferred default allows 50% nulls; this project allows 5%
    write_schema(infer_schema(stats, target="income", max_null_fraction=0.05), folder / "s.yaml")
    (folder / "train.json").write_text(json.dumps(stats), encoding="utf-8")

    rng = np.random.default_rng(0)
    rows = train.num_rows
    bad = train.rename_columns(["Education" if n == "education" else n for n in train.column_names])
    hours = bad.schema.get_field_index("hours-per-week")
    nulls = pa.array(rng.random(rows) < 0.3)
    holed = pc.if_else(nulls, pa.scalar(None, pa.int64()), bad["hours-per-week"])
    bad = bad.set_column(hours, "hours-per-week", holed)
    age = bad.schema.get_field_index("age")
    bad = bad.set_column(age, "age", pc.binary_join_element_wise(
        bad["age"].cast(pa.string()), pa.scalar(" years"), ""))  # fmt: skip
    workclass = bad["workclass"].to_pylist()
    for i in range(0, 300, 3):
        workclass[i] = "Astronaut"
    bad = bad.set_column(bad.schema.get_field_index("workclass"), "workclass", pa.array(workclass))
    bad = pa.concat_tables([bad, bad.take(pa.array(np.arange(1000, 1500)))])
    pv.write_csv(bad, folder / "mutated.csv")
    return folder


def test_adult_mutations_each_reported_on_their_column(adult_files: Path) -> None:
    code, body = keel_validate(
        "mutated.csv", "--schema", "s.yaml", "--reference", "train.csv", "--format", "json",
        cwd=adult_files,
    )  # fmt: skip
    assert code == 1 and body["ok"] is False
    found = {(a["column"], a["kind"], a["severity"]) for a in body["anomalies"]}
    assert {
        ("education", "missing_column", "error"),
        ("Education", "unexpected_column", "warning"),
        ("hours-per-week", "null_fraction", "error"),
        ("age", "type_mismatch", "error"),
        ("workclass", "unseen_category", "warning"),
        (None, "duplicate_rows", "warning"),
    } <= found
    errors = {(c, k) for c, k, s in found if s == "error"}
    assert errors == {
        ("education", "missing_column"), ("hours-per-week", "null_fraction"),
        ("age", "type_mismatch"),
    }  # fmt: skip
    by_kind = {a["kind"]: a for a in body["anomalies"]}
    assert by_kind["unseen_category"]["details"]["rows"] == 100
    assert by_kind["duplicate_rows"]["details"]["rows"] >= 500
    # the null spike is the null check's finding, not also a distribution shift
    assert "hours-per-week" not in {
        a["column"] for a in body["anomalies"] if a["kind"] == "distribution_shift"
    }


def test_adult_clean_copy_exits_zero_against_statistics_json(adult_files: Path) -> None:
    code, body = keel_validate(
        "train.csv", "--schema", "s.yaml", "--reference", "train.json", "--format", "json",
        cwd=adult_files,
    )  # fmt: skip
    assert code == 0 and body["ok"] is True
    assert {a["severity"] for a in body["anomalies"]} <= {"warning"}


def test_html_report_is_written_and_self_contained(adult_files: Path) -> None:
    code, printed = keel_validate(
        "mutated.csv", "--schema", "s.yaml", "--reference", "train.csv", "--format", "html",
        "--output", "report.html", cwd=adult_files,
    )  # fmt: skip
    assert code == 1 and "report.html" in printed
    page = (adult_files / "report.html").read_text(encoding="utf-8")
    assert "https://" not in page and "<script" not in page
    for kind in ("missing_column", "null_fraction", "type_mismatch", "unseen_category"):
        assert kind in page
    assert page.count("<svg") >= 14


def test_usage_errors_exit_two(adult_files: Path) -> None:
    code, printed = keel_validate("nope.csv", cwd=adult_files)
    assert code == 2 and "nope.csv" in printed
    code, printed = keel_validate("train.csv", "--format", "yaml", cwd=adult_files)
    assert code == 2


def test_snapshot_and_statistics_artifacts_by_sha_prefix(
    tmp_path: Path, adult_train_table: pa.Table, adult_test_table: pa.Table
) -> None:
    import pyarrow.parquet as pq

    import keel.api
    from keel.project import Project

    root = keel.api.init(tmp_path / "proj", example="adult")
    sink = pa.BufferOutputStream()
    pq.write_table(adult_test_table, sink)
    stats = json.dumps(compute_statistics(adult_train_table)).encode()
    with Project(root) as project:
        snapshot = project.artifacts.put(sink.getvalue().to_pybytes(), kind="snapshot")
        statistics = project.artifacts.put(stats, kind="statistics")
        project.metadata.record_artifact(snapshot)
        project.metadata.record_artifact(statistics)
    code, body = keel_validate(
        snapshot.sha256[:12], "--reference", statistics.sha256[:12], "--target", "income",
        "--format", "json", cwd=root,
    )  # fmt: skip
    assert code == 0 and body["rows"] == 16281
    assert not [a for a in body["anomalies"] if a["severity"] == "error"]
    code, printed = keel_validate(statistics.sha256[:12], cwd=root)
    assert code == 2 and "not a snapshot" in printed


def test_label_noise_and_outliers_on_request(adult_files: Path) -> None:
    code, body = keel_validate(
        "train.csv", "--schema", "s.yaml", "--label-noise", "--outliers", "--format", "json",
        cwd=adult_files,
    )  # fmt: skip
    assert code == 0
    noise = [a for a in body["anomalies"] if a["kind"] == "label_noise"]
    assert [(a["column"], a["severity"]) for a in noise] == [("income", "warning")]
    assert noise[0]["details"]["sampled"] == 32561
    assert 0 < noise[0]["details"]["fraction"] < 0.15 and noise[0]["details"]["row_ids"]
    outliers = [a for a in body["anomalies"] if a["kind"] == "outliers"]
    assert outliers and all(
        a["severity"] == "warning" and a["details"]["row_ids"] for a in outliers
    )
