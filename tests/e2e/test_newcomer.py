"""A newcomer's path: `keel init --from FILE` or `keel init --example NAME`, then `keel run`,
in a fresh directory, on the real datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = pytest.mark.e2e


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=600)  # fmt: skip


def run_json(project: Path) -> dict[str, object]:
    result = keel_cli("run", "--format", "json", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


@pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")
@pytest.mark.parametrize(
    ("file", "target", "metric"),
    [
        ("palmer-penguins/penguins.csv", "species", "accuracy"),
        ("student-performance/student-mat.csv", "higher", "roc_auc"),
        ("bike-sharing/day.csv", "cnt", "r2"),
    ],
)
def test_init_from_a_file_then_run(tmp_path: Path, file: str, target: str, metric: str) -> None:
    made = keel_cli("init", "project", "--from", str(SHARED / file), "--target", target,
                    cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    summary = run_json(tmp_path / "project")
    model = summary["model"]
    assert isinstance(model, dict)
    assert model["promoted"] is True  # the "better than a constant guess" gate passed
    assert model["metrics"][metric] is not None


@pytest.mark.parametrize(("example", "floor"), [("bike-sharing", 0.9), ("california-housing", 0.8)])
def test_example_then_run(tmp_path: Path, example: str, floor: float) -> None:
    made = keel_cli("init", "--example", example, "project", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    model = run_json(tmp_path / "project")["model"]
    assert isinstance(model, dict)
    assert model["promoted"] is True and model["metrics"]["r2"] >= floor
