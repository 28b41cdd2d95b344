"""`keel init` sets aside the columns a regression target is computed from (bike sharing:
``cnt = casual + registered``) and copies or monotone transforms of the target, naming the formula
or the rank correlation in keel.yaml; strong but legitimate predictors (student G1/G2 for G3)
and the other shared datasets' features stay inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from keel.commands.init import init_from_file
from keel.commands.leak_sums import LEAK_R2, regression_leaks
from keel.commands.profile import profile_file
from keel.config import load_config

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
HOUR = SHARED / "bike-sharing" / "hour.csv"
ADULT = SHARED / "adult" / "adult.data"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country", "income"]  # fmt: skip
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")


def words(path: Path) -> str:
    lines = (line.strip().removeprefix("#") for line in path.read_text().splitlines())
    return " ".join(" ".join(lines).split())  # comments wrap: compare the words


def test_bike_sharing_count_is_the_sum_of_two_columns(tmp_path: Path) -> None:
    made = init_from_file(tmp_path / "bikes", HOUR, "cnt", copy=False)
    assert made.task == "regression"
    assert made.dropped == ("instant", "casual", "registered")
    assert load_config(made.config, env="").data.drop == ["instant", "casual", "registered"]
    text = words(made.config)
    formula = "cnt = 1.00*casual + 1.00*registered (least squares, R^2 1.0000 on 17,379"
    assert f"casual: 'cnt' is computed from casual, registered: {formula}" in text
    assert f"registered: 'cnt' is computed from casual, registered: {formula}" in text
    for kept in ("temp", "atemp", "hum", "hr", "weathersit"):  # real inputs stay
        assert kept not in made.dropped


def test_either_part_as_the_target_names_the_other_two(tmp_path: Path) -> None:
    found = profile_file(HOUR, "casual").set_aside
    leaks = {f.name: f.why for f in found if f.kind == "leak"}
    assert set(leaks) == {"registered", "cnt"}
    assert "casual = -1.00*registered + 1.00*cnt" in leaks["cnt"]


@pytest.mark.parametrize(
    ("file", "target"),
    [
        ("california-housing/housing.csv", "median_house_value"),
        ("student-performance/student-por.csv", "G3"),  # G1, G2: earlier grades, R^2 ~0.85
        ("student-performance/student-mat.csv", "G3"),
        ("bike-sharing/hour.csv", "temp"),  # atemp follows it closely, not exactly
    ],
)
def test_strong_predictors_are_no_leaks(file: str, target: str) -> None:
    found = profile_file(SHARED / file, target).set_aside
    assert [f.name for f in found if f.kind == "leak"] == []


@pytest.mark.parametrize("target", ["hours-per-week", "age"])
def test_adult_numeric_targets_have_no_leaks(tmp_path: Path, target: str) -> None:
    table = pcsv.read_csv(ADULT, read_options=pcsv.ReadOptions(column_names=ADULT_COLUMNS))
    pcsv.write_csv(table, tmp_path / "adult.csv")
    found = profile_file(tmp_path / "adult.csv", target).set_aside
    assert [f.name for f in found if f.kind == "leak"] == []


def test_a_monotone_transform_of_the_target_is_a_leak(tmp_path: Path) -> None:
    table = pcsv.read_csv(SHARED / "california-housing" / "housing.csv")
    value = table.column("median_house_value").to_numpy()
    table = table.append_column("log_value", pa.array(np.log(value)))
    table = table.append_column("value_k", pa.array(np.round(value / 1000, 1)))
    pcsv.write_csv(table, tmp_path / "housing.csv")
    made = init_from_file(tmp_path / "p", tmp_path / "housing.csv", "median_house_value")
    assert made.dropped == ("log_value", "value_k")
    text = words(made.config)
    # 20,433: the rows where no numeric column is missing (total_bedrooms lacks 207)
    assert "log_value: it rises with 'median_house_value' on 20,433 sampled rows" in text
    assert "(Spearman +1.0000): the target itself or a transform of it leaks" in text


def synthetic(noise: float, rows: int = 5000) -> pa.Table:
    rng = np.random.default_rng(7)
    a, b, c = rng.gamma(2.0, 50.0, rows), rng.gamma(3.0, 20.0, rows), rng.normal(0, 1, rows)
    total = 2.5 * a - 0.5 * b + 40.0 + rng.normal(0.0, noise, rows)
    return pa.table({"a": a, "b": b, "c": c, "shop": rng.integers(0, 5, rows), "total": total})


def test_a_near_exact_formula_is_found_and_a_strong_fit_is_not() -> None:
    near = synthetic(noise=2.0)  # rounding-sized noise
    [first, second] = regression_leaks(near, "total", set())
    assert (first.name, second.name) == ("a", "b")
    assert "total = 2.50*a - 0.50*b + 39.98 (least squares, R^2 0.9999 on 5,000" in first.why
    strong = synthetic(noise=25.0)  # a good predictor, not an identity
    y, x = strong.column("total").to_numpy(), strong.column("a").to_numpy()
    assert np.corrcoef(x, y)[0, 1] ** 2 < LEAK_R2
    assert regression_leaks(strong, "total", set()) == []
    assert regression_leaks(near, "total", {"a"}) == []  # a set-aside column is no term


def test_keel_init_then_run_on_bike_sharing_gives_a_realistic_r2(tmp_path: Path) -> None:
    day = SHARED / "bike-sharing" / "day.csv"
    init = subprocess.run(
        [sys.executable, "-m", "keel.cli", "init", "bikes", "--from", str(day), "--target", "cnt"],
        cwd=tmp_path, text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    said = " ".join(init.stdout.split())
    assert "reasons are in keel.yaml's drop:): instant, casual, registered." in said
    run = subprocess.run(
        [sys.executable, "-m", "keel.cli", "run", "--format", "json"],
        cwd=tmp_path / "bikes", text=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    r2 = json.loads(run.stdout)["model"]["metrics"]["r2"]
    assert 0.5 < r2 < 0.98  # with casual and registered as inputs it is 0.99+
