"""`keel data ingest | list | show` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = keel.init(tmp_path_factory.mktemp("cli") / "adult", example="adult")
    assert isinstance(root, Path)
    return root


def test_ingest_list_show(project: Path) -> None:
    ingested = keel_cli("data", "ingest", "--format", "json", cwd=project)
    assert ingested.returncode == 0, ingested.stderr
    result = json.loads(ingested.stdout)
    assert result["train"]["rows"] == 32561 and result["test"]["rows"] == 16281
    assert result["train"]["bad_rows"] == 0 and result["train"]["quarantine"] is None

    listed = json.loads(keel_cli("data", "list", "-f", "json", cwd=project).stdout)
    shas = {s["sha256"]: s for s in listed["snapshots"]}
    assert shas[result["train"]["snapshot"]]["split"] == "train"

    prefix = result["test"]["snapshot"][:10]
    shown = keel_cli("data", "show", prefix, "-f", "json", cwd=project)
    details = json.loads(shown.stdout)
    assert details["rows"] == 16281 and details["source"] == "data/adult.test"
    assert {"name": "age", "type": "int64", "nullable": True} in details["columns"]
    assert len(details["head"]) == 5 and details["head"][0]["income"] == "<=50K"

    text = keel_cli("data", "show", prefix, cwd=project).stdout
    assert (
        result["test"]["snapshot"] in text and "education" in text and "Machine-op-inspct" in text
    )
    assert details["dialect"]["delimiter"] == "," and details["dialect"]["header"] is False
    assert "dialect: encoding=utf-8 delimiter=',' header=no" in text


def test_ingest_one_split_text(project: Path) -> None:
    done = keel_cli("data", "ingest", "--split", "train", cwd=project)
    assert done.returncode == 0
    assert done.stdout.startswith("train: snapshot ") and "32561 rows" in done.stdout
    assert "test:" not in done.stdout


def test_too_many_bad_rows_exit_1_without_traceback(project: Path) -> None:
    data = project / "data" / "adult.data"
    original = data.read_bytes()
    try:
        data.write_bytes(original.rstrip(b"\n") + b"\n1, 2, 3\n")
        failed = keel_cli("data", "ingest", "--split", "train", cwd=project)
    finally:
        data.write_bytes(original)
    assert failed.returncode == 1
    assert "bad row(s)" in failed.stderr and "adult.data:32562: MISSING COLUMNS" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_show_unknown_snapshot_is_an_error(project: Path) -> None:
    failed = keel_cli("data", "show", "abcdef123456", cwd=project)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr


def test_ingest_warns_of_new_rows_with_a_null_watermark(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text(
        "project: p\n"
        "data:\n"
        "  train: {path: e.csv, incremental: {column: at}}\n"
        "  target: y\n"
        "model: {name: p}\n"
    )
    events = tmp_path / "e.csv"
    events.write_text("id,at,y\n1,2024-01-01 10:00:00,a\n2,,b\n")
    first = keel_cli("data", "ingest", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 rows (2 new), 0 bad" in first.stdout and first.stderr == ""
    with events.open("a") as handle:
        handle.write("3,2024-01-02 10:00:00,c\n4,,d\n")
    second = keel_cli("data", "ingest", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "3 rows (1 new), 0 bad, 1 skipped (NULL watermark)" in second.stdout
    warning = " ".join(second.stderr.split())
    assert warning.startswith("warning: data.train (e.csv): 1 new row(s) with no value (NULL)")
    assert "watermark column 'at' were not taken" in warning and "without 'incremental'" in warning

    again = json.loads(keel_cli("data", "ingest", "-f", "json", cwd=tmp_path).stdout)
    assert again["train"]["skipped_null_watermark"] == 0 and again["train"]["warnings"] == []
    shown = keel_cli("data", "show", again["train"]["snapshot"][:10], cwd=tmp_path).stdout
    assert "watermark: at = 2024-01-02 10:00:00 (2 source row(s) NULL, 1 new one(s) skipped)" in (
        shown
    )
