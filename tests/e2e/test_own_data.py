"""Bring your own data: on each public dataset, `keel init`, `keel run`, `keel predict` on the
test split and `keel serve` over HTTP give identical predictions, bit for bit, and the metric
the evaluation step recorded; a value outside the declared type is a 422 naming the field
over HTTP and a line of the rejects file in batch."""

from __future__ import annotations

import csv
import json
import math
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

from keel.project import Project

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here"),
]
#: (name, how to create the project, target, a field and a value it must refuse)
CASES = [
    ("adult", ["--example", "adult"], "income", "age", "forty"),
    ("bike", ["--from", str(SHARED / "bike-sharing" / "day.csv")], "cnt", "temp", "warm"),
    ("housing", ["--from", str(SHARED / "california-housing" / "housing.csv")],
     "median_house_value", "median_income", "1e999"),
    ("students", ["--from", str(SHARED / "student-performance" / "student-mat.csv")], "higher",
     "romantic", "banana"),
    ("penguins", ["--from", str(SHARED / "palmer-penguins" / "penguins_raw.csv")], "Species",
     "Clutch Completion", "Maybe"),
]  # fmt: skip
HTTP_ROWS = 1000


def keel_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                            capture_output=True, timeout=600)  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if check:
        assert result.returncode == 0, f"keel {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body, allow_nan=False).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module", params=CASES, ids=[case[0] for case in CASES])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name, how, target, field, bad = request.param
    root = tmp_path_factory.mktemp(name)
    args = ["init", str(root / name), *how]
    if how[0] == "--from":
        args += ["--target", target]
    keel_cli(*args, cwd=root)
    project = root / name
    summary = json.loads(keel_cli("run", "--format", "json", cwd=project).stdout)
    return project, summary, target, field, bad


def _test_split(project: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The test snapshot `keel run` evaluated on, and the production version's metrics."""
    with Project(project) as proj:
        version = proj.metadata.resolve(f"{proj.config.model.name}@production")
        runs = proj.metadata.list_runs(step="evaluate")  # the newest first
        sha256 = runs[0].inputs["test_snapshot"]
        table = pq.read_table(proj.artifacts.local_path(sha256))
        return table, dict(version.metrics)


@pytest.fixture(scope="module")
def server(trained: Any) -> Iterator[str]:
    project = trained[0]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [sys.executable, "-m", "keel.cli", "serve", "--port", str(port), "--no-log"]
    process = subprocess.Popen(command, cwd=project, start_new_session=True, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the server did not become ready in 60 s"
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)  # polling readiness, bounded by the deadline
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def _metric(task: str, y: list[Any], scored: pa.Table, classes: list[str]) -> tuple[str, float]:
    if task == "regression":
        predicted = scored.column("prediction").to_numpy()
        return "r2", float(r2_score(np.asarray(y, dtype=float), predicted))
    if task == "binary":
        positive = scored.column("probability").to_numpy()
        truth = [str(v) == classes[1] for v in y]
        return "roc_auc", float(roc_auc_score(truth, positive))
    labels = [str(v) for v in scored.column("prediction").to_pylist()]
    return "accuracy", float(accuracy_score([str(v) for v in y], labels))


def _inputs(server: str, name: str) -> list[str]:
    """The model's input fields, from its Open Inference Protocol metadata."""
    with urllib.request.urlopen(f"{server}/v2/models/{name}", timeout=10) as response:
        return [field["name"] for field in json.loads(response.read())["inputs"]]


def _json_value(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def test_batch_http_and_evaluation_agree(trained: Any, server: str, tmp_path: Path) -> None:
    project, summary, target, _, _ = trained
    test, metrics = _test_split(project)
    name = summary["model"]["name"]
    inputs = tmp_path / "test.parquet"
    pq.write_table(test.drop_columns([target]), inputs)
    keel_cli("predict", name, "--input", str(inputs), "--output", str(tmp_path / "out.parquet"),
             cwd=project)  # fmt: skip
    scored = pq.read_table(tmp_path / "out.parquet")
    assert scored.num_rows == test.num_rows
    show = json.loads(keel_cli("models", "show", name, "--format", "json", cwd=project).stdout)
    with Project(project) as proj:
        task = proj.config.model.task
    assert show["versions"][0]["metrics"] == metrics
    classes = sorted({str(v) for v in test.column(target).to_pylist() if v is not None})
    if task == "binary":  # the positive class is the label of P >= 0.5
        high = [p >= 0.5 for p in scored.column("probability").to_pylist()]
        labels = scored.column("prediction").to_pylist()
        positive = next((str(lab) for lab, h in zip(labels, high, strict=True) if h), None)
        negative = next((str(lab) for lab, h in zip(labels, high, strict=True) if not h), None)
        positive = positive or next(c for c in classes if c != negative)
        classes = [next(c for c in classes if c != positive), positive]
    key, value = _metric(task, test.column(target).to_pylist(), scored, classes)
    assert value == pytest.approx(metrics[key], abs=1e-9), (key, value, metrics)
    # the same rows over HTTP, as JSON: identical predictions, bit for bit
    rows = [
        {k: _json_value(v) for k, v in row.items()}
        for row in test.select(_inputs(server, name)).slice(0, HTTP_ROWS).to_pylist()
    ]
    for start in range(0, len(rows), 250):
        status, body = post(f"{server}/v1/models/{name}/predict",
                            {"instances": rows[start : start + 250]})  # fmt: skip
        assert status == 200, body
        got = body["predictions"] if task == "regression" else body["probabilities"]
        column = "prediction" if task == "regression" else None
        if column is None:
            column = "probability" if task == "binary" else None
        if column is not None:
            expected = scored.column(column).slice(start, len(got)).to_pylist()
            assert got == expected  # floats through JSON round-trip exactly (shortest repr)
        else:
            names = [c for c in scored.column_names if c.startswith("probability_")]
            expected = [
                [scored.column(c)[i].as_py() for c in names] for i in range(start, start + len(got))
            ]
            assert got == expected
        labels = scored.column("prediction").slice(start, len(got)).to_pylist()
        assert body["predictions"] == labels


def test_a_value_outside_its_type_is_refused_by_name(
    trained: Any, server: str, tmp_path: Path
) -> None:
    project, summary, target, field, bad = trained
    test, _ = _test_split(project)
    name = summary["model"]["name"]
    first = test.select(_inputs(server, name)).slice(0, 1).to_pylist()[0]
    row = {k: _json_value(v) for k, v in first.items()}
    status, body = post(f"{server}/v1/models/{name}/predict", {"instances": [row | {field: bad}]})
    assert status == 422 and body["field"] == f"instances[0].{field}", body
    assert repr(bad) in body["message"]
    # in batch, the row goes to the rejects file with its line; the others are scored
    path = tmp_path / "bad.csv"
    head = test.drop_columns([target]).slice(0, 5)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=head.column_names)
        writer.writeheader()
        for i, record in enumerate(head.to_pylist()):
            writer.writerow(record | ({field: bad} if i == 2 else {}))
    result = keel_cli("predict", name, "-i", str(path), "-o", str(tmp_path / "bad.parquet"),
                      "--format", "json", cwd=project)  # fmt: skip
    report = json.loads(result.stdout)
    assert report["rows"] == 4 and report["rejected"] == 1
    with open(report["rejects"], encoding="utf-8") as handle:
        rejects = list(csv.DictReader(handle))
    # the value as the file was read: "1e999" in a number column reads as inf
    assert [(r["line"], r["field"]) for r in rejects] == [("4", field)]
    assert rejects[0]["value"] in (bad, "inf") and rejects[0]["reason"]
