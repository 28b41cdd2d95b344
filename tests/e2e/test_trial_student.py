"""A newcomer's trial on UCI Student Performance (a data set the other tests were not written
around): pass/fail from ``G3 >= 10`` with ``sensitive: [sex]``, and G3 itself by regression.

Each test here is a problem the trial hit, kept fixed: ``keel init --from`` sets G3 aside as a
leak of pass/fail (it trained to ROC AUC 1.0 on it), a column added to ``data.drop`` after the
first run (schema.yaml already reviewed) leaves the model, a misspelt ``drop`` or ``target`` is
a config error with the close name, a regression model with ``data.sensitive`` says that it
gets no fairness audit instead of skipping it silently, ``keel models show`` gives the fairness
audit, and ``keel deploy`` warns of a canary that reads an input its primary does not (its 422s
promoted it in the trial). One trained project, and one retrained from it, are shared.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "student-performance" / "student-por.csv"
FAST = {"n_estimators": 40, "learning_rate": 0.2, "num_leaves": 8}


def _edit(project: Path, change: Any) -> None:
    path = project / "keel.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _fast(config: dict[str, Any]) -> None:
    config["model"]["params"] = FAST
    config["data"]["sensitive"] = ["sex"]


def _statuses(summary: dict[str, Any]) -> dict[str, str]:
    return {step["step"]: step["status"] for step in summary["steps"]}


def _facts(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step["facts"] for step in summary["steps"] if step["step"] == name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`keel init --from` on the pass/fail file (G3 set aside as a leak), one run."""
    root = tmp_path_factory.mktemp("student")
    frame = pd.read_csv(DATA, sep=";")
    frame["pass"] = (frame["G3"] >= 10).map({True: "pass", False: "fail"})
    frame.to_csv(root / "student-pass.csv", index=False)
    made = init_from_file(root / "bin", root / "student-pass.csv", "pass")
    assert (made.task, made.dropped) == ("binary", ("G3",))
    said = " ".join(line.strip(" #") for line in made.config.read_text().splitlines())
    assert "G3 <= 9 for every 'fail', >= 10 for every 'pass'" in said
    _edit(made.directory, _fast)
    summary = keel.run(made.directory)
    assert summary["model"]["version"] == 1
    assert _facts(summary, "features")["inputs"] == 32  # 34 columns less pass and G3
    assert summary["model"]["metrics"]["roc_auc"] < 0.999  # not read off the grade it came from
    yield made.directory


