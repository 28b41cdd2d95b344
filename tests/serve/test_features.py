"""Feature store end to end on bike sharing: `keel run` with features.views, materialize,
POST /v1/features and entity-only predict on a real server, impact from lineage."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

import keel
from keel.cli import app as cli_app
from keel.features.store import FeatureStore, training_views
from keel.project import Project
from keel.serve.app import create_app

HOUR_CSV = Path(__file__).resolve().parents[1] / "fixtures" / "bike-sharing" / "hour.csv"
AT = datetime(2012, 12, 31, 23, 0)
VIEWS = ["demand_by_hour:*", "weather:temp_yesterday"]

KEEL_YAML = """\
project: bikes
data:
  train: {path: rides_train.parquet, format: parquet}
  test: {path: rides_test.parquet, format: parquet}
  target: demand
  positive_label: busy
features:
  views: ["demand_by_hour:*", "weather:temp_yesterday"]
  entity_timestamp: ts
model:
  name: bikes
  params: {n_estimators: 60}
feature_views:
  - name: demand_by_hour          # counts of an hour are known when the hour ends
    entities: [hr]
    timestamp: known_at
    ttl: 2d
    source: {path: counts.parquet, format: parquet}
    features:
      - cnt
      - {function: mean, column: cnt, window: 7d}
      - {function: max, column: cnt, window: 28d}
      - {function: count, window: 7d, name: hours_seen_7d}
  - name: weather                 # yesterday's weather, known at midnight
    entities: [day]
    timestamp: day_start
    ttl: 1d
    source: {path: weather.parquet, format: parquet}
    features: [temp_yesterday, hum_max_yesterday]
