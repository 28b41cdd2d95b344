"""Without ``data.test``, ``keel run`` holds out a test split itself: stratified by default, by
time or by group when declared; recorded with the run and reproducible from the seed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

import keel
from keel.errors import ConfigError, DataValidationError
from keel.project import Project

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
BIKES = SHARED / "bike-sharing" / "day.csv"

pytestmark = pytest.mark.skipif(
    not (PENGUINS.exists() and BIKES.exists()), reason="the shared datasets are not here"
)


def penguins_project(root: Path, **split: Any) -> Path:
    root.mkdir(parents=True)
    shutil.copy(PENGUINS, root / "penguins.csv")
    config: dict[str, Any] = {
        "project": "penguins",
        "data": {"train": {"path": "penguins.csv", "na_values": ["NA"]}, "target": "species"},
        "model": {"name": "penguins", "task": "multiclass", "params": {"n_estimators": 30}},
    }
    if split:
        config["split"] = split
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def bikes_project(root: Path, **split: Any) -> Path:
    root.mkdir(parents=True)
    shutil.copy(BIKES, root / "day.csv")
    config = {
        "project": "bikes",
        # casual + registered = cnt: they would leak the target
        "data": {"train": {"path": "day.csv"}, "target": "cnt", "drop": ["casual", "registered"]},
        "model": {"name": "bikes", "task": "regression", "params": {"n_estimators": 30}},
        "split": split,
    }
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def sides(root: Path, summary: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    from keel.data import read_snapshot

    split = next(s for s in summary["steps"] if s["step"] == "split")
    with Project(root) as project:
        train, test = (
            read_snapshot(project.artifacts, split["outputs"][f"{side}_snapshot"])
            for side in ("train", "test")
        )
    return train, test


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = penguins_project(tmp_path_factory.mktemp("holdout") / "penguins")
    return root, keel.run(root)


def test_run_without_data_test_holds_out_a_split_and_trains(
    penguins: tuple[Path, dict[str, Any]],
) -> None:
    _, summary = penguins
    steps = [s["step"] for s in summary["steps"]]
    assert steps[:3] == ["ingest_train", "split", "profile"] and "ingest_test" not in steps
    assert {s["status"] for s in summary["steps"]} == {"succeeded"}
    assert summary["model"]["version"] == 1 and summary["model"]["metrics"]["accuracy"] > 0.9
    facts = summary["steps"][1]["facts"]
    assert facts["method"] == "stratified" and facts["stratified_on"] == "species"
    assert (facts["test_fraction"], facts["seed"]) == (0.2, 0)
    assert (facts["train_rows"], facts["test_rows"]) == (275, 69)
    evaluate = next(s for s in summary["steps"] if s["step"] == "evaluate")
    assert evaluate["facts"]["metrics"]["rows"] == 69


def test_stratified_split_keeps_each_class_share(penguins: tuple[Path, dict[str, Any]]) -> None:
    root, summary = penguins
    train, test = sides(root, summary)
    assert train.num_rows + test.num_rows == 344
    everything = Counter(train.column("species").to_pylist() + test.column("species").to_pylist())
    held = Counter(test.column("species").to_pylist())
    for species, count in everything.items():
        # each class's share of the test split is its share of the data, to within one row
        assert abs(held[species] - count * test.num_rows / 344) <= 1, species


def test_the_split_is_recorded_with_its_run_and_snapshots(
    penguins: tuple[Path, dict[str, Any]],
) -> None:
    root, summary = penguins
    split = summary["steps"][1]
    shown = keel.get_run(split["run_id"], project=root)
    assert shown["params"] == {
        "method": "stratified",
        "test_fraction": 0.2,
        "seed": 0,
        "stratified_on": "species",
    }
    assert set(shown["outputs"]) == {"train_snapshot", "test_snapshot"}
    with Project(root) as project:
        parent = summary["steps"][0]["outputs"]["train_snapshot"]
        test = project.metadata.get_artifact(split["outputs"]["test_snapshot"])
        assert test.kind == "snapshot" and test.metadata["split"] == "test"
        assert test.metadata["parent"] == parent and test.metadata["holdout"]["test_rows"] == 69
    snapshots = keel.runs('step = "split" and params.seed = 0', project=root)
    assert [r["id"] for r in snapshots] == [split["run_id"]]


def test_same_seed_same_rows_another_seed_other_rows(tmp_path: Path) -> None:
    root = penguins_project(tmp_path / "p", test_fraction=0.25, seed=7)
    first = keel.run(root)
    again = keel.run(root, cache=False)  # executed again, not reused: the same bytes
    outputs = [next(s for s in run["steps"] if s["step"] == "split") for run in (first, again)]
    assert outputs[1]["status"] == "succeeded"
    assert outputs[0]["outputs"] == outputs[1]["outputs"]
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["split"]["seed"] = 8
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    other = keel.run(root)
    status = {s["step"]: s["status"] for s in other["steps"]}
    assert status["ingest_train"] == "cached" and status["split"] == "succeeded"
    moved = next(s for s in other["steps"] if s["step"] == "split")["outputs"]
    assert moved["test_snapshot"] != outputs[0]["outputs"]["test_snapshot"]
    first_test, other_test = sides(root, first)[1], sides(root, other)[1]
    assert first_test.num_rows == other_test.num_rows == 86
    assert first_test.to_pylist() != other_test.to_pylist()


def test_time_split_holds_out_the_latest_rows_and_says_so(tmp_path: Path) -> None:
    root = bikes_project(tmp_path / "bikes", method="time", column="dteday")
    env = os.environ | {"COLUMNS": "200"}
    text = subprocess.run([sys.executable, "-m", "keel.cli", "run"], cwd=root, env=env,
                          text=True, capture_output=True, timeout=300)  # fmt: skip
    assert text.returncode == 0, text.stderr
    # a later period differs from the training rows by design: drift there is a warning, said
    assert "warning: schema.yaml: the test split is the latest rows by 'dteday'" in text.stdout
    assert "warning(s) (" in text.stdout and " from this run); to see them: keel runs show" in (
        text.stdout
    )
    schema = yaml.safe_load((root / "schema.yaml").read_text())
    assert schema["severities"] == {"distribution_shift": "warning"}
    done = subprocess.run([sys.executable, "-m", "keel.cli", "run", "-f", "json"], cwd=root,
                          env=env, text=True, capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    facts = next(s for s in summary["steps"] if s["step"] == "split")["facts"]
    assert (facts["method"], facts["column"]) == ("time", "dteday")
    assert (facts["train_rows"], facts["test_rows"]) == (584, 147)
    train, test = sides(root, summary)
    assert max(train.column("dteday").to_pylist()) < min(test.column("dteday").to_pylist())
    assert str(max(test.column("dteday").to_pylist())) == "2012-12-31"
    assert summary["model"]["metrics"]["rmse"] > 0
    (first, *_) = keel.runs('step = "schema"', sort="started_at asc", project=root)
    assert "split.method: time" in first["warnings"][0]


def test_group_split_never_puts_a_group_on_both_sides(tmp_path: Path) -> None:
    root = bikes_project(tmp_path / "bikes", method="group", column="mnth", seed=3)
    summary = keel.run(root)
    train, test = sides(root, summary)
    assert not set(train.column("mnth").to_pylist()) & set(test.column("mnth").to_pylist())
    assert train.num_rows + test.num_rows == 731 and test.num_rows > 0
    assert summary["model"]["version"] == 1


def test_a_split_that_cannot_apply_names_the_setting(tmp_path: Path) -> None:
    root = penguins_project(tmp_path / "a", method="time", column="hatched_on")
    with pytest.raises(ConfigError, match=r"split.column: column 'hatched_on' is not in the"):
        keel.run(root)
    done = subprocess.run([sys.executable, "-m", "keel.cli", "run"], cwd=root, text=True,
                          capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "split.column" in done.stderr
    assert "Traceback" not in done.stderr
    root = bikes_project(tmp_path / "b", method="stratified")
    with pytest.raises(ConfigError, match="stratified needs a classification task"):
        keel.run(root)
    root = bikes_project(tmp_path / "c", method="time", column="yr", test_fraction=0.6)
    with pytest.raises(DataValidationError, match="too few distinct timestamps"):
        keel.run(root)  # two years: the latest 60% of rows would leave no earlier rows


def test_with_data_test_there_is_no_split_step(tmp_path: Path) -> None:
    from keel.pipeline.standard import default_steps

    root = keel.init(tmp_path / "adult", example="adult")
    with Project(root) as project:
        names = [s.name for s in default_steps(project)]
    assert names[:2] == ["ingest_train", "ingest_test"] and "split" not in names
