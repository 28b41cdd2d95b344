"""Acceptance: a plug-in package installed in the environment adds a trainer flavor (``ridge``)
and a task (``ordinal``) without touching Keel's code, and ``keel run`` trains, evaluates and
registers a model with them; the package predicts through the plug-in's task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from ..plugins import install_plugin

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
GRADES = SHARED / "student-performance" / "student-por.csv"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not GRADES.exists(), reason="the shared datasets are not here"),
]
KEEL_YAML = f"""\
project: grades
data:
  train:
    path: {GRADES}
  target: G3
  drop: [G1, G2]
model:
  name: grades
  flavor: ridge
  task: ordinal
  params:
    alpha: 10.0
evaluate:
  gates:
    - within_one >= 0.3
"""


def keel_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, env=env,
                            text=True, capture_output=True, timeout=600)  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 0, f"keel {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], dict[str, str]]:
    site = install_plugin(tmp_path_factory.mktemp("plugin"))
    project = tmp_path_factory.mktemp("grades")
    (project / "keel.yaml").write_text(KEEL_YAML)
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    summary = json.loads(keel_cli("run", "--format", "json", cwd=project, env=env).stdout)
    return project, summary, env


@pytest.fixture
def on_path(
    trained: tuple[Path, dict[str, Any], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installed plug-in importable in this process too (for reading the project)."""
    monkeypatch.syspath_prepend(trained[2]["PYTHONPATH"].split(os.pathsep)[0])


def test_keel_run_trains_and_registers_with_the_plugin(
    trained: tuple[Path, dict[str, Any], dict[str, str]], on_path: None
) -> None:
    project = trained[0]
    from keel.project import Project
    from keel.registry.package import MANIFEST

    with Project(project) as opened:
        version = opened.metadata.resolve("grades@production")
        manifest = orjson.loads(opened.artifacts.get(version.package_sha256))
    assert (manifest["flavor"], manifest["task"], manifest["format"]) == (
        "ridge", "ordinal", "keel-model/1")  # fmt: skip
    assert manifest["model_file"] == "ridge.json" and MANIFEST == "keel-model.json"
    assert int(manifest["classes"][0]) < int(manifest["classes"][-1])  # ranked as numbers
    assert manifest["signature"]["outputs"] == [
        {"name": "prediction", "type": "string", "classes": manifest["classes"]}
    ]
    metrics = manifest["metrics"]
    assert {"mae", "accuracy", "within_one"} <= set(metrics)  # the plug-in task's metrics
    assert 0 < metrics["mae"] < 3.0 and metrics["within_one"] > 0.3
    assert version.metrics["mae"] == metrics["mae"]


def test_the_registered_model_answers_through_the_plugin_task(
    trained: tuple[Path, dict[str, Any], dict[str, str]],
) -> None:
    project, _, env = trained
    script = (
        "import json, sys\n"
        "from keel.project import Project\n"
        "from keel.registry.package import ModelPackage\n"
        "with Project(sys.argv[1]) as p:\n"
        "    v = p.metadata.resolve('grades@production')\n"
        "    pkg = ModelPackage.load(p.artifacts, v.package_sha256)\n"
        "    row = {k: None for k in pkg.pipeline.inputs}\n"
        "    out = [type(pkg.model).__module__, pkg.predict_rows([row]), pkg.classes]\n"
        "    print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(project)], env=env, text=True,
                          capture_output=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    module, (labels, probabilities), classes = json.loads(done.stdout)
    assert module == "keel_example_plugin.ridge"
    assert probabilities is None and len(labels) == 1 and labels[0] in classes


def test_without_the_plugin_the_project_names_the_missing_flavor(
    trained: tuple[Path, dict[str, Any], dict[str, str]],
) -> None:
    project, _, _ = trained
    env = dict(os.environ)  # this process's environment: the plug-in is not on its path
    result = subprocess.run([sys.executable, "-m", "keel.cli", "run"], cwd=project, env=env,
                            text=True, capture_output=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert "keel.yaml:9" in output and "'ridge'" in output and "keel.trainers" in output
