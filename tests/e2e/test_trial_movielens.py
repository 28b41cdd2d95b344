"""A new user's trial of the whole lifecycle on MovieLens 100k: ratings joined with the users'
and the movies' attributes, `liked` = rating >= 4, a time split on the rating's date.

Each test is a problem the trial hit, kept fixed: a labels file with an `instance` column (the
name the HTTP items use) had every row read as the first instance of its request, so all but
one label per request were rejected as duplicates, and an `--instance-column` the file lacks
was ignored the same way; `keel monitor NAME --arms` took the oldest version's primary as its
baseline instead of the version in service; a deployment refused with "already holds
NAME@candidate" without saying that registry.alias, not what `keel serve` serves, is its
primary; a regression model with a classifier's gate (`accuracy > 0.34`, as `keel init` wrote
for the multiclass reading of the same target) trained for a minute before the gate failed
with "no metric"; fixing a failed gate and rerunning said "model unchanged" and left the old
version in service (and a rerun after a rollback printed "gates failed" beside passing gates);
the server logged its routing as a Python dict; a `keel monitor --since` that selects no row
gave every feature a PSI of 7-9; and five tables (`keel runs show` of a pipeline run, the
drift, operations and arms tests of `keel monitor`, `keel deployments list`) cut their values
or headers at 80 columns.

MovieLens may not be redistributed: the test reads it from ../shared/data/movielens-100k/
beside the repository and is skipped without it.
"""

from __future__ import annotations

import json
import os
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
from keel.config import load_config
from keel.errors import ConfigError, ConflictError
from keel.project import Project
from tests.serve.conftest import keel_serve

MOVIELENS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens-100k"
ROWS = 3000  # the first ratings in time: enough for a model, quick to train
FAST = {"n_estimators": 40, "learning_rate": 0.2, "num_leaves": 8}
PER_REQUEST = 10

pytestmark = pytest.mark.skipif(
    not (MOVIELENS / "u.data").exists(), reason=f"needs MovieLens 100k in {MOVIELENS}"
)


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def ratings_table() -> pd.DataFrame:
    """What a user builds: ratings joined with user and movie attributes, oldest first."""
    genres = [line.split("|")[0] for line in (MOVIELENS / "u.genre").read_text().splitlines()]
    genres = [g for g in genres if g]
    ratings = pd.read_csv(MOVIELENS / "u.data", sep="\t",
                          names=["user_id", "item_id", "rating", "timestamp"])  # fmt: skip
    users = pd.read_csv(MOVIELENS / "u.user", sep="|",
                        names=["user_id", "age", "gender", "occupation", "zip"])  # fmt: skip
    items = pd.read_csv(
        MOVIELENS / "u.item", sep="|", encoding="latin-1",
        names=["item_id", "title", "release_date", "video_release_date", "imdb_url", *genres],
    )  # fmt: skip
    items = items.drop(columns=["video_release_date", "imdb_url"])
    table = ratings.merge(users, on="user_id").merge(items, on="item_id")
    table["rated_at"] = pd.to_datetime(table["timestamp"], unit="s")
    table["release_year"] = pd.to_datetime(table["release_date"], format="%d-%b-%Y").dt.year
    table = table.drop(columns=["release_date"]).sort_values(["timestamp", "user_id", "item_id"])
    return table.head(ROWS).reset_index(drop=True)


def _edit(project: Path, change: Any) -> None:
    path = project / "keel.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _time_split(config: dict[str, Any]) -> None:
    config["model"]["params"] = FAST
    config["split"] = {"method": "time", "column": "rated_at"}
    config["monitor"] = {"min_rows": 20}  # the arms below have 30 and 60 labels


