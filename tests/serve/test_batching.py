"""Adaptive batching through a real ``keel serve``: exact answers, own errors, no added wait."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from keel.project import Project
from keel.serve.batching import CostModel, Hooks, Job, score_batch
from keel.serve.models import load_served
from tests.serve.conftest import JSON, ROW, copy_project, keel_serve

URL = "/v1/models/adult/predict"
INFER = "/v2/models/adult/infer"
EDUCATION = ["Bachelors", "HS-grad", "Masters", "Some-college", "Doctorate", "11th"]


def _rows(count: int) -> list[dict[str, Any]]:
    """Distinct Adult rows; every 7th carries an unseen country (a warning finding)."""
    rows = []
    for i in range(count):
        row = dict(ROW, age=17 + i % 70, education=EDUCATION[i % len(EDUCATION)])
        row["hours-per-week"] = 1 + (i * 7) % 98
        row["capital-gain"] = (i * 997) % 20000
        if i % 7 == 3:
            row["native-country"] = "Atlantis"
        rows.append(row)
    return rows


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found, f"{name} not exported"
    return float(found[1])


async def _post_all(
    url: str, bodies: list[dict[str, Any]], concurrency: int, path: str = URL
) -> list[httpx.Response]:
    """Every body posted, ``concurrency`` at a time (bounded in count and time)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one(body: dict[str, Any]) -> httpx.Response:
            async with gate:
                return await client.post(path, content=orjson.dumps(body), headers=JSON)

        return await asyncio.wait_for(asyncio.gather(*(one(b) for b in bodies)), timeout=120)


@pytest.fixture(scope="module")
def unbatched(adult_project: Path) -> dict[str, Any]:
    """The in-process single-row answers (labels, probabilities, warnings) of the test rows."""
    with Project(adult_project) as project:
        _, model = load_served(project, "adult")
    expected = {}
    for i, row in enumerate(_rows(240)):
        findings: list[Any] = []
        labels, probabilities = model.package.predict_rows([row], findings=findings)
        expected[i] = (labels, probabilities, [f.to_dict() for f in findings])
    return expected


def test_concurrent_answers_are_the_unbatched_ones_bit_for_bit(
    adult_project: Path, tmp_path: Path, unbatched: dict[str, Any]
) -> None:
    root = copy_project(adult_project, tmp_path / "adult", serve="  batching: on\n")
    rows = _rows(240)
    with keel_serve(root) as served:
        answers = asyncio.run(_post_all(served.url, [{"instances": [r]} for r in rows], 32))
        # OIP infer requests share the batches of the same model version
        infer = {
            "inputs": [
                {"name": k, "datatype": "BYTES" if isinstance(v, str) else "INT64",
                 "shape": [1], "data": [v]}
                for k, v in rows[5].items()
            ]
        }  # fmt: skip
        inferred = asyncio.run(_post_all(served.url, [infer] * 16, 16, path=INFER))
        explained = httpx.post(
            served.url + URL, content=orjson.dumps({"instances": [ROW], "explain": True}),
            headers=JSON,
        )  # fmt: skip
        metrics = httpx.get(served.url + "/metrics").text
    for i, response in enumerate(answers):
        assert response.status_code == 200, response.text
        body = response.json()
        labels, probabilities, warnings = unbatched[i]
        assert body["predictions"] == labels
        assert body["probabilities"] == probabilities  # floats equal: bit for bit
        assert body.get("warnings", []) == warnings
    assert sum("warnings" in r.json() for r in answers) == len(
        [i for i in range(240) if i % 7 == 3]
    )
    for response in inferred:
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert unbatched[5][1][0] in outputs["probability"]
    assert explained.status_code == 200 and "explanations" in explained.json()
    count = _metric(metrics, "keel_batch_size_count")
    assert count > 0
    assert _metric(metrics, "keel_batch_size_sum") > count  # batches of more than one formed
    assert _metric(metrics, "keel_batch_wait_seconds_count") == _metric(
        metrics, "keel_batch_size_sum"
    )


def test_a_bad_row_gets_its_422_and_its_batch_mates_succeed(
    adult_project: Path, tmp_path: Path, unbatched: dict[str, Any]
) -> None:
    serve = "  batching: on\n  threads: 2\n"  # two batches in flight at once
    root = copy_project(adult_project, tmp_path / "adult", serve=serve)
    rows = _rows(96)
    bodies: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if i % 4 == 1:  # a bad value, alone or beside good rows
            bodies.append({"instances": [row, dict(row, age="old")]})
        else:
            bodies.append({"instances": [row]})
    with keel_serve(root) as served:
        answers = asyncio.run(_post_all(served.url, bodies, 24))
    for i, response in enumerate(answers):
        if i % 4 == 1:
            assert response.status_code == 422, response.text
            assert response.json()["field"] == "instances[1].age"
        else:
            assert response.status_code == 200, response.text
            assert response.json()["probabilities"] == unbatched[i][1]