@pytest.fixture(scope="module")
def retrained(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The trained project after the user adds G2 to data.drop (to predict pass/fail before
    the second-period grade exists) and runs again."""
    project = tmp_path_factory.mktemp("retrained") / "bin"
    shutil.copytree(trained, project)
    _edit(project, lambda c: c["data"].update(drop=["G3", "G2"]))
    return project, keel.run(project)


def test_a_column_dropped_after_the_first_run_leaves_the_model(
    trained: Path, retrained: tuple[Path, Any]
) -> None:
    project, summary = retrained
    statuses = _statuses(summary)
    assert statuses["schema"] == statuses["features"] == statuses["train"] == "succeeded"
    assert _facts(summary, "features")["inputs"] == 31
    assert summary["model"]["version"] == 2
    before = yaml.safe_load((trained / "schema.yaml").read_text())
    after = yaml.safe_load((project / "schema.yaml").read_text())
    assert "role" not in before["columns"]["G2"]  # a feature, the default
    dropped = {"role": "ignored", "role_before_drop": "feature"}  # the role it gets back
    assert after["columns"].pop("G2") == {**before["columns"].pop("G2"), **dropped}
    assert after == before  # nothing else touched
    again = keel.run(project)
    assert set(_statuses(again).values()) == {"cached"}


def test_deploy_warns_when_the_canary_reads_an_input_the_primary_does_not(
    retrained: tuple[Path, Any],
) -> None:
    project, _ = retrained  # v1 reads G2, v2 (production) does not
    cli = subprocess.run(
        [sys.executable, "-m", "keel.cli", "deploy", "bin", "--canary", "1", "-f", "json"],
        cwd=project, text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    warnings = json.loads(cli.stdout)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("v1 reads G2, which the primary v2")
    assert "fails its intervals and is rolled back" in warnings[0]
    keel.abort_deployment("bin", project=project)


def test_a_canary_refusing_what_clients_send_is_rolled_back(
    retrained: tuple[Path, Any], tmp_path: Path
) -> None:
    """The trial's finding: v1 needs G2, clients of v2 do not send it, so v1 answers 422 to
    its share. Those refusals are no 5xx, yet the canary must not be promoted: it refuses far
    more than the primary over the same interval, and the controller rolls it back."""
    from tests.serve.conftest import keel_serve

    project = tmp_path / "bin"
    shutil.copytree(retrained[0], project)
    frame = pd.read_csv(DATA, sep=";").drop(columns=["G2", "G3"]).head(20)
    rows = json.loads(frame.to_json(orient="records"))
    made = keel.deploy(
        "bin", canary=1, steps="50", interval="1s", check="error_rate<=0.01",
        min_requests=10, failures=1, project=project,
    )  # fmt: skip
    statuses: dict[int, int] = {}
    with keel_serve(project) as served, httpx.Client(timeout=10) as http:
        deadline = time.monotonic() + 60
        while keel.deployment_status(made["id"], project=project)["status"] == "active":
            assert time.monotonic() < deadline, "the canary was never judged"
            for row in rows:
                answer = http.post(f"{served.url}/v1/models/bin/predict", json={"instances": [row]})
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    status = keel.deployment_status(made["id"], project=project)
    assert status["status"] == "rolled_back", status["events"]
    assert set(statuses) == {200, 422} and statuses[422] > 0
    assert "rejection_rate" in status["reason"] and "above the primary's 0" in status["reason"]
    canary = next(t for t in status["traffic"] if t["role"] == "canary")
    assert canary["errors"] == 0 and canary["rejection_rate"] == 1.0


def test_a_misspelt_drop_entry_is_a_config_error_naming_the_column(
    trained: Path, tmp_path: Path
) -> None:
    project = tmp_path / "bin"
    shutil.copytree(trained, project)
    _edit(project, lambda c: c["data"].update(drop=["G3", "g2"]))
    with pytest.raises(ConfigError, match=r"data\.drop: 'g2' \(did you mean 'G2'\?\)"):
        keel.run(project)


def test_a_misspelt_target_suggests_the_column(trained: Path, tmp_path: Path) -> None:
    project = tmp_path / "bin"
    shutil.copytree(trained, project)
    _edit(project, lambda c: c["data"].update(target="Pass"))
    with pytest.raises(ConfigError, match=r"Did you mean 'pass'\?") as caught:
        keel.run(project)
    assert "more)" in caught.value.message  # 34 columns: the list says it was cut


def test_regression_with_sensitive_columns_says_there_is_no_fairness_audit(
    tmp_path: Path,
) -> None:
    made = init_from_file(tmp_path / "reg", DATA, "G3")
    text = made.config.read_text()
    assert made.task == "regression"
    assert "# sensitive:" not in text and "a regression model gets no fairness audit" in text
    _edit(made.directory, _fast)  # the user sets data.sensitive anyway
    summary = keel.run(made.directory)
    warnings = next(s["warnings"] for s in summary["steps"] if s["step"] == "evaluate")
    said = [w for w in warnings if "no fairness audit" in w]
    assert said and "they are in the slices" in said[0]  # init made sex a slice


def test_models_show_gives_the_fairness_audit_of_data_sensitive(trained: Path) -> None:
    shown = keel.api.show_model("bin@1", project=trained)
    audit = shown["versions"][0]["fairness"]["sex"]
    assert 0.0 <= audit["demographic_parity_difference"] <= 1.0
    assert set(audit) >= {"equalized_odds_difference", "equal_opportunity_ratio", "undefined"}
    cli = subprocess.run(
        [sys.executable, "-m", "keel.cli", "models", "show", "bin@1"],
        cwd=trained, text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    line = next(x for x in cli.stdout.splitlines() if x.strip().startswith("fairness sex:"))
    assert f"demographic_parity_difference={audit['demographic_parity_difference']:.4f}" in line