def _serve_and_label(root: Path, frame: pd.DataFrame, labels: Path) -> list[str]:
    """Serve the project, post `frame` in requests of PER_REQUEST rows, and write the labels
    file a user would: request_id, instance, label. The answering versions come back."""
    rows = []
    versions = []
    instances = json.loads(frame.drop(columns="liked").to_json(orient="records"))
    with keel_serve(root) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        for start in range(0, len(instances), PER_REQUEST):
            chunk = instances[start : start + PER_REQUEST]
            answer = http.post("/v1/models/movielens/predict", json={"instances": chunk})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            versions.append(body["model_version"])
            for i, label in enumerate(frame["liked"].iloc[start : start + PER_REQUEST]):
                rows.append({"request_id": body["request_id"], "instance": i, "label": label})
    pd.DataFrame(rows).to_csv(labels, index=False)
    return versions


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`keel init --from` on the joined table, a time split, one run (version 1)."""
    root = tmp_path_factory.mktemp("movielens")
    table = ratings_table()
    liked = table.assign(liked=(table["rating"] >= 4).map({True: "yes", False: "no"}))
    liked.drop(columns="rating").to_csv(root / "movielens.csv", index=False)
    made = init_from_file(root / "movielens", root / "movielens.csv", "liked")
    assert made.task == "binary"
    _edit(made.directory, _time_split)
    assert keel.run(made.directory)["model"]["version"] == 1
    yield made.directory


def test_a_labels_file_with_an_instance_column_labels_each_instance(
    movielens: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(movielens / "data" / "movielens.csv").tail(30)
    labels = tmp_path / "labels.csv"
    assert _serve_and_label(movielens, frame, labels) == ["1"] * 3
    wrong = keel_cli("feedback", "movielens", "-i", str(labels), "--instance-column", "idx",
                     root=movielens)  # fmt: skip
    said = " ".join(wrong.stderr.split())
    assert wrong.returncode != 0 and "no column idx" in said and "'instance'" in said
    assert "--instance-column" in said
    done = keel_cli("feedback", "movielens", "-i", str(labels), "--format", "json",
                    root=movielens)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["counts"] == {"accepted": 30, "replaced": 0, "rejected": 0}
    bare = tmp_path / "bare.csv"  # no positions: every row names its request's first instance
    pd.read_csv(labels).drop(columns="instance").to_csv(bare, index=False)
    again = keel_cli("feedback", "movielens", "-i", str(bare), root=movielens)
    said = " ".join(again.stdout.split())
    assert again.returncode == 1 and "0 accepted, 0 replaced, 30 rejected" in said
    assert "hint: rows without an instance position" in said and "--instance-column" in said


def test_arms_are_compared_with_the_version_in_service(movielens: Path, tmp_path: Path) -> None:
    """Version 2 takes production; its labelled primary traffic is the baseline, not v1's."""
    frame = pd.read_csv(movielens / "data" / "movielens.csv").tail(60)
    first = tmp_path / "first.csv"
    assert _serve_and_label(movielens, frame.head(30), first) == ["1"] * 3
    assert keel_cli("feedback", "movielens", "-i", str(first), root=movielens).returncode in (0, 1)
    _edit(movielens, lambda c: c["model"]["params"].update(num_leaves=4))
    assert keel.run(movielens)["model"]["version"] == 2
    second = tmp_path / "second.csv"
    assert _serve_and_label(movielens, frame.tail(30), second) == ["2"] * 3
    assert keel_cli("feedback", "movielens", "-i", str(second), root=movielens).returncode == 0
    compared = keel.compare_arms("movielens", project=movielens)
    assert compared["baseline"] == "2/primary"
    assert {t["arm"] for t in compared["tests"]} == {"1/primary"}
    shown = keel_cli("monitor", "movielens", "--arms", root=movielens)
    assert "baseline: 2/primary" in shown.stdout
    assert all(len(line) <= 80 and "…" not in line for line in shown.stdout.splitlines())
    assert " z-test " in shown.stdout


def test_the_server_log_names_a_deployment_in_words(movielens: Path) -> None:
    """The log said `routing: {'movielens': 'shadow'}`, a Python dict."""
    if keel.load_model("movielens", project=movielens).version == 1:  # run alone: train v2
        _edit(movielens, lambda c: c["model"]["params"].update(num_leaves=4))
        keel.run(movielens)
    shadow = 1  # production is version 2
    with keel_serve(movielens) as server:
        started = keel.deploy("movielens", shadow=shadow, project=movielens)
        try:
            deadline = time.monotonic() + 30
            wanted = f"routing: movielens: shadow deployment {started['id']}"
            while wanted not in server.log.read_text():
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.1)
            assert "{'movielens'" not in server.log.read_text()
        finally:
            keel.abort_deployment("movielens", project=movielens)


def test_a_deployment_says_which_alias_is_its_primary(movielens: Path, tmp_path: Path) -> None:
    project = tmp_path / "candidate"
    shutil.copytree(movielens, project, ignore=shutil.ignore_patterns("serve-*.log"))
    _edit(project, lambda c: c.update(registry={"alias": "candidate"}))
    _edit(project, lambda c: c["model"]["params"].update(num_leaves=6))
    version = keel.run(project)["model"]["version"]  # takes movielens@candidate
    with pytest.raises(ConflictError) as caught:
        keel.deploy("movielens", canary=version, project=project)
    message = caught.value.message
    assert "already holds movielens@candidate (registry.alias" in message
    # `keel serve movielens` now follows registry.alias itself: no "keep them the same" note.
    assert "`keel serve movielens` serves" not in message
    with Project(project) as opened:
        assert opened.metadata.resolve("movielens").version == version


