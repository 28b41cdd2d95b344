"""An Open Inference Protocol request's warnings name its input tensors and elements
(``inputs[workclass].data[1]``), as its errors do, never ``instances[1].workclass``: an OIP
request has no instances. The simple API keeps naming instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from keel.serve.oip import warnings_of
from tests.serve.conftest import JSON, ROW, keel_serve

DATATYPE = {int: "INT64", float: "FP64", str: "BYTES"}


def _tensors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "datatype": DATATYPE[type(value)],
            "shape": [len(rows)],
            "data": [row[name] for row in rows],
        }
        for name, value in rows[0].items()
    ]


def test_infer_warnings_name_the_tensor_and_element(adult_project: Path) -> None:
    odd = dict(ROW, workclass="Martian-gov")  # never seen in training: scored with a warning
    rows = [ROW, odd]
    with keel_serve(adult_project) as served:
        infer = httpx.post(
            f"{served.url}/v2/models/adult/infer",
            json={"id": "w1", "inputs": _tensors(rows)},
            headers=JSON,
            timeout=30,
        )
        predict = httpx.post(
            f"{served.url}/v1/models/adult/predict",
            json={"instances": rows},
            headers=JSON,
            timeout=30,
        )
    assert infer.status_code == 200, infer.text
    warnings = infer.json()["parameters"]["warnings"]
    unseen = [w for w in warnings if w["kind"] == "unseen_category"]
    assert [w["field"] for w in unseen] == ["inputs[workclass].data[1]"], warnings
    assert unseen[0]["message"].startswith("inputs[workclass].data[1]: 'Martian-gov'")
    assert unseen[0]["value"] == "Martian-gov"
    assert "instances" not in infer.text
    # the same rows through the simple API: its own terms
    assert predict.status_code == 200, predict.text
    fields = [w["field"] for w in predict.json()["warnings"] if w["kind"] == "unseen_category"]
    assert fields == ["instances[1].workclass"]


def test_warnings_of_rewords_field_and_message_only_for_instance_fields() -> None:
    found = {
        "field": "instances[12].timestamp",
        "kind": "type_mismatch",
        "severity": "warning",
        "value": "yesterday",
        "message": "instances[12].timestamp: 'yesterday' is not a date.",
    }
    other = {"field": "inputs", "kind": "x", "severity": "warning", "value": None, "message": "m"}
    [timestamp, kept] = warnings_of([found, other])
    assert timestamp["field"] == "inputs[timestamp].data[12]"
    assert timestamp["message"] == "inputs[timestamp].data[12]: 'yesterday' is not a date."
    assert timestamp["value"] == "yesterday" and found["field"] == "instances[12].timestamp"
    assert kept == other
