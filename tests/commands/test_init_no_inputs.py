"""A target computed exactly from every other column: `keel init` sets them all aside as leaks.

init must say that no input is left (and how to keep one), and `keel run` must stop with a
ConfigError naming keel.yaml's data.drop (exit code 2, no traceback) rather than an IndexError
inside the train step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from keel.commands.init import init_from_file


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=180, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    a, b, c = rng.normal(size=(3, 300))
    path = tmp_path / "rows.csv"
    table = pa.table({"a": a, "b": b, "c": c, "y": a - 2 * b + 0.5 * c})
    pacsv.write_csv(table, path)
    return path


def test_init_warns_that_every_column_is_set_aside(rows: Path, tmp_path: Path) -> None:
    made = init_from_file(tmp_path / "p", rows, "y")
    assert made.dropped == ("a", "b", "c")
    [warning] = [w for w in made.warnings if "every column" in w]
    assert "'y'" in warning and "a, b, c" in warning
    assert "delete from drop:" in warning
    assert "every column but the target 'y' is set aside" in made.config.read_text()


def test_init_says_nothing_when_an_input_is_left(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    a, b, noise = rng.normal(size=(3, 300))
    path = tmp_path / "rows.csv"
    pacsv.write_csv(pa.table({"a": a, "b": b, "y": a + noise}), path)
    made = init_from_file(tmp_path / "p", path, "y")
    assert not [w for w in made.warnings if "every column" in w]


def test_run_without_inputs_is_a_config_error(rows: Path, tmp_path: Path) -> None:
    made = keel_cli("init", "p", "--from", str(rows), "--target", "y", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "every column but the target 'y' is set aside" in " ".join(made.stderr.split())
    ran = keel_cli("run", cwd=tmp_path / "p")
    said = " ".join((ran.stdout + ran.stderr).split())
    assert ran.returncode == 2, said
    assert "Traceback" not in said and "IndexError" not in said
    assert "no model inputs" in said
    assert "data.drop sets aside a, b, c" in said
    assert "delete a column's line from keel.yaml's data.drop" in said
