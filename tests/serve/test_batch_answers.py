"""A batch's requests get the answers, log lines and cost estimates they get one at a time.

:func:`~keel.serve.batching.score_batch` answers a group's rows with one ``task.answer`` call
sliced per request (built-in tasks only), the server logs a batch's answered requests
together (:meth:`~keel.serve.predlog.PredictionLog.append_many`), and the cost model finds
its buckets by bisection: none of it may change what a request gets.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from keel.errors import DataValidationError
from keel.serve.batching import CostModel, Hooks, Job, score_batch
from keel.serve.predlog import PredictionLog
from keel.train.tasks import BinaryTask, MulticlassTask, RegressionTask


class _Pipeline:
    def transform_each(
        self, requests: list[list[Any]], *, findings: list[list[Any]]
    ) -> list[np.ndarray | Exception]:
        out: list[np.ndarray | Exception] = []
        for rows in requests:
            if any(row.get("bad") for row in rows):
                out.append(DataValidationError("a bad row", field="instances[0].bad"))
            else:
                out.append(np.array([[float(row["v"])] for row in rows]))
        return out


class _Model:
    def __init__(self, width: int) -> None:
        self.width = width

    def predict(self, x: np.ndarray) -> np.ndarray:
        v = x[:, 0]
        if self.width == 1:
            out: np.ndarray = 1.0 / (1.0 + np.exp(-v / 7.0))
            return out
        logits = np.stack([v * k / 13.0 for k in range(self.width)], axis=1)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probabilities


class _Shares:
    """A task (a plug-in's) whose answer is not row by row: each row's share of the rows."""

    def answer(self, prediction: np.ndarray, classes: Any) -> tuple[list[Any], None]:
        return [float(p / prediction.sum()) for p in prediction], None


class _Package:
    def __init__(self, task: Any, width: int, classes: list[str]) -> None:
        self.pipeline = _Pipeline()
        self.model = _Model(width)
        self.task_spec = task
        self.classes = classes


HOOKS = Hooks(
    parse=lambda job: (None, orjson.loads(job.body)),
    answer=lambda job, state, rows, labels, probs, findings: (job.request_id, labels, probs),
    fail=lambda job, exc: (job.request_id, exc.http_status),
)


def _jobs() -> list[Job]:
    sizes = [1, 3, 1, 2, 1, 5, 1]
    jobs, value = [], 0
    for i, size in enumerate(sizes):
        rows = [{"v": (value := value + 1) * 1.7 - 9} for _ in range(size)]
        if i == 4:
            rows[0]["bad"] = True
        jobs.append(Job("predict", orjson.dumps(rows), f"r{i}"))
    jobs.append(Job("predict", b"{not json", "broken"))
    return jobs


def test_a_batch_answers_each_request_as_alone_for_every_task() -> None:
    cases = [
        (BinaryTask(), 1, ["no", "yes"]),
        (MulticlassTask(), 3, ["a", "b", "c"]),
        (RegressionTask(), 1, []),
        (_Shares(), 1, []),  # not row by row: answered per request, as alone
    ]
    for task, width, classes in cases:
        package = _Package(task, width, classes)
        jobs = _jobs()
        alone = [score_batch(package, [job], HOOKS)[0] for job in jobs]
        for max_rows in (64, 4):  # one group, and groups of a few requests
            assert score_batch(package, jobs, HOOKS, max_rows=max_rows) == alone, task
        assert alone[4] == ("r4", 422)


def test_append_many_writes_what_append_writes(tmp_path: Path) -> None:
    requests = [
        ("a", [{"x": 1}], ["yes"], [0.75]),
        ("b", [{"x": 2}, {"x": 3}], ["no", "yes"], [0.25, 0.5]),
        ("c", [{"x": 4}], [1.5], None),
    ]
    one, many = PredictionLog(tmp_path / "one"), PredictionLog(tmp_path / "many")
    for request_id, inputs, labels, probabilities in requests:
        assert one.append(request_id, "m", "3", inputs, labels, probabilities, role="canary")
    assert many.append_many("m", "3", requests, role="canary") == 0

    def lines(log: PredictionLog) -> list[dict[str, Any]]:
        chunks = [c for _, parts in log._files.values() for c in parts]
        records = [orjson.loads(line) for chunk in chunks for line in chunk.splitlines()]
        for record in records:
            assert record.pop("time") > 0
        return records

    assert lines(one) == lines(many) and len(lines(many)) == 3
    assert list(lines(many)[0]) == [
        "request_id", "model", "model_version", "role", "feature_pipeline",
        "inputs", "predictions", "probabilities",
    ]  # fmt: skip
    full = PredictionLog(tmp_path / "full", max_queue=2)
    assert full.append_many("m", "3", requests) == 1  # the third finds the queue full
    assert full.dropped == 1 and [r["request_id"] for r in lines(full)] == ["a", "b"]


def _old_cost(per_row: dict[int, float], rows: int) -> float:
    """CostModel.cost as it was written before bisection (the reference)."""
    if not per_row or rows <= 0:
        return 0.0
    where = math.log2(rows)
    known = sorted(per_row)
    low = max((b for b in known if b <= where), default=known[0])
    high = min((b for b in known if b >= where), default=known[-1])
    if high == low:
        return rows * per_row[low]
    share = (where - low) / (high - low)
    return rows * ((1 - share) * per_row[low] + share * per_row[high])


def test_the_cost_model_estimates_as_before() -> None:
    rng = random.Random(5)
    cost = CostModel(64)
    assert cost.cost(8) == 0.0
    for _ in range(200):
        cost.observe(rng.choice([1, 2, 3, 5, 8, 17, 33, 64, 200]), rng.uniform(1e-5, 1e-3))
        for rows in (0, 1, 2, 3, 7, 16, 40, 64, 100, 300, 1000):
            assert cost.cost(rows) == _old_cost(cost._per_row, rows), rows
    fresh = CostModel(16)
    fresh.calibrate(lambda x: x.sum(axis=1), np.ones((1, 3)))
    assert fresh.cost(16) == _old_cost(fresh._per_row, 16) > 0
