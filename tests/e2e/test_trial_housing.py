"""A new user's trial of the production half on California housing (regression) and Palmer
penguins (multiclass): serve, feed labels back, monitor, alert, retrain, explain.

Each test here is a problem the trial hit, kept fixed: the model card printed category values
such as ``<1H OCEAN`` as raw HTML (the template's autoescape never matched ``card.html.j2``),
the monitoring report of the whole log as one window said "No labelled windows yet" beside 300
labels, a ``retrain:`` rule that fired in a check without ``--retrain`` could never run its
policy afterwards (and nothing said so), ``keel explain`` refused the ``NA`` cells that ``keel
predict`` reads as missing with the training source's ``na_values``, a bad ``retrain.on`` was
reported at keel.yaml's line 3 as ``: Value error, ...``, ``keel monitor NAME --role canary``
found nothing (the arm logs under its own version) without saying why, ``--ab`` weights are
scaled to 100 % without --help saying so, and a multiclass model's monitor said nothing about
why it has no CBPE estimate. One trained housing project (2,000 rows) is shared.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.config import load_config
from keel.errors import ConfigError
from tests.serve.conftest import keel_serve

DATA = Path("/work/shared/data")
HOUSING = DATA / "california-housing" / "housing.csv"
PENGUINS = DATA / "palmer-penguins" / "penguins.csv"
FAST = {"n_estimators": 40, "learning_rate": 0.2, "num_leaves": 8}
LABELLED = 150

pytestmark = pytest.mark.skipif(
    not (HOUSING.exists() and PENGUINS.exists()), reason="needs /work/shared/data"
)


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _edit(project: Path, change: Any) -> None:
    path = project / "keel.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _policy(config: dict[str, Any]) -> None:
    config["model"]["params"] = FAST
    config["monitor"] = {
        "alerts": [
            {"name": "rmse-high", "when": "performance.rmse.realised > 1"},
            {"name": "traffic", "when": "rows > 10"},
        ]
    }
    config["retrain"] = {
        "on": "rmse-high",
        "data": {"labelled_since": "30d", "min_rows": 50},
        "then": "canary",
        "steps": "50,100",
        "interval": "1m",
    }


def _instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.drop(columns="median_house_value").to_dict("records")
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in rows]  # fmt: skip


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """2,000 housing rows (missing bedrooms spelt NA), `keel init --from`, one run, and 150
    served predictions with their labels fed back over HTTP."""
    root = tmp_path_factory.mktemp("housing")
    frame = pd.read_csv(HOUSING).sample(n=2000, random_state=0)
    frame.to_csv(root / "housing.csv", index=False, na_rep="NA")
    made = init_from_file(root / "housing", root / "housing.csv", "median_house_value")
    assert made.task == "regression"
    assert load_config(made.directory).data.train.na_values == ["NA"]
    _edit(made.directory, _policy)
    assert keel.run(made.directory)["model"]["version"] == 1
    served = frame.head(LABELLED)
    with keel_serve(made.directory) as server, httpx.Client(base_url=server.url) as http:
        ids = []
        for instance in _instances(served):
            answer = http.post("/v1/models/housing/predict", json={"instances": [instance]})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])
        labels = [{"request_id": i, "label": float(y)}
                  for i, y in zip(ids, served["median_house_value"], strict=True)]  # fmt: skip
        fed = http.post("/v1/models/housing/feedback", json={"labels": labels})
        assert fed.status_code == 200 and fed.json()["counts"]["accepted"] == LABELLED
    yield made.directory


def test_the_card_escapes_category_values(housing: Path) -> None:
    """`<1H OCEAN` is text in a cell, not the start of a tag; the charts stay SVG."""
    for fresh in (False, True):
        html = keel.model_card("housing", project=housing, fresh=fresh)
        assert "<td>&lt;1H OCEAN</td>" in html
        assert "<td><1H OCEAN" not in html and "=<1H OCEAN&" not in html
        assert "<svg" in html and "&lt;svg" not in html
    markdown = keel.model_card("housing", "md", project=housing)
    assert "| &lt;1H OCEAN |" in markdown and "<1H OCEAN" not in markdown  # raw HTML passes


def test_the_whole_log_report_shows_its_realised_performance(housing: Path) -> None:
    report = housing / "report.html"
    done = keel_cli("monitor", "housing", "--report", str(report), root=housing)
    assert done.returncode in (0, 1), done.stderr
    page = report.read_text()
    realised = page.split('<section id="realised-performance">')[1].split("</section>")[0]
    assert f"From {LABELLED} labelled rows: mae " in realised and "rmse " in realised
    assert "No labelled windows yet" not in realised
    assert "<th>windows</th><td>the whole log</td>" in page
    assert "no latency figures" not in page  # the figures of the whole log follow


def test_explain_reads_the_na_cells_that_predict_reads(housing: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(HOUSING)
    rows = pd.concat([frame[frame["total_bedrooms"].isna()].head(2), frame.head(2)])
    rows.to_csv(tmp_path / "rows.csv", index=False, na_rep="NA")
    done = keel_cli("explain", "housing", "-i", str(tmp_path / "rows.csv"), "--format", "json",
                    root=housing)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["rejected"] == 0 and answer["lines"] == [2, 3, 4, 5]
    assert "not a finite number" not in done.stderr


def test_a_bad_retrain_rule_is_named_at_its_line(housing: Path, tmp_path: Path) -> None:
    shutil.copy(housing / "keel.yaml", tmp_path / "keel.yaml")
    lines = (tmp_path / "keel.yaml").read_text().splitlines()
    line = 1 + next(
        n for n, t in enumerate(lines) if t.strip() in ("on: rmse-high", "'on': rmse-high")
    )
    lines[line - 1] = lines[line - 1].replace("rmse-high", "alert")
    (tmp_path / "keel.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    message = str(caught.value)
    assert f"keel.yaml:{line}: retrain.on names the alert rule 'alert'" in message
    assert "Value error" not in message and ": :" not in message


def test_a_policy_alert_fired_without_retrain_can_still_run_it(housing: Path) -> None:
    """Runs last: it retrains (version 2) and starts a canary."""
    first = keel_cli("monitor", "run", "housing", root=housing)
    assert first.returncode == 0, first.stderr
    alerts = json.loads(keel_cli("alerts", "list", "--format", "json", root=housing).stdout)
    ids = {a["rule"]: a["id"] for a in alerts}
    said = " ".join(first.stdout.split())
    assert f"runs only with --retrain: keel alerts retrain {ids['rmse-high']}" in said
    again = keel_cli("monitor", "run", "housing", "--retrain", root=housing)
    said = " ".join(again.stdout.split())
    assert "fired for this window in an earlier check" in said
    assert "keel alerts retrain ID" in said
    wrong = keel_cli("alerts", "retrain", str(ids["traffic"]), root=housing)
    assert wrong.returncode == 1
    assert "is of the rule keel.yaml's retrain.on names" in " ".join(wrong.stderr.split())
    done = keel_cli("alerts", "retrain", str(ids["rmse-high"]), "--format", "json", root=housing)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["status"] == "canary" and result["version"] == 2
    assert result["alert_id"] == ids["rmse-high"]
    # no data.test: the split's rule sends a share of the labelled rows to the test side
    sides = result["rows_added"] + result["rows_to_test"] + result["rows_equal_to_test"]
    assert sides == LABELLED and 0 < result["rows_to_test"] < LABELLED / 2
    assert keel.api.list_deployments(project=housing)[0]["kind"] == "canary"
    # `housing` is version 1 (production); the canary's rows are logged under version 2
    canary = keel_cli("monitor", "housing", "--role", "canary", "--format", "json", root=housing)
    notes = json.loads(canary.stdout)["notes"]
    assert any("an arm's predictions are logged under its own version" in n for n in notes)


def test_ab_weights_are_relative_as_the_help_says(housing: Path) -> None:
    """`--ab 1:1,2:3` (after the canary above is aborted) splits 25/75, as --help now says."""
    assert "weights are relative" in " ".join(
        keel_cli("deploy", "--help", root=housing).stdout.split()
    )
    keel_cli("deployments", "abort", "housing", root=housing)
    done = keel_cli("deploy", "housing", "--ab", "1:1,2:3", "--format", "json", root=housing)
    assert done.returncode == 0, done.stderr
    assert [a["weight"] for a in json.loads(done.stdout)["arms"]] == [25.0, 75.0]
    assert keel_cli("deployments", "abort", "housing", root=housing).returncode == 0


def test_a_multiclass_monitor_says_why_it_has_no_estimate(tmp_path: Path) -> None:
    made = init_from_file(tmp_path / "penguins", PENGUINS, "species")
    assert made.task == "multiclass"
    _edit(made.directory, lambda c: c["model"].update(params=FAST))
    keel.run(made.directory)
    frame = pd.read_csv(PENGUINS).sample(n=120, random_state=0).drop(columns="species")
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in frame.to_dict("records")]  # fmt: skip
    with keel_serve(made.directory) as server:
        answer = httpx.post(f"{server.url}/v1/models/penguins/predict", json={"instances": rows})
        assert answer.status_code == 200, answer.text
    done = keel_cli("monitor", "penguins", "--format", "json", root=made.directory)
    report = json.loads(done.stdout)
    assert report["rows"] == 120 and report["performance"] is None
    assert any("CBPE estimates a binary classifier's" in n for n in report["notes"])
