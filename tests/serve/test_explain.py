"""Served explanations (``POST /v1/models/{name}/explain``, ``"explain": true``) on a real
server equal the batch ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from keel.config import load_config
from tests.serve.conftest import JSON, ROW, Served, keel_serve

RICH = dict(ROW, age=52, **{"capital-gain": 15024, "marital-status": "Married-civ-spouse"})


@pytest.fixture(scope="module")
def served(adult_project: Path) -> Iterator[Served]:
    with keel_serve(adult_project) as server:
        yield server


def _post(served: Served, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/models/adult/{path}", json=body, headers=JSON, timeout=30)


def test_served_explanation_equals_the_batch_one(served: Served, adult_project: Path) -> None:
    response = _post(served, "explain", {"instances": [ROW, RICH]})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "1" and body["request_id"]
    batch = keel.load_model("adult@production", project=adult_project).explain([ROW, RICH])
    expected = batch.to_json()
    assert body["rows"] == expected["rows"]  # bit for bit: the same numbers, as JSON
    assert body["base_value"] == expected["base_value"]
    assert sorted(body["columns"]) == sorted(ROW)  # folded back to the input columns
    for row in body["rows"]:
        total = body["base_value"] + sum(row["contributions"].values())
        assert total == pytest.approx(row["margin"], abs=1e-6)


def test_explain_true_in_a_predict_request_adds_the_contributions(served: Served) -> None:
    explained = _post(served, "predict", {"instances": [ROW], "explain": True}).json()
    plain = _post(served, "predict", {"instances": [ROW]}).json()
    assert "explanations" not in plain
    assert explained["probabilities"] == plain["probabilities"]
    row = explained["explanations"]["rows"][0]
    # what /predict answers: the label as prediction, P(positive) as probability
    assert row["prediction"] == plain["predictions"][0]
    assert row["probability"] == pytest.approx(plain["probabilities"][0], abs=1e-12)
    assert row == _post(served, "explain", {"instances": [ROW]}).json()["rows"][0]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("explain", {"instances": [dict(ROW, age="thirty")]}, "instances[0].age"),
        ("explain", {"instances": [dict(ROW, height=180)]}, "instances[0].height"),
        ("explain", {"instances": []}, "instances"),
        ("predict", {"instances": [ROW], "explain": "yes"}, "explain"),
    ],
)
def test_a_bad_request_is_a_4xx_naming_the_field(
    served: Served, path: str, body: Any, field: str
) -> None:
    response = _post(served, path, body)
    assert 400 <= response.status_code < 500
    assert response.json()["field"] == field


def test_too_many_rows_is_a_4xx_naming_instances(served: Served, adult_project: Path) -> None:
    limit = load_config(adult_project, env="").serve.max_instances
    response = _post(served, "explain", {"instances": [ROW] * (limit + 1)})
    assert 400 <= response.status_code < 500
    assert response.json()["field"] == "instances"
    assert f"at most {limit}" in response.json()["message"]


def test_cli_explains_a_file_to_json_and_parquet(adult_project: Path, tmp_path: Path) -> None:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from keel.cli import app

    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([ROW, RICH, ROW]), rows)
    for suffix in ("json", "parquet"):
        output = tmp_path / f"explained.{suffix}"
        args = ["explain", "adult", "-i", str(rows), "-o", str(output), "--limit", "2"]
        result = CliRunner().invoke(app, [*args, "-p", str(adult_project)])
        assert result.exit_code == 0, result.output
    document = orjson.loads((tmp_path / "explained.json").read_bytes())
    batch = keel.load_model("adult", project=adult_project).explain([ROW, RICH]).to_json()
    assert document["rows"] == batch["rows"]
    table = pq.read_table(tmp_path / "explained.parquet")
    assert table.num_rows == 2
    assert table.column("margin").to_pylist() == [r["margin"] for r in batch["rows"]]
    assert {f"contribution.{c}" for c in ROW} <= set(table.column_names)


def test_explain_is_a_fast_route_needing_the_predict_scope() -> None:
    from keel.serve.middleware import classify

    route = classify("POST", "/v1/models/adult/explain")
    assert (route.label, route.scope, route.model, route.fast) == (
        "explain",
        "predict",
        "adult",
        True,
    )
    assert classify("GET", "/v1/models/adult/explain").label != "explain"
