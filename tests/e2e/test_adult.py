"""The whole lifecycle on the real UCI Adult files, as a new user would drive it."""

from __future__ import annotations

import hashlib
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

import pandas as pd
import pyarrow.parquet as pq
import pytest

import keel
from keel.project import Project

pytestmark = pytest.mark.e2e

ROW: dict[str, Any] = {
    "age": 50, "workclass": "Self-emp-not-inc", "fnlwgt": 83311, "education": "Bachelors",
    "education-num": 13, "marital-status": "Married-civ-spouse", "occupation": "Exec-managerial",
    "relationship": "Husband", "race": "White", "sex": "Male", "capital-gain": 0,
    "capital-loss": 0, "hours-per-week": 13, "native-country": "United-States",
}  # fmt: skip


def keel_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                            capture_output=True, timeout=300)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e") / "adult"
    keel_cli("init", "--example", "adult", str(root), cwd=root.parent)
    return root


@pytest.fixture(scope="module")
def first_run(project: Path) -> dict[str, Any]:
    return dict(json.loads(keel_cli("run", "--format", "json", cwd=project).stdout))


@pytest.fixture(scope="module")
def server(project: Path, first_run: dict[str, Any]) -> Iterator[str]:
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
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def test_run_trains_a_good_model_and_promotes_it(first_run: dict[str, Any]) -> None:
    assert first_run["model"]["metrics"]["roc_auc"] >= 0.90
    assert first_run["model"]["promoted"] is True
    assert first_run["model"]["alias"] == "production"
    sex = first_run["steps"][7]["facts"]["metrics"]
    assert sex["rows"] == 16281


def test_second_run_is_all_cached(project: Path, first_run: dict[str, Any]) -> None:
    started = time.perf_counter()
    second = json.loads(keel_cli("run", "--format", "json", cwd=project).stdout)
    elapsed = time.perf_counter() - started
    assert [s["status"] for s in second["steps"]] == ["cached"] * len(first_run["steps"])
    assert elapsed < 10  # the acceptance target is < 2 s; benchmarks/ measures it properly
    text = keel_cli("run", cwd=project).stdout
    assert text.count("cached") >= len(first_run["steps"])


def test_models_list_and_show(project: Path, first_run: dict[str, Any]) -> None:
    listed = json.loads(keel_cli("models", "list", "--format", "json", cwd=project).stdout)
    assert listed["models"][0]["name"] == "adult"
    assert listed["models"][0]["aliases"] == {"production": 1}
    shown = json.loads(keel_cli("models", "show", "adult@production", "-f", "json",
                                cwd=project).stdout)  # fmt: skip
    version = shown["versions"][0]
    assert version["metrics"]["roc_auc"] >= 0.9
    with Project(project) as proj:
        data = proj.artifacts.get(version["package_sha256"])
    manifest = json.loads(data)
    assert manifest["name"] == "adult" and "model.lgb.txt" in manifest["files"]
    assert hashlib.sha256(data).hexdigest() == version["package_sha256"]
    assert set(manifest["metrics"]["slices"]) == {"sex", "race"}


def test_served_predictions_match_the_python_api(project: Path, server: str) -> None:
    status, body = post(f"{server}/v1/models/adult/predict", {"instances": [ROW]})
    assert status == 200
    model = keel.load_model("adult@production", project=project)
    assert body["probabilities"][0] == pytest.approx(model.predict_proba(pd.DataFrame([ROW]))[0])
    assert body["model_version"] == "1"


def test_server_rejects_bad_requests_with_422(server: str) -> None:
    missing = {k: v for k, v in ROW.items() if k != "occupation"}
    status, body = post(f"{server}/v1/models/adult/predict", {"instances": [missing]})
    assert status == 422 and body["field"] == "instances[0].occupation"
    status, body = post(f"{server}/v1/models/adult/predict", {"instances": [dict(ROW, age="5O")]})
    assert status == 422 and body["field"] == "instances[0].age" and "int" in body["message"]
    status, body = post(f"{server}/v1/models/adult/predict", {"instances": [dict(ROW, age=2.5)]})
    assert (
        status == 422 and body["message"] == "instances[0].age: float 2.5 is not an integer (int)."
    )
    # the same value as text is the same model input as the number
    status, text = post(f"{server}/v1/models/adult/predict", {"instances": [dict(ROW, age=" 50 ")]})
    status, number = post(f"{server}/v1/models/adult/predict", {"instances": [ROW]})
    assert text["probabilities"] == number["probabilities"]
    # a category never seen in training is scored, with a warning that names it
    status, body = post(
        f"{server}/v1/models/adult/predict", {"instances": [dict(ROW, race="Martian")]}
    )
    assert status == 200 and body["warnings"][0]["field"] == "instances[0].race"
    assert body["warnings"][0]["kind"] == "unseen_category"
    status, _ = post(f"{server}/v1/models/adult/predict", b"{oops")
    assert status == 422