def test_a_fixed_gate_promotes_the_unchanged_version_it_failed(
    movielens: Path, tmp_path: Path
) -> None:
    """A version registered with a failing gate took the alias only when retrained; a rerun
    after fixing the gate said "model unchanged" and left the old version in service."""
    project = tmp_path / "gated"
    shutil.copytree(movielens, project, ignore=shutil.ignore_patterns("serve-*.log"))
    _edit(project, lambda c: c.update(evaluate={"gates": ["roc_auc > 0.99"]}))
    _edit(project, lambda c: c["model"]["params"].update(num_leaves=7))
    failed = keel.run(project)["model"]
    version = failed["version"]
    assert not failed["promoted"] and not failed["gates"][0]["passed"]
    before = keel.load_model("movielens@production", project=project).version
    assert before != version
    _edit(project, lambda c: c.update(evaluate={"gates": ["roc_auc > 0.5"]}))
    fixed = keel.run(project)
    register = next(s for s in fixed["steps"] if s["step"] == "register")
    assert register["facts"]["unchanged"] and fixed["model"]["version"] == version
    assert fixed["model"]["promoted"] and fixed["model"]["gates"][0]["passed"]
    assert keel.load_model("movielens@production", project=project).version == version
    # a version rolled back from is not moved back by a rerun: a warning says how
    with keel.registry(project=project) as registry:
        registry.rollback("movielens", alias="production", to=before)
    _edit(project, lambda c: c.update(evaluate={"gates": ["roc_auc > 0.51"]}))
    rerun = keel_cli("run", root=project)
    said = " ".join((rerun.stdout + rerun.stderr).split())
    assert rerun.returncode == 0, said
    assert "a rerun does not move it back" in said and "gates failed" not in said
    assert keel.load_model("movielens@production", project=project).version == before


def test_a_gate_the_task_has_no_metric_for_stops_before_training(
    movielens: Path, tmp_path: Path
) -> None:
    shutil.copy(movielens / "keel.yaml", tmp_path / "keel.yaml")
    gates = ["rmse < 2", "accuracy > 0.34"]
    _edit(tmp_path, lambda c: c.update(model={**c["model"], "task": "regression"},
                                       evaluate={"gates": gates}))  # fmt: skip
    lines = (tmp_path / "keel.yaml").read_text().splitlines()
    line = 1 + next(n for n, t in enumerate(lines) if "accuracy > 0.34" in t)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    message = str(caught.value)
    assert f"keel.yaml:{line}:" in message or "keel.yaml:" in message
    assert "'accuracy > 0.34' reads 'accuracy', which a regression model does not have" in message
    assert "rmse, mae, r2" in message
    _edit(tmp_path, lambda c: c.update(evaluate={"gates": ["rmse < 2", "metrics.r2.ci_low > 0"]}))
    assert load_config(tmp_path).evaluate.gates == ["rmse < 2", "metrics.r2.ci_low > 0"]


def test_the_step_and_operations_tables_fit_80_columns(movielens: Path) -> None:
    runs = json.loads(keel_cli("runs", "list", "--pipeline", "--format", "json",
                               root=movielens).stdout)  # fmt: skip
    shown = keel_cli("runs", "show", runs["pipeline_runs"][-1]["id"], root=movielens)
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.split("peak MB", 1)[1]
    assert "…" not in table and "register" in table
    assert all(len(line) <= 80 for line in shown.stdout.splitlines())
    monitored = keel_cli("monitor", "movielens", root=movielens)
    assert "operations (served traffic)" in monitored.stdout
    operations = monitored.stdout.split("operations (served traffic)", 1)[1]
    assert "primary" in operations and "…" not in operations
    listed = keel_cli("deployments", "list", root=movielens)  # the shadow of the log test
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout
    assert all(len(line) <= 80 for line in listed.stdout.splitlines())


def test_an_empty_selection_has_no_psi(movielens: Path) -> None:
    """`--since` after the log: 0 rows, yet every feature read PSI 6.6-9.2 and JS 0.7071 (the
    smoothing of an empty histogram), and the drift table cut `not_enough_data`."""
    done = keel_cli("monitor", "movielens", "--since", "2030-01-01", "--format", "json",
                    root=movielens)  # fmt: skip
    report = json.loads(done.stdout)
    assert report["rows"] == 0 and report["verdict"] == "not_enough_data"
    assert {(c["psi"], c["js"]) for c in report["columns"]} == {(None, None)}
    shown = keel_cli("monitor", "movielens", "--since", "2030-01-01", root=movielens)
    assert "not_enough_data" in shown.stdout and "…" not in shown.stdout
    assert "release_year" in shown.stdout and "categorical" in shown.stdout


def test_predict_puts_refused_rows_where_the_readme_says(movielens: Path, tmp_path: Path) -> None:
    """README said `<output>.rejects.csv`; the file is the output's name with that suffix."""
    rows = pd.read_csv(movielens / "data" / "movielens.csv").head(4).drop(columns="liked")
    rows["age"] = rows["age"].astype(object)
    rows.loc[1, "age"] = "twenty"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    done = keel_cli("predict", "movielens", "-i", str(tmp_path / "rows.csv"),
                    "-o", str(tmp_path / "scored.csv"), root=movielens)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "scored.csv")) == 3
    rejects = pd.read_csv(tmp_path / "scored.rejects.csv")
    assert rejects[["line", "field", "value"]].values.tolist() == [[3, "age", "twenty"]]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "(`scored.csv` ->\n`scored.rejects.csv`" in readme
