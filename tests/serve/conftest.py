from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel

ROW: dict[str, Any] = {
    "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors",
    "education-num": 13, "marital-status": "Never-married", "occupation": "Adm-clerical",
    "relationship": "Not-in-family", "race": "White", "sex": "Male", "capital-gain": 2174,
    "capital-loss": 0, "hours-per-week": 40, "native-country": "United-States",
}  # fmt: skip
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="session")
def adult_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with the Adult model trained and registered as adult@production."""
    root = keel.init(tmp_path_factory.mktemp("served") / "adult", example="adult")
    summary = keel.run(root)
    assert summary["model"]["promoted"]
    return root


def train_candidate(root: Path, module: str, source: str) -> int:
    """Train version 2 of the project at ``root`` with the custom feature ``module:age_copy``
    (``source`` is the module's code), registered under the alias ``candidate`` (not promoted;
    60 trees: quick), then put keel.yaml back. Returns the version."""
    (root / f"{module}.py").write_text(source)
    config = root / "keel.yaml"
    original = config.read_text()
    custom = (
        f"features:\n  custom:\n    - {{function: '{module}:age_copy', inputs: [age], "
        "output: age_copy, type: float}\n"
    )
    trained = (
        original.replace("features:\n", custom, 1)
        .replace("registry:\n  alias: production", "registry:\n  alias: candidate", 1)
        .replace("n_estimators: 600", "n_estimators: 60", 1)
    )
    config.write_text(trained)
    version = int(keel.run(root)["model"]["version"])
    config.write_text(original)
    return version


def copy_project(source: Path, target: Path, serve: str = "") -> Path:
    """A copy of a trained project (its own registry), with extra ``serve:`` settings."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("predictions"))
    config = target / "keel.yaml"
    text = config.read_text()
    if serve:
        text = text.replace("serve:\n", "serve:\n" + serve, 1)
    config.write_text(text)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def keel_serve(root: Path, *args: str, timeout: float = 60.0) -> Iterator[Served]:
    """``keel serve`` in its own process on 127.0.0.1, ready (polled with a deadline)."""
    port = free_port()
    log = root / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "serve", "--project", str(root),
             "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"keel serve exited with {process.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{url}/v2/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"keel serve not ready in {timeout:.0f} s: {log.read_text()}")
            time.sleep(0.05)
        yield Served(url, port, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
