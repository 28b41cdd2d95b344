"""Acceptance: for 1,000 adult.test rows, ``keel predict`` (batch) and the HTTP predict endpoint
(one row per request) return identical probabilities.

A new user's path: ``keel init --example adult``, ``keel run``, ``keel predict`` on a file, and
``keel serve`` answering one request per row on 127.0.0.1. The batch path transforms the table
column-wise; the server transforms each JSON row with ``transform_row``. Equal means ``==`` on
the float64 probabilities (JSON and Parquet both carry them exactly).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import keel
from keel.config import load_config
from keel.data import read_source

pytestmark = pytest.mark.e2e
ROWS = 1000


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, f"keel {' '.join(args)} -> {result.returncode}\n{result.stderr}"
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = keel.init(tmp_path_factory.mktemp("parity") / "adult", example="adult")
    assert keel.run(root)["model"]["promoted"]  # in-process: the CLI's own path is tested below
    return Path(root)


@pytest.fixture(scope="module")
def test_rows(project: Path) -> list[dict[str, Any]]:
    """The first 1,000 rows of adult.test as the user's file holds them, without the label."""
    config = load_config(project, env="")
    assert config.data.test is not None
    table = read_source(config.data.test, project).slice(0, ROWS).drop_columns(["income"])
    pq.write_table(table, project / "to_score.parquet")
    return table.to_pylist()


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "keel.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=project, start_new_session=True, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("keel serve did not become ready within 60 s")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def predict_one(base: str, row: dict[str, Any]) -> float:
    body = json.dumps({"instances": [row]}).encode()
    request = urllib.request.Request(
        f"{base}/v1/models/adult/predict",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        answer = json.loads(response.read())
    return float(answer["probabilities"][0])


def test_batch_and_http_probabilities_are_identical(
    project: Path, test_rows: list[dict[str, Any]], server: str
) -> None:
    keel_cli(
        "predict", "adult@production", "-i", "to_score.parquet", "-o", "scored.parquet",
        cwd=project,
    )  # fmt: skip
    batch = pq.read_table(project / "scored.parquet").column("probability").to_pylist()
    assert len(batch) == len(test_rows) == ROWS
    online = [predict_one(server, row) for row in test_rows]
    differing = [i for i, (b, o) in enumerate(zip(batch, online, strict=True)) if b != o]
    assert not differing, f"{len(differing)} rows differ, e.g. row {differing[0]}: " + (
        f"batch {batch[differing[0]]!r} vs http {online[differing[0]]!r}"
    )
    # the rows are real and varied: nulls included, probabilities spread over (0, 1)
    assert any(v is None for row in test_rows for v in row.values())
    assert min(batch) < 0.05 and max(batch) > 0.95
