"""A newcomer's trial on UCI Bike Sharing: hourly rentals (``cnt``, a regression) with a date
column, and ``casual + registered = cnt`` exactly, taken the way a user with their own file
would: ``keel init --from`` on the raw CSV (examples/bike-sharing ships a hand-written
keel.yaml for the same data; this is the other path).

Each test here is a problem the trial hit, kept fixed: ``keel init --from`` split the hourly
rows at random (a test hour's neighbours trained the model; r2 0.951 against 0.908 for the
latest rows), and now holds out the latest rows by the date column; the checks on the test
split reported range and shift "anomalies" of the columns set aside (``instant`` 3,488 rows
"out of range"), which the model never reads; a test split of a later period was told that a
column constant there "carries no information"; a shift that blocks a run did not say how to
accept it; ``keel predict`` on a file with ``temp`` renamed ``temperature`` said "The file
has 'atemp' for 'temp'" (a column the model reads too), and on a file without ``hum`` (the
other 11 inputs there) told to check ``--delimiter`` and ``--header``. One trained project is
shared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.errors import DataValidationError
from keel.validate.anomalies import validate_data

DATA = Path(__file__).resolve().parents[2] / "examples" / "bike-sharing" / "data" / "hour-train.csv"
FAST = {"n_estimators": 60, "learning_rate": 0.2, "num_leaves": 15}
SET_ASIDE = ("instant", "casual", "registered")


def _facts(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step["facts"] for step in summary["steps"] if step["step"] == name)


def _warnings(summary: dict[str, Any], name: str) -> list[str]:
    return next(step["warnings"] for step in summary["steps"] if step["step"] == name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """`keel init --from` on the raw hourly file, then one run (fewer, larger trees)."""
    made = init_from_file(tmp_path_factory.mktemp("bike") / "bike", DATA, "cnt")
    assert (made.task, made.dropped, made.split_column) == ("regression", SET_ASIDE, "dteday")
    path = made.directory / "keel.yaml"
    config = yaml.safe_load(path.read_text())
    config["model"]["params"] = FAST
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    yield made.directory, keel.run(made.directory)


def test_init_sets_the_sum_aside_and_splits_hourly_rows_by_date(tmp_path: Path) -> None:
    cli = subprocess.run(
        [sys.executable, "-m", "keel.cli", "init", "bike", "--from", str(DATA), "--target", "cnt"],
        cwd=tmp_path, text=True, capture_output=True, timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    said = " ".join(cli.stdout.split())
    assert "instant, casual, registered" in said
    assert "Split by time: the latest rows by dteday are the test split" in said
    text = (tmp_path / "bike" / "keel.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["split"] == {"method": "time", "column": "dteday"}
    assert config["data"]["drop"] == list(SET_ASIDE)
    comments = " ".join(line.strip(" #") for line in text.splitlines())
    assert "cnt = 1.00*casual + 1.00*registered" in comments
    assert "A random split would test on rows of the same dteday" in comments
    assert max(len(line) for line in text.splitlines()) <= 100


@pytest.mark.parametrize("rename", [None, "birth_date"], ids=["no-date", "date-of-birth"])
def test_a_file_without_a_date_of_events_keeps_the_default_split(
    tmp_path: Path, rename: str | None
) -> None:
    frame = pd.read_csv(DATA, nrows=2000)
    frame = frame.rename(columns={"dteday": rename}) if rename else frame.drop(columns="dteday")
    frame.to_csv(tmp_path / "undated.csv", index=False)
    made = init_from_file(tmp_path / "undated", tmp_path / "undated.csv", "cnt")
    assert made.split_column is None
    assert "split" not in yaml.safe_load(made.config.read_text())


def test_the_test_split_is_the_latest_whole_days(trained: tuple[Path, dict[str, Any]]) -> None:
    _, summary = trained
    split = _facts(summary, "split")
    assert (split["method"], split["column"]) == ("time", "dteday")
    days = pd.read_csv(DATA, usecols=["dteday"])["dteday"].value_counts().sort_index()
    latest = days[::-1].cumsum()  # rows on or after each day
    rows = int(days.sum())
    assert split["test_rows"] in set(latest.tolist())  # a cut between days, not within one
    assert 0.2 <= split["test_rows"] / rows < 0.2 + days.max() / rows  # the latest 20%, no more
    assert split["train_rows"] + split["test_rows"] == rows
    assert _facts(summary, "features")["inputs"] == 12  # 17 less cnt, dteday and the set aside
    assert 0.5 < summary["model"]["metrics"]["r2"] < 0.95  # a later period: no neighbours' help


def test_the_test_split_checks_skip_the_columns_set_aside(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    project, summary = trained
    warnings = _warnings(summary, "validate")
    assert warnings, "a later period shifts season and yr: warnings expected"
    assert not [w for w in warnings if any(f"'{name}'" in w for name in SET_ASIDE)]
    constant = next(w for w in warnings if "column 'yr' holds a single value" in w)
    assert "a later period" in constant and "carries no information" not in constant
    schema = yaml.safe_load((project / "schema.yaml").read_text())
    assert schema["severities"] == {"distribution_shift": "warning"}  # as the time split has it


def test_a_blocking_shift_says_how_to_accept_it() -> None:
    frame = pd.read_csv(DATA).drop(columns=["dteday", *SET_ASIDE])
    winter, summer = frame[frame["season"] == 1], frame[frame["season"] == 3]
    report = validate_data(
        pa.Table.from_pandas(summer, preserve_index=False),
        reference=pa.Table.from_pandas(winter, preserve_index=False),
        target="cnt",
        name="summer",
    )
    blocking = [a for a in report.errors if a.kind == "distribution_shift"]
    assert {a.column for a in blocking} >= {"mnth", "temp"}
    assert all("severities: {distribution_shift: warning}" in a.message for a in blocking)
    warned = [a for a in report.anomalies if a.severity == "warning"]
    assert not [a for a in warned if "severities:" in a.message]  # only where it blocks


def test_predict_names_the_renamed_column_not_another_input(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    project, _ = trained
    frame = pd.read_csv(DATA, nrows=50).rename(columns={"temp": "temperature"})
    frame.to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(DataValidationError) as caught:
        keel.predict("bike", tmp_path / "renamed.csv", tmp_path / "out.csv", project=project)
    message = caught.value.message
    assert "missing: temp." in message
    assert "The file has 'temperature' for 'temp'" in message and "'atemp' for" not in message
    frame.drop(columns=["temperature"]).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(DataValidationError) as caught:
        keel.predict("bike", tmp_path / "missing.csv", tmp_path / "out.csv", project=project)
    message = caught.value.message  # the other 11 were read: not a delimiter or header problem
    assert "The other 11 were found, so the file is read right: add temp to it" in message
    assert "--delimiter" not in message
    scored = keel.predict(
        "bike", DATA.with_name("hour-test.csv"), tmp_path / "held.csv", project=project
    )
    assert scored["rows"] == 3482 and scored["rejected"] == 0


def test_explain_calls_a_regression_output_its_value(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A regression's raw output is its prediction: `keel explain` says `value`, not `margin`
    (a classifier's log-odds), and wraps the contributions under it within 80 columns."""
    project, _ = trained
    pd.read_csv(DATA, nrows=2).to_csv(tmp_path / "two.csv", index=False)
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "explain", "bike", "-i", str(tmp_path / "two.csv")],
        cwd=project, text=True, capture_output=True, timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("line 2: prediction ")
    assert lines[1].startswith("  value ") and " = base " in lines[1]
    assert "margin" not in done.stdout and max(len(line) for line in lines) <= 80
