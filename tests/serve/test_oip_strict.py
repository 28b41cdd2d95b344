"""Open Inference Protocol strictness: a missing tensor is named as a tensor (with the tensors
the model takes), a tensor's values must be of its declared datatype (a BYTES tensor of numbers
is refused 400, as KServe refuses it) and ``outputs`` may name only the model's outputs. The
simple API keeps its own behaviour (it has no datatypes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from keel.project import Project
from keel.serve.app import create_app
from keel.serve.oip import BadTensor, rows_of
from tests.serve.conftest import ROW

INFER = "/v2/models/adult/infer"
PREDICT = "/v1/models/adult/predict"
OUTPUTS = [{"name": "prediction", "type": "string"}, {"name": "probability", "type": "float"}]


def _tensors(row: dict[str, Any], **datatypes: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "datatype": datatypes.get(name, "BYTES" if isinstance(value, str) else "INT64"),
            "shape": [1],
            "data": [value],
        }
        for name, value in row.items()
    ]


@pytest.fixture
def client(adult_project: Path) -> Iterator[TestClient]:
    with Project(adult_project) as project, TestClient(create_app(project)) as test_client:
        yield test_client


def test_a_missing_tensor_is_named_with_the_expected_ones(client: TestClient) -> None:
    row = {name: value for name, value in ROW.items() if name != "hours-per-week"}
    answer = client.post(INFER, json={"inputs": _tensors(row)})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert "input tensor 'hours-per-week' is missing" in body["message"], body
    assert "data[0]" not in body["message"] and "missing field" not in body["message"]
    assert "age (INT64)" in body["message"] and "workclass (BYTES)" in body["message"]
    assert body["field"] == "inputs"


def test_a_bytes_tensor_of_numbers_is_refused(client: TestClient) -> None:
    answer = client.post(INFER, json={"inputs": _tensors(ROW, age="BYTES")})
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["field"] == "inputs[age].data[0]"
    assert "tensor 'age'" in body["message"] and "BYTES" in body["message"]
    assert "39" in body["message"]
    assert body["details"] == {"tensor": "age", "datatype": "BYTES", "value": 39}
    # the simple API has no datatypes: the number is the age it always was
    assert client.post(PREDICT, json={"instances": [ROW]}).status_code == 200


def test_a_well_typed_request_still_answers_as_the_simple_api(client: TestClient) -> None:
    infer = client.post(INFER, json={"inputs": _tensors(ROW, age="FP64")})
    predict = client.post(PREDICT, json={"instances": [ROW]})
    assert infer.status_code == 200, infer.text
    outputs = {o["name"]: o["data"] for o in infer.json()["outputs"]}
    assert outputs["prediction"] == predict.json()["predictions"]


def test_an_unknown_output_is_refused(client: TestClient) -> None:
    asked = {"inputs": _tensors(ROW), "outputs": [{"name": "prediction"}, {"name": "score"}]}
    answer = client.post(INFER, json=asked)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["field"] == "outputs[1]"
    assert "'score'" in body["message"] and "prediction, probability" in body["message"]
    known = {"inputs": _tensors(ROW), "outputs": [{"name": "prediction"}]}
    assert client.post(INFER, json=known).status_code == 200


@pytest.mark.parametrize("value", [1.5, 39, True, [1]])
def test_a_bytes_tensor_holds_strings_only(value: Any) -> None:
    tensor = {"name": "a", "datatype": "BYTES", "shape": [2], "data": [None, value]}
    with pytest.raises(BadTensor, match=r"inputs\[a\]\.data\[1\]: .*BYTES"):
        rows_of({"inputs": [tensor]}, 10)


@pytest.mark.parametrize(
    ("datatype", "data"),
    [("BYTES", ["x", None]), ("INT64", [1, None]), ("FP64", [1, 2.5]), ("BOOL", [True, None]),
     ("INT64", ["x", 2])],  # a number tensor's stray text: the coercion's 422, as before
)  # fmt: skip
def test_other_values_pass_to_the_coercion(datatype: str, data: list[Any]) -> None:
    tensor = {"name": "a", "datatype": datatype, "shape": [2], "data": data}
    assert rows_of({"inputs": [tensor]}, 10, OUTPUTS) == [{"a": data[0]}, {"a": data[1]}]


def test_outputs_must_be_a_list() -> None:
    tensor = {"name": "a", "datatype": "INT64", "shape": [1], "data": [1]}
    with pytest.raises(BadTensor, match="prediction, probability"):
        rows_of({"inputs": [tensor], "outputs": "prediction"}, 10, OUTPUTS)
