"""Issue 15's acceptance flow on California housing: two trained versions, a promotion that
needs one approval (refused without it, done with it), a running server that follows a CLI
rollback without a restart, the audit trail in order, and lineage from a served request back to
the data snapshots."""

from __future__ import annotations

import csv
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

import pytest

import keel

pytestmark = pytest.mark.e2e
MODEL = "california-housing"


def cli(root: Path, *args: str, actor: str = "alice") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_ACTOR": actor}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=root, text=True,
                          capture_output=True, timeout=300, env=env)  # fmt: skip


def cli_json(root: Path, *args: str, actor: str = "alice") -> Any:
    done = cli(root, *args, "--format", "json", actor=actor)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def predict(base: str, instance: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"instances": [instance]}).encode()
    request = urllib.request.Request(f"{base}/v1/models/{MODEL}/predict", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        answer["header_version"] = response.headers.get("Keel-Model-Version")
        return answer


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(keel.init(tmp_path_factory.mktemp("registry-e2e") / "housing",
                          example="california-housing"))  # fmt: skip
    config = root / "keel.yaml"
    config.write_text(config.read_text().replace("n_estimators: 2000", "n_estimators: 150"))
    first = cli(root, "run")
    assert first.returncode == 0, first.stderr
    # version 2: other parameters, and production now needs one approval
    text = config.read_text().replace("num_leaves: 63", "num_leaves: 15")
    approvals = "registry:\n  alias: production\n  approvals: {production: 1}\n"
    text = text.replace("registry:\n  alias: production\n", approvals)
    config.write_text(text)
    return root


@pytest.fixture(scope="module")
def instance(project: Path) -> dict[str, Any]:
    with (project / "data" / "housing-test.csv").open() as handle:
        row = next(csv.DictReader(handle))
    row.pop("median_house_value")
    return {k: (v if k == "ocean_proximity" else float(v)) for k, v in row.items()}


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "keel.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=project, start_new_session=True,
                               stderr=subprocess.PIPE)  # fmt: skip
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
                time.sleep(0.1)  # polling readiness, with the deadline above
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def test_promotion_waits_for_an_approval_from_someone_else(project: Path) -> None:
    second = cli(project, "run")
    assert second.returncode == 0, second.stderr
    assert "awaits approval: request" in second.stdout
    request_id = second.stdout.split("awaits approval: request ")[1].split()[0]
    assert cli_json(project, "models", "list")["models"][0]["aliases"] == {"production": 1}
    own = cli(project, "models", "approve", request_id)
    assert own.returncode == 1 and "cannot approve it" in own.stderr
    assert cli_json(project, "models", "list")["models"][0]["aliases"] == {"production": 1}
    done = cli_json(project, "models", "approve", request_id, "-m", "r2 holds", actor="bob")
    assert done["status"] == "applied"
    assert cli_json(project, "models", "list")["models"][0]["aliases"] == {"production": 2}


def test_a_rollback_reaches_the_running_server_without_a_restart(
    project: Path, server: str, instance: dict[str, Any]
) -> None:
    before = predict(server, instance)
    assert str(before["model_version"]) == "2" and before["header_version"] == "2"
    back = cli_json(project, "models", "rollback", MODEL, "--reason", "v2 regressed",
                    actor="carol")  # fmt: skip
    assert (back["previous_version"], back["version"]) == (2, 1)
    deadline, answers = time.monotonic() + 10, []
    while time.monotonic() < deadline:  # every request answered, by 2 and then by 1
        answers.append(str(predict(server, instance)["model_version"]))
        if answers[-1] == "1":
            break
    assert answers[-1] == "1", f"still answering with version {answers[-1]} after 10 s"
    assert set(answers) <= {"1", "2"} and answers == sorted(answers, reverse=True)

    audit = cli_json(project, "audit", "--target", MODEL)["entries"]
    actions = [(e["action"], e["actor"]) for e in reversed(audit)]
    assert actions[-4:] == [
        ("register", "alice"),
        ("request_promotion", "alice"),
        ("promote", "bob"),
        ("rollback", "carol"),
    ]


def test_a_served_request_traces_up_to_its_data_snapshots(
    project: Path, server: str, instance: dict[str, Any]
) -> None:
    request_id = predict(server, instance)["request_id"]
    deadline = time.monotonic() + 10
    while True:  # the prediction log is written every half second
        traced = cli(project, "lineage", request_id, "--up", "--format", "json")
        if traced.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert traced.returncode == 0, traced.stderr
    graph = json.loads(traced.stdout)
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert kinds[f"prediction:{request_id}"] == "prediction"
    assert f"version:{MODEL}@1" in kinds
    snapshots = [n for n in graph["nodes"] if n["kind"] == "snapshot"]
    assert {n["attributes"]["split"] for n in snapshots} == {"train", "test"}
    assert all(len(n["sha256"]) == 64 for n in snapshots)
