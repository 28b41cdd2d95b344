from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

import keel
from keel.project import Project
from keel.serve.app import create_app
from keel.serve.predlog import read_prediction_log
from tests.serve.conftest import ROW

URL = "/v1/models/adult/predict"


@pytest.fixture
def client(adult_project: Path) -> Iterator[TestClient]:
    with Project(adult_project) as project, TestClient(create_app(project)) as test_client:
        yield test_client


def test_predict_one_row_matches_the_batch_path(client: TestClient, adult_project: Path) -> None:
    response = client.post(URL, json={"instances": [ROW]})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"predictions", "probabilities", "model_version", "request_id"}
    assert body["model_version"] == "1"
    model = keel.load_model("adult@production", project=adult_project)
    expected = model.predict_proba(pd.DataFrame([ROW]))[0]
    assert body["probabilities"][0] == pytest.approx(expected, abs=1e-12)
    assert body["predictions"][0] == ("<=50K" if expected < 0.5 else ">50K")


def test_predict_many_rows_and_nulls(client: TestClient) -> None:
    rich = dict(ROW, age=52, **{"capital-gain": 15024, "marital-status": "Married-civ-spouse"})
    rows = [ROW, rich, dict(ROW, workclass=None, age=None), dict(ROW, occupation="Astronaut")]
    body = client.post(URL, json={"instances": rows}).json()
    assert len(body["predictions"]) == 4
    assert body["probabilities"][1] > body["probabilities"][0]
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"])


@pytest.mark.parametrize(
    ("instance", "field", "words"),
    [
        ({k: v for k, v in ROW.items() if k != "age"}, "instances[0].age", "missing field"),
        (dict(ROW, age="thirty"), "instances[0].age", "str 'thirty' is not an integer (int)"),
        (dict(ROW, age=True), "instances[0].age", "bool True is not an integer (int)"),
        (dict(ROW, age=2.5), "instances[0].age", "float 2.5 is not an integer (int)"),
        (dict(ROW, sex=1.5), "instances[0].sex", "float 1.5 is not text (string)"),
        (dict(ROW, height=180), "instances[0].height", "unknown field"),
    ],
)
def test_bad_fields_get_422_naming_the_field(
    client: TestClient, instance: dict[str, Any], field: str, words: str
) -> None:
    response = client.post(URL, json={"instances": [instance]})
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == field
    assert words in body["message"]
    assert body["error"] == "DataValidationError"


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"[]", b'{"instances": []}', b'{"instances": {"age": 1}}', b'{"rows": []}',
     b'{"instances": [1, 2]}', b""],
)  # fmt: skip
def test_malformed_requests_never_500(client: TestClient, payload: bytes) -> None:
    response = client.post(URL, content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["message"]


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.post("/v1/models/nope/predict", json={"instances": [ROW]})
    assert response.status_code == 404
    assert "adult" in response.json()["message"]
    assert client.get("/v2/models/nope").status_code == 404


def test_health_metadata_and_metrics(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready").json()
    assert ready == {"ready": True, "status": "ready", "reasons": []}
    meta = client.get("/v2/models/adult").json()
    inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert inputs["age"] == "INT64" and inputs["sex"] == "BYTES" and len(inputs) == 14
    assert meta["classes"] == ["<=50K", ">50K"]
    outputs = {o["name"]: o for o in meta["outputs"]}  # which class the probability is of
    assert outputs["probability"]["parameters"] == {"of": ">50K"}
    client.post(URL, json={"instances": [ROW]})
    client.post(URL, json={"instances": [dict(ROW, age="x")]})
    text = client.get("/metrics").text
    assert 'keel_requests_total{route="predict",status="200"}' in text
    assert 'keel_requests_total{route="predict",status="422"}' in text
    assert "keel_request_duration_seconds_bucket" in text
    assert 'keel_predictions_total{model="adult",version="1"}' in text


def test_every_prediction_is_logged(adult_project: Path, tmp_path: Path) -> None:
    with Project(adult_project) as project:
        app = create_app(project)
        assert app.log is not None
        app.log.directory = tmp_path
        with TestClient(app) as client:
            ids = [client.post(URL, json={"instances": [ROW, ROW]}).json()["request_id"]
                   for _ in range(3)]  # fmt: skip
    records = list(read_prediction_log(tmp_path, "adult"))
    assert len(records) == 6
    assert {r["request_id"] for r in records} == set(ids)
    assert records[0]["inputs"] == ROW
    assert records[0]["model_version"] == "1"
    assert isinstance(records[0]["probability"], float)


def test_a_torn_last_line_is_skipped_not_fatal(adult_project: Path, tmp_path: Path) -> None:
    with Project(adult_project) as project:
        app = create_app(project)
        assert app.log is not None
        app.log.directory = tmp_path
        with TestClient(app) as client:
            client.post(URL, json={"instances": [ROW]})
    files = list(tmp_path.glob("adult/*/*.jsonl"))
    assert len(files) == 1
    with files[0].open("ab") as handle:  # as if the server died mid-write
        handle.write(b'{"request_id": "torn", "inpu')
    records = list(read_prediction_log(tmp_path, "adult"))
    assert [r["prediction"] for r in records] in (["<=50K"], [">50K"])
    assert np.isfinite(records[0]["probability"])
