"""`keel run` end to end for each task and another flavor, on the bike-sharing hourly data:
train (with time/group splits, CV, sample weights), evaluate, register, then serve and predict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from starlette.testclient import TestClient

import keel
from keel.errors import ConfigError
from keel.project import Project
from keel.serve.app import create_app
from keel.serve.batch import predict_file

BIKES = Path(__file__).resolve().parents[1] / "fixtures" / "bike-sharing" / "hour.csv"
WEATHER = {1: "clear", 2: "mist", 3: "rain", 4: "rain"}  # 4 (3 rows in two years) joins 3
ROW: dict[str, Any] = {
    "season": 3,
    "yr": 1,
    "mnth": 8,
    "hr": 17,
    "holiday": 0,
    "weekday": 3,
    "workingday": 1,
    "temp": 0.7,
    "atemp": 0.65,
    "hum": 0.5,
    "windspeed": 0.2,
}

PROJECTS: dict[str, dict[str, Any]] = {
    "regression": {
        "target": "cnt",
        "drop": ["instant", "casual", "registered", "weight", "weather", "demand"],
        "model": {
            "flavor": "lightgbm",
            "params": {"n_estimators": 60, "learning_rate": 0.2},
            "sample_weight": "weight",
        },
        "split": {"method": "time", "column": "dteday", "folds": 3},
        "gates": ["r2 >= 0.6"],
    },
    "multiclass": {
        "target": "weather",
        "drop": ["instant", "casual", "registered", "weight", "demand", "weathersit"],
        "model": {"flavor": "xgboost", "params": {"n_estimators": 40, "max_depth": 4}},
        "split": {"method": "stratified"},
        "gates": ["accuracy >= 0.5"],
    },
    "binary": {
        "target": "demand",
        "positive_label": "busy",
        "drop": ["instant", "casual", "registered", "weight", "weather", "weathersit", "cnt"],
        "model": {"flavor": "mlp", "params": {"epochs": 8, "hidden": [32], "learning_rate": 0.01}},
        "split": {"method": "group", "column": "mnth"},
        "gates": ["roc_auc >= 0.85"],
    },
}


EXTRA = {"regression": {"weathersit": 1}, "multiclass": {"cnt": 500}, "binary": {}}


def make_project(root: Path, task: str) -> Path:
    spec = PROJECTS[task]
    frame = pd.read_csv(BIKES)
    frame["weather"] = frame["weathersit"].map(WEATHER)
    frame["demand"] = np.where(frame["cnt"] >= 200, "busy", "quiet")
    frame["weight"] = np.where(frame["workingday"] == 1, 2.0, 1.0)
    (root / "data").mkdir(parents=True)
    held_out = frame["instant"] % 5 == 0  # a test set from the same period: no drift gate
    frame[~held_out].to_csv(root / "data" / "train.csv", index=False)
    frame[held_out].to_csv(root / "data" / "test.csv", index=False)
    config = {
        "project": f"bikes-{task}",
        "data": {
            "train": {"path": "data/train.csv"},
            "test": {"path": "data/test.csv"},
            "target": spec["target"],
            "drop": spec["drop"],
        },
        "model": {
            "name": f"bikes-{task}",
            "task": task,
            "early_stopping_rounds": 5,
            "seed": 7,
            **spec["model"],
        },
        "split": spec["split"],
        "evaluate": {"gates": spec["gates"]},
        "serve": {"log_predictions": False},
    }
    if "positive_label" in spec:
        config["data"]["positive_label"] = spec["positive_label"]
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture(scope="module", params=["regression", "multiclass", "binary"])
def ran(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch
    from threadpoolctl import threadpool_limits

    task = request.param
    root = make_project(tmp_path_factory.mktemp(task) / "bikes", task)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            summary = keel.run(root)
    finally:
        torch.set_num_threads(threads)
    return task, root, summary


@pytest.fixture
def client(ran: Any) -> Iterator[TestClient]:
    with Project(ran[1]) as project, TestClient(create_app(project)) as test_client:
        yield test_client


def facts(summary: dict[str, Any], step: str) -> dict[str, Any]:
    return dict(next(s for s in summary["steps"] if s["step"] == step)["facts"])


def test_run_trains_evaluates_and_promotes(ran: Any) -> None:
    task, _, summary = ran
    assert {s["status"] for s in summary["steps"]} == {"succeeded"}
    model = summary["model"]
    assert model["promoted"], model["gates"]
    metrics = model["metrics"]
    expected = {
        "regression": {"rmse", "mae", "r2"},
        "multiclass": {"accuracy", "macro_f1", "log_loss", "roc_auc"},
        "binary": {"roc_auc", "accuracy", "log_loss"},
    }[task]
    assert expected <= set(metrics)
    trained = facts(summary, "train")
    assert trained["task"] == task and trained["flavor"] == PROJECTS[task]["model"]["flavor"]
    assert trained["history"] and trained["metrics"] and trained["params"]
    assert trained["split"]["method"] == PROJECTS[task]["split"]["method"]
    if task == "regression":  # time-ordered 3-fold cross-validation, facts per fold
        cv = trained["cv"]
        assert cv["method"] == "time" and len(cv["folds"]) == 3
        assert all(f["metrics"]["r2"] is not None for f in cv["folds"])
        assert "cv_r2" in trained["metrics"]


def test_served_answers_match_the_python_api(ran: Any, client: TestClient) -> None:
    task, root, _ = ran
    name = f"bikes-{task}"
    row = ROW | EXTRA[task]
    response = client.post(f"/v1/models/{name}/predict", json={"instances": [row, row]})
    assert response.status_code == 200, response.text
    body = response.json()
    model = keel.load_model(name, project=root)
    frame = pd.DataFrame([row])
    if task == "regression":
        assert "probabilities" not in body
        assert body["predictions"][0] == pytest.approx(float(model.predict(frame)[0]))
        assert body["predictions"][0] > 200  # a working-day summer rush hour
    elif task == "multiclass":
        assert body["predictions"][0] in {"clear", "mist", "rain"}
        probabilities = body["probabilities"][0]
        assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0)
        assert probabilities == pytest.approx(model.predict_proba(frame)[0].tolist())
        assert body["predictions"][0] == model.predict(frame)[0]
    else:
        assert body["predictions"][0] == "busy"
        assert body["probabilities"][0] == pytest.approx(float(model.predict_proba(frame)[0]))
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["task"] == task
    assert meta["platform"] == f"keel-{PROJECTS[task]['model']['flavor']}"
    outputs = [o["name"] for o in meta["outputs"]]
    assert (
        outputs
        == {
            "regression": ["prediction"],
            "multiclass": ["prediction", "probabilities"],
            "binary": ["prediction", "probability"],
        }[task]
    )


def test_batch_predict_per_task(ran: Any, tmp_path: Path) -> None:
    task, root, _ = ran
    pd.DataFrame([ROW | EXTRA[task]] * 4).to_csv(tmp_path / "in.csv", index=False)
    with Project(root) as project:
        from keel.registry.package import ModelPackage

        version = project.metadata.resolve(f"bikes-{task}")
        package = ModelPackage.load(project.artifacts, version.package_sha256)
        assert predict_file(package, tmp_path / "in.csv", tmp_path / "out.parquet").rows == 4
    scored = pq.read_table(tmp_path / "out.parquet").to_pandas()
    extra = {
        "regression": set(),
        "binary": {"probability"},
        "multiclass": {"probability_clear", "probability_mist", "probability_rain"},
    }[task]
    assert {"prediction", "model_version", *extra} <= set(scored)


def test_model_file_hash_is_listed_and_verifies(ran: Any) -> None:
    task, root, _ = ran
    version = keel.show_model(f"bikes-{task}", project=root)["versions"][0]
    with Project(root) as project:
        data = project.artifacts.get(version["model_sha256"])
        manifest = __import__("json").loads(project.artifacts.get(version["package_sha256"]))
    assert manifest["flavor"] == PROJECTS[task]["model"]["flavor"] and manifest["task"] == task
    assert manifest["files"][manifest["model_file"]]["sha256"] == version["model_sha256"]
    assert len(data) > 0


def test_a_weight_column_that_is_also_a_feature_is_refused(tmp_path: Path) -> None:
    root = make_project(tmp_path / "bikes", "regression")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["data"]["drop"].remove("weight")
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match=r"'weight' is also a model input.*data\.drop"):
        keel.run(root)
