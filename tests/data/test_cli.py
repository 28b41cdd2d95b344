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
