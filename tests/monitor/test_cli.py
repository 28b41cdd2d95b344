"""`keel monitor` as a user runs it on a trained Adult project: windows, versions, JSON, and the
inputs that must give a clear message and no false verdict (1 row, none of the model's columns,
a mixed-type log) — without importing LightGBM, scikit-learn or SciPy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import keel

from .conftest import DAY, T0


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitored") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["n_estimators"] = 40  # fast; the model's quality is not tested
    config["evaluate"]["gates"] = []
    config["monitor"]["features"] = {"fnlwgt": {"ignore": True}}
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    keel.run(root)
    return root


def write(project: Path, model: str, records: list[dict[str, Any]], day: str) -> None:
    import orjson

    folder = project / ".keel" / "predictions" / model / day
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "1-test.jsonl").open("ab") as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


def requests(rows: list[dict[str, Any]], start: float, model: str = "adult") -> list[Any]:
    scores = np.random.default_rng(0).random(len(rows))
    return [
        {"request_id": f"r{i}", "time": start + i, "model": model, "model_version": "1",
         "inputs": rows[i : i + 10],
         "predictions": [">50K" if s >= 0.5 else "<=50K" for s in scores[i : i + 10]],
         "probabilities": scores[i : i + 10].tolist()}
        for i in range(0, len(rows), 10)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def rows(adult_test_table: Any) -> list[dict[str, Any]]:
    return adult_test_table.drop_columns(["income"]).slice(0, 2000).to_pylist()  # type: ignore[no-any-return]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_windows_versions_and_json(project: Path, rows: list[dict[str, Any]]) -> None:
    write(project, "adult", requests(rows[:1000], T0), "2023-11-15")
    write(project, "adult", requests(rows[1000:], T0 + DAY), "2023-11-16")
    result = keel_cli("monitor", "adult", "--window", "1d", "--version", "1", "--role",
                      "primary", "--format", "json", cwd=project)  # fmt: skip
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 2000 and report["window"] == "1d"
    assert [w["rows"] for w in report["windows"]] == [1000, 1000]
    assert {c["column"] for c in report["columns"]} == set(rows[0]) - {"fnlwgt"}  # ignored
    column = report["columns"][0]
    assert {"psi", "js", "wasserstein", "p_value", "p_adjusted", "test", "verdict"} <= set(column)
    assert report["performance"]["method"] == "cbpe"
    assert report["windows"][0]["performance"]["roc_auc"] is not None
    text = keel_cli("monitor", "adult", "-w", "1000rows", cwd=project)
    assert (
        text.returncode == 0 and "est. roc_auc" in text.stdout and "verdict: stable" in text.stdout
    )
    every = keel_cli("monitor", "adult", "--version", "all", cwd=project)
    assert every.returncode == 0, every.stderr
    assert "drift report for adult (all versions; reference: @1's training)" in every.stdout
    assert json.loads(
        keel_cli("monitor", "adult", "--version", "all", "--format", "json", cwd=project).stdout
    )["all_versions"]
    unknown = keel_cli("monitor", "adult", "--window", "2 fortnights", cwd=project)
    assert unknown.returncode != 0 and "--window" in unknown.stderr and "1000rows" in unknown.stderr
    no_traceback(unknown)


def test_one_row_says_not_enough_data(project: Path, rows: list[dict[str, Any]]) -> None:
    write(project, "adult", requests(rows[:1], T0 + 60 * DAY), "2024-01-14")
    result = keel_cli("monitor", "adult", "--since", "2024-01-14", cwd=project)
    no_traceback(result)
    assert result.returncode == 0
    assert "1 rows" in result.stdout and "verdict: not_enough_data" in result.stdout
    body = result.stdout.split("training rows", 1)[1]  # past the "drift report" headline
    assert "stable" not in body and "drift" not in body


def test_none_of_the_columns_is_a_clear_message(project: Path) -> None:
    records = [{"request_id": "x", "time": T0 + 16 * DAY, "model": "adult", "model_version": "1",
                "inputs": [{"colour": "red"}] * 200, "predictions": ["<=50K"] * 200,
                "probabilities": [0.1] * 200}]  # fmt: skip
    write(project, "adult", records, "2023-12-01")
    result = keel_cli("monitor", "adult", "--since", "2023-12-01", "--until", "2023-12-02",
                      cwd=project)  # fmt: skip
    no_traceback(result)
    assert result.returncode != 0
    assert "none of the model's input columns" in result.stderr
    assert "stable" not in result.stdout and "drift" not in result.stdout


def test_a_mixed_type_log_is_read(project: Path, rows: list[dict[str, Any]]) -> None:
    mixed = [
        {**r, "age": str(r["age"]), "sex": r["sex"] if i % 3 else 1} for i, r in enumerate(rows)
    ]
    write(project, "adult", requests(mixed, T0 + 30 * DAY), "2023-12-15")
    result = keel_cli("monitor", "adult", "--since", "2023-12-15", "--until", "2024-01-01",
                      "-f", "json", cwd=project)  # fmt: skip
    no_traceback(result)
    report = json.loads(result.stdout)
    assert report["rows"] == 2000
    assert report["verdict"] in ("stable", "drift")  # a verdict from the converted values


def test_start_up_imports_no_training_libraries(project: Path) -> None:
    """Once CBPE's calibration is cached (the first run of a version scores its test set), a
    clean log is monitored without LightGBM, scikit-learn, SciPy or pandas."""
    keel_cli("monitor", "adult", "--until", "2023-11-17", cwd=project)
    assert list((project / ".keel" / "monitor").glob("*/calibration.json"))
    code = (
        "import sys\n"
        "from keel.cli import main\n"
        "sys.argv = ['keel', 'monitor', 'adult', '-f', 'json', '--until', '2023-11-17']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('lightgbm', 'sklearn', 'scipy', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]
