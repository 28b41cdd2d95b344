"""`GET /v2/models/{name}` of a model trained with feature views says what a client sends: the
entity keys (listed as inputs, also those the model does not read) and the view features the
server fills from the online store (``filled_by``, ``optional``). A model without views answers
exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from keel.features.store import FeatureStore
from keel.serve import oip
from tests.serve.conftest import keel_serve
from tests.serve.test_features import AT, _write_project


@pytest.fixture(scope="module")
def bikes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oip-views")
    _write_project(root)
    config = root / "keel.yaml"
    config.write_text(config.read_text().replace("n_estimators: 60", "n_estimators: 20"))
    keel.run(root)
    store = FeatureStore(root)
    store.materialize(at=AT)
    store.close()
    return root


def _old_metadata(name: str, version: str, package: Any) -> dict[str, Any]:
    """The answer before views were marked (what a model without views must still get)."""
    signature = package.signature
    return {
        "name": name,
        "versions": [version],
        "platform": f"keel-{package.flavor}",
        "task": package.task,
        "inputs": [
            {
                "name": i["name"],
                "datatype": oip.DATATYPES[i["type"]],
                "shape": [-1],
                "parameters": {"type": i["type"], "nullable": i["nullable"]},
            }
            for i in signature["inputs"]
        ],
        "outputs": oip.output_tensors(signature["outputs"]),
        "classes": package.classes,
        "package_sha256": package.sha256,
    }


def test_metadata_marks_entity_keys_and_view_filled_inputs(bikes: Path) -> None:
    with keel_serve(bikes) as server:
        body = httpx.get(f"{server.url}/v2/models/bikes", timeout=10).json()
        version = body["versions"][0]
        same = httpx.get(f"{server.url}/v2/models/bikes/versions/{version}", timeout=10).json()
        answer = httpx.post(
            f"{server.url}/v1/models/bikes/predict",
            json={"instances": [{"hr": 8, "day": "2012-12-31"}]},
            timeout=10,
        )
    assert same == body
    inputs = {tensor["name"]: tensor for tensor in body["inputs"]}
    # the hour is both a model input and the key of demand_by_hour; the day only a key
    assert inputs["hr"]["parameters"] == {
        "type": "int", "nullable": True, "entity_key": "view:demand_by_hour"
    }  # fmt: skip
    day = inputs["day"]
    assert day["parameters"]["entity_key"] == "view:weather"
    assert day["parameters"]["nullable"] is False and "filled_by" not in day["parameters"]
    assert day["datatype"] == "BYTES" and day["shape"] == [-1]
    filled = {name: t["parameters"] for name, t in inputs.items() if "filled_by" in t["parameters"]}
    assert filled["temp_yesterday"]["filled_by"] == "view:weather"
    assert filled["cnt"]["filled_by"] == "view:demand_by_hour"
    assert all(p["optional"] is True for p in filled.values())
    assert {"cnt", "temp_yesterday", "hours_seen_7d"} <= set(filled)
    assert "hum_max_yesterday" not in inputs  # not among features.views: not read, not listed
    # what the metadata says a client sends is enough: the keys alone are scored
    assert answer.status_code == 200, answer.text
    assert {n for n, t in inputs.items() if not t["parameters"].get("optional")} == {"hr", "day"}


def test_metadata_without_views_is_unchanged(bikes: Path) -> None:
    package = keel.load_model("bikes", project=bikes).package
    body = oip.model_metadata("bikes", "1", package)
    assert body == _old_metadata("bikes", "1", package)
    assert oip.model_metadata("bikes", "1", package, None) == body
    assert all(set(t["parameters"]) == {"type", "nullable"} for t in body["inputs"])


def test_metadata_of_a_served_model_without_views(adult_project: Path) -> None:
    package = keel.load_model("adult", project=adult_project).package
    with keel_serve(adult_project) as server:
        body = httpx.get(f"{server.url}/v2/models/adult", timeout=10).json()
    assert body == _old_metadata("adult", body["versions"][0], package)