"""


def _write_project(root: Path) -> None:
    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE h AS SELECT *, dteday::TIMESTAMP + to_hours(hr) AS ts "
        f"FROM read_csv('{HOUR_CSV}')"
    )
    label = "CASE WHEN cnt >= 200 THEN 'busy' ELSE 'quiet' END AS demand"
    for name, cond in (("train", "day(dteday) % 4 <> 0"), ("test", "day(dteday) % 4 = 0")):
        con.execute(
            f"COPY (SELECT hr, ts, dteday AS day, {label} FROM h WHERE {cond} ORDER BY ts) "
            f"TO '{root / f'rides_{name}.parquet'}'"
        )
    con.execute(
        f"COPY (SELECT hr, ts + INTERVAL 1 HOUR AS known_at, cnt FROM h) "
        f"TO '{root / 'counts.parquet'}'"
    )
    con.execute(
        "COPY (SELECT dteday + 1 AS day, (dteday + 1)::TIMESTAMP AS day_start, "
        "avg(temp) AS temp_yesterday, max(hum) AS hum_max_yesterday FROM h GROUP BY dteday) "
        f"TO '{root / 'weather.parquet'}'"
    )
    con.close()
    (root / "keel.yaml").write_text(KEEL_YAML)


@pytest.fixture(scope="module")
def bikes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bikes")
    _write_project(root)
    summary = keel.run(root)
    store = FeatureStore(root)
    store.materialize(at=AT)
    store.close()
    return {"root": root, "summary": summary}


@pytest.fixture(scope="module")
def server(bikes: dict[str, Any]) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(Project(bikes["root"]), log_predictions=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        pytest.fail("the server did not become ready in 20 s")
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


def test_run_trains_on_point_in_time_features(bikes: dict[str, Any]) -> None:
    steps = [s["step"] for s in bikes["summary"]["steps"]]
    assert steps.index("feature_views") == steps.index("ingest_test") + 1
    assert steps.index("feature_views") < steps.index("profile")
    project = Project(bikes["root"])
    version = project.metadata.resolve("bikes@production")
    used = training_views(project, version.package_sha256)
    assert used is not None
    assert used["refs"] == [
        "demand_by_hour:cnt",
        "demand_by_hour:cnt_mean_7d",
        "demand_by_hour:cnt_max_28d",
        "demand_by_hour:hours_seen_7d",
        "weather:temp_yesterday",
    ]
    inputs = {
        i["name"]
        for i in keel.ModelPackage.load(project.artifacts, version.package_sha256).signature[
            "inputs"
        ]
    }
    assert {"cnt", "cnt_mean_7d", "temp_yesterday", "hr"} <= inputs
    assert bikes["summary"]["model"]["metrics"]["roc_auc"] > 0.85


def test_training_rows_see_only_the_past(bikes: dict[str, Any]) -> None:
    """On the real data: each row's `cnt` is the same hour's count of an earlier day."""
    project = Project(bikes["root"])
    snap = next(
        a
        for a in project.metadata.list_artifacts(kind="snapshot")
        if a.metadata.get("split") == "train" and "feature_views" in a.metadata
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    path = project.artifacts.local_path(snap.sha256)
    counts = bikes["root"] / "counts.parquet"
    # brute force: the latest count of this hour known at ts, within the 2-day TTL
    wrong = con.execute(
        f"SELECT count(*) FROM read_parquet('{path}') s WHERE s.cnt IS DISTINCT FROM ("
        f"  SELECT arg_max(c.cnt, c.known_at) FROM read_parquet('{counts}') c"
        "   WHERE c.hr = s.hr AND c.known_at <= s.ts AND c.known_at >= s.ts - INTERVAL 2 DAY)"
    ).fetchone()
    con.close()
    assert wrong == (0,)


def _post(url: str, path: str, body: Any) -> httpx.Response:
    headers = {"content-type": "application/json"}  # the server answers 415 to anything else
    return httpx.post(f"{url}{path}", content=json.dumps(body), headers=headers, timeout=10)


def test_rest_features_match_the_api(bikes: dict[str, Any], server: str) -> None:
    body = {"features": VIEWS, "entities": [{"hr": 8, "day": "2012-12-31"}, {"hr": 3, "day": "x"}]}
    response = _post(server, "/v1/features", body)
    assert response.status_code == 200
    results = response.json()["results"]
    store = FeatureStore(bikes["root"])
    assert results == store.online(body["entities"], VIEWS)
    store.close()
    assert results[0]["cnt"] is not None and results[0]["temp_yesterday"] is not None
    assert results[1]["temp_yesterday"] is None  # no such day: values are null, not an error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": VIEWS, "entities": [{"hr": 8}]}, "entities[0].day"),
        ({"features": ["demand_by_hour:nope"], "entities": [{"hr": 8}]}, "features"),
        ({"features": ["nope:x"], "entities": [{"hr": 8}]}, "features"),
        ({"features": VIEWS, "entities": [{"hr": "eight", "day": "2012-12-31"}]}, "entities[0].hr"),
        ({"features": [], "entities": [{"hr": 8}]}, "features"),
        ({"entities": [{"hr": 8}]}, "features"),
        ({"features": VIEWS, "entities": "hr=8"}, "entities"),
    ],
)
def test_rest_features_bad_requests_are_422(server: str, body: Any, field: str) -> None:
    response = _post(server, "/v1/features", body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_entity_only_predict_fills_from_the_online_store(
    bikes: dict[str, Any], server: str
) -> None:
    keys = {"hr": 8, "day": "2012-12-31"}
    store = FeatureStore(bikes["root"])
    features = store.online([keys], VIEWS)[0]
    store.close()
    filled = _post(server, "/v1/models/bikes/predict", {"instances": [keys]})
    explicit = _post(server, "/v1/models/bikes/predict", {"instances": [features]})
    assert filled.status_code == 200, filled.text
    assert filled.json()["probabilities"] == explicit.json()["probabilities"]
    night = _post(server, "/v1/models/bikes/predict", {"instances": [{**keys, "hr": 3}]})
    assert night.json()["probabilities"][0] < filled.json()["probabilities"][0]
    missing = _post(server, "/v1/models/bikes/predict", {"instances": [{"hr": 8}]})
    assert missing.status_code == 422 and missing.json()["field"] == "entities[0].day"


def test_impact_lists_models_trained_with_a_view(bikes: dict[str, Any]) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        ["features", "impact", "weather", "--project", str(bikes["root"]), "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["models"]
    assert [(m["model"], m["version"], m["aliases"]) for m in found] == [
        ("bikes", 1, ["production"])
    ]
    assert found[0]["features"] == ["weather:temp_yesterday"]
    store = FeatureStore(bikes["root"])
    assert store.impact("demand_by_hour")[0]["model"] == "bikes"


def test_cli_list_get_and_errors(bikes: dict[str, Any]) -> None:
    runner = CliRunner()
    root = str(bikes["root"])
    listed = runner.invoke(cli_app, ["features", "list", "-p", root, "--format", "json"])
    assert [v["name"] for v in json.loads(listed.stdout)["views"]] == ["demand_by_hour", "weather"]
    got = runner.invoke(
        cli_app, ["features", "get", "demand_by_hour", "-e", "hr=8", "-p", root, "-f", "json"]
    )
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["hr"] == 8


def test_cli_errors_are_messages_with_exit_codes(bikes: dict[str, Any]) -> None:
    import subprocess
    import sys

    keel_cli = [sys.executable, "-m", "keel.cli"]
    root = str(bikes["root"])
    cases = [
        (["features", "get", "demand_by_hour", "--entity", "hr", "-p", root], 2, "KEY=VALUE"),
        (["features", "get", "nope", "--entity", "hr=1", "-p", root], 2, "unknown feature view"),
        (["features", "get", "weather", "--entity", "hr=1", "-p", root], 1, "entity key 'day'"),
        (["features", "impact", "nope", "-p", root], 1, "Views: demand_by_hour, weather"),
    ]
    for args, code, message in cases:
        done = subprocess.run([*keel_cli, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr


def test_a_project_with_views_and_no_model_serves_features(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    _write_project(tmp_path)
    store = FeatureStore(tmp_path)
    store.materialize(at=AT)
    store.close()
    with TestClient(create_app(Project(tmp_path), log_predictions=False)) as client:
        assert client.get("/v2/health/ready").status_code == 200
        response = client.post(
            "/v1/features", json={"features": ["demand_by_hour:cnt"], "entities": [{"hr": 0}]}
        )
        assert response.status_code == 200
        assert response.json()["results"][0]["cnt"] > 0


def _unknown_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    line = 'keel_unknown_entities_total{model="bikes",view="weather"} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0][len(line) :]) if found else 0.0


def test_an_unknown_entity_is_scored_with_a_warning_and_counted(server: str) -> None:
    """Day 2030-01-01 was never materialized in `weather`; hour 8 and 2012-12-31 were."""
    known, unknown = {"hr": 8, "day": "2012-12-31"}, {"hr": 8, "day": "2030-01-01"}
    before = _unknown_count(server)
    answer = _post(server, "/v1/models/bikes/predict", {"instances": [known, unknown]})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2  # imputed and scored, not refused
    warned = [w for w in answer.json()["warnings"] if w["kind"] == "unknown_entity"]
    assert [(w["field"], w["value"], w["severity"]) for w in warned] == [
        ("instances[1].day", "2030-01-01", "warning")
    ]
    assert "'weather'" in warned[0]["message"] and "temp_yesterday" in warned[0]["message"]
    alone = _post(server, "/v1/models/bikes/predict", {"instances": [known]}).json()
    assert "warnings" not in alone  # a known entity draws none
    assert alone["probabilities"][0] == answer.json()["probabilities"][0]

    inputs = [
        {"name": "hr", "datatype": "INT64", "shape": [2], "data": [8, 8]},
        {"name": "day", "datatype": "BYTES", "shape": [2], "data": ["2012-12-31", "2030-01-01"]},
    ]
    infer = _post(server, "/v2/models/bikes/infer", {"inputs": inputs})
    assert infer.status_code == 200, infer.text
    oip = infer.json()["parameters"]["warnings"]
    assert [(w["kind"], w["field"]) for w in oip] == [("unknown_entity", "inputs[day].data[1]")]
    assert "instances[" not in oip[0]["message"]

    explained = _post(server, "/v1/models/bikes/explain", {"instances": [unknown, known]})
    assert explained.status_code == 200, explained.text
    assert [w["field"] for w in explained.json()["warnings"]] == ["instances[0].day"]
    assert _unknown_count(server) == before + 3


def test_a_known_entity_of_null_features_is_not_unknown() -> None:
    """Rows whose view features are all null are read again: only a missing row warns."""
    from keel.serve.features import fill_views

    class Online:
        def read(self, view: str, keys: Any, rows: Any, features: Any) -> Any:
            assert view == "weather" and list(keys) == ["day"] and len(rows) == 2
            return [[r["day"]] for r in rows], [{"temp": None}, None]

    class Store:
        def __init__(self) -> None:
            self.views = {"weather": type("View", (), {"entities": ["day"]})()}
            self.online_store = Online()

        def online(self, rows: Any, refs: Any) -> Any:
            assert refs == ["weather:temp"]
            return [{"day": r["day"], "temp": None if r["day"] != "c" else 1.0} for r in rows]

    rows = [{"day": "a"}, {"day": "b"}, {"day": "c"}]
    used = {"views": {"weather": {"features": ["temp"]}}}
    unknown = fill_views(Store(), used, rows, ["day"])
    assert [(u.index, u.view, u.keys) for u in unknown] == [(1, "weather", {"day": "b"})]
    assert rows == [{"temp": None}, {"temp": None}, {"temp": 1.0}]
    assert unknown[0].finding().field == "instances[1].day"