def test_auto_at_concurrency_one_adds_no_wait(adult_project: Path, tmp_path: Path) -> None:
    root = copy_project(adult_project, tmp_path / "adult")  # serve.batching: auto (default)
    with keel_serve(root) as served, httpx.Client(base_url=served.url, timeout=30) as client:
        for i, row in enumerate(_rows(150)):
            response = client.post(URL, content=orjson.dumps({"instances": [row]}), headers=JSON)
            assert response.status_code == 200, (i, response.text)
        metrics = client.get("/metrics").text
    batched = _metric(metrics, "keel_batch_size_count")
    # one at a time: every batch is the request alone, handed over at once, not held for
    # company (a held request waits for the batch timer, up to max_batch_wait_ms = 1 ms; at
    # once is a few µs, 500 µs leaves room for a loaded CI machine's scheduling hiccups)
    assert _metric(metrics, "keel_batch_size_sum") == batched
    assert _metric(metrics, 'keel_batch_wait_seconds_bucket{le="0.0005"}') == batched


class _Package:
    """A model whose model call counts its calls (the rest: the Adult pipeline)."""

    def __init__(self, package: Any) -> None:
        self.pipeline, self.task_spec, self.classes = (
            package.pipeline,
            package.task_spec,
            package.classes,
        )
        self.inner = package.model
        self.calls: list[int] = []
        self.model = self

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        out: np.ndarray = self.inner.predict(x)
        return out


def test_score_batch_one_call_per_max_rows_and_own_findings(adult_project: Path) -> None:
    with Project(adult_project) as project:
        _, model = load_served(project, "adult")
    package = _Package(model.package)
    rows = _rows(10)
    bodies = [[rows[0]], [rows[3], rows[4]], [dict(rows[1], age="x")], [rows[5]] * 70, [rows[6]]]
    jobs = [Job("predict", orjson.dumps(b), str(i)) for i, b in enumerate(bodies)]
    hooks = Hooks(
        parse=lambda job: (None, orjson.loads(job.body)),
        answer=lambda job, state, rows, labels, probs, findings: (probs, findings),
        fail=lambda job, exc: exc.http_status,
    )
    cost = CostModel(8)
    results = score_batch(package, jobs, hooks, cost, max_rows=8)
    assert results[2] == 422
    assert [len(r[0]) for i, r in enumerate(results) if i != 2] == [1, 2, 70, 1]
    # calibration (1 row, then 8 rows, each 1 + 5 times), then: [1, 2] | [70] | [1]
    assert package.calls[12:] == [3, 70, 1]
    assert cost.calibrated and cost.identical
    assert [f.field for f in results[1][1]] == ["instances[0].native-country"]
    for (probs, _), body in zip([results[0], results[1]], [bodies[0], bodies[1]], strict=True):
        assert probs == model.package.predict_rows(body)[1]


def test_auto_never_batches_a_model_whose_batched_outputs_differ() -> None:
    row = np.ones((1, 4))

    def drifting(x: np.ndarray) -> np.ndarray:  # a kernel that sums otherwise in a batch
        out: np.ndarray = x.sum(axis=1) + (1e-12 if len(x) > 1 else 0.0)
        return out

    cost = CostModel(16)
    cost.calibrate(drifting, row)
    assert cost.calibrated and not cost.identical and not cost.helps()
    same = CostModel(16)
    same.calibrate(lambda x: x.sum(axis=1), row)
    assert same.identical and same.cost(16) > 0


def test_a_fault_in_one_request_is_its_own_500(adult_project: Path) -> None:
    with Project(adult_project) as project:
        _, model = load_served(project, "adult")
    jobs = [Job("predict", orjson.dumps([ROW]), str(i)) for i in range(3)]

    def parse(job: Job) -> tuple[None, list[Any]]:
        if job.request_id == "1":
            raise RuntimeError("a custom feature's bug")
        return None, orjson.loads(job.body)

    hooks = Hooks(
        parse=parse,
        answer=lambda job, state, rows, labels, probs, findings: probs,
        fail=lambda job, exc: (exc.http_status, exc.message),
    )
    results = score_batch(model.package, jobs, hooks)
    assert results[1][0] == 500 and "RuntimeError" in results[1][1]
    assert "custom feature" not in results[1][1]  # details stay in the server log
    assert results[0] == results[2] == model.package.predict_rows([ROW])[1]