def test_health_and_metrics_over_http(server: str) -> None:
    with urllib.request.urlopen(f"{server}/v2/health/live") as response:
        assert json.loads(response.read()) == {"live": True}
    with urllib.request.urlopen(f"{server}/metrics") as response:
        assert b"keel_request_duration_seconds_bucket" in response.read()


def test_monitor_reads_the_prediction_log(project: Path, server: str) -> None:
    test = pd.read_csv(project / "data" / "adult.test", skiprows=1, header=None,
                       skipinitialspace=True, na_values="?")  # fmt: skip
    test.columns = [*ROW, "income"]
    rows = test.drop(columns="income").head(300)
    records = json.loads(rows.to_json(orient="records"))
    for start in range(0, 300, 100):
        assert (
            post(f"{server}/v1/models/adult/predict", {"instances": records[start : start + 100]})[
                0
            ]
            == 200
        )
    time.sleep(1.5)  # the log flushes every 0.5 s
    result = keel_cli("monitor", "adult", "--format", "json", cwd=project, check=False)
    report = json.loads(result.stdout)
    assert report["rows"] >= 300
    assert report["verdict"] == "stable" and result.returncode == 0
    assert {c["column"] for c in report["columns"]} == set(ROW)


def test_monitor_flags_a_shifted_file(project: Path, tmp_path: Path, first_run: Any) -> None:
    test = pd.read_csv(project / "data" / "adult.test", skiprows=1, header=None,
                       skipinitialspace=True, na_values="?")  # fmt: skip
    test.columns = [*ROW, "income"]
    test["age"] = test["age"] + 20
    test.to_csv(tmp_path / "shifted.csv", index=False)
    result = keel_cli("monitor", "adult", "--input", str(tmp_path / "shifted.csv"), "-f", "json",
                      cwd=project, check=False)  # fmt: skip
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["drifted_columns"] == ["age"]


def test_batch_predict_matches_the_server(project: Path, tmp_path: Path, first_run: Any) -> None:
    pd.DataFrame([ROW] * 3).to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out.parquet"
    keel_cli("predict", "adult", "--input", str(tmp_path / "in.csv"), "--output", str(out),
             cwd=project)  # fmt: skip
    scored = pq.read_table(out).to_pandas()
    assert len(scored) == 3 and {"prediction", "probability", "model_version"} <= set(scored)
    model = keel.load_model("adult", project=project)
    assert scored["probability"].iloc[0] == pytest.approx(
        model.predict_proba(pd.DataFrame([ROW]))[0]
    )


def test_kill_9_mid_run_then_rerun_completes(tmp_path: Path) -> None:
    root = keel.init(tmp_path / "adult", example="adult")
    process = subprocess.Popen([sys.executable, "-m", "keel.cli", "run"], cwd=root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    db = root / ".keel" / "keel.db"
    while time.monotonic() < deadline and process.poll() is None:
        if db.exists() and _steps_started(root) >= 6:  # killed during features/train
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    summary = json.loads(keel_cli("run", "--format", "json", cwd=root).stdout)
    assert summary["model"]["promoted"]
    blobs = root / ".keel" / "artifacts"
    for path in blobs.rglob("*"):
        if path.is_file():
            assert not path.name.startswith(".tmp") or path.parent.name != path.name[:2]
    with Project(root) as project:
        for sha in project.artifacts.iter_hashes():
            assert hashlib.sha256(project.artifacts.get(sha)).hexdigest() == sha


def _steps_started(root: Path) -> int:
    try:
        with Project(root) as project:
            return len(project.metadata.list_runs(limit=100))
    except Exception:
        return 0
