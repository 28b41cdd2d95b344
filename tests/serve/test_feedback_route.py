"""Delayed labels through a real ``keel serve --auth required``: predictions made over HTTP,
labels fed back by request id over HTTP and from a file, per-item answers, and the realised
accuracy that ``keel monitor`` then reports, equal to the one computed from the joined rows."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.project import Project
from keel.store.tokens import create_token
from tests.serve.conftest import Served, copy_project, keel_serve

REQUESTS, PER_REQUEST = 40, 5


@dataclass(frozen=True)
class Fed:
    served: Served
    root: Path
    predictor: dict[str, str]
    reader: dict[str, str]
    answers: list[tuple[str, list[str]]]  # request id, predicted labels
    truth: list[list[str]]  # true labels per request


@pytest.fixture(scope="module")
def fed(
    adult_project: Path, adult_test_table: pa.Table, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fed]:
    root = copy_project(adult_project, tmp_path_factory.mktemp("feedback") / "adult")
    with Project(root) as project:
        db = project.metadata.database
        _, predictor = create_token(db, "app", ["predict"], created_by="test")
        _, reader = create_token(db, "dashboard", ["read"], created_by="test")
    table = adult_test_table.slice(0, REQUESTS * PER_REQUEST)
    truth = table["income"].to_pylist()
    rows = table.drop_columns(["income"]).to_pylist()
    headers = {"authorization": f"Bearer {predictor}"}
    with keel_serve(root, "--auth", "required", "--no-reload") as served:
        answers = []
        with httpx.Client(base_url=served.url, headers=headers, timeout=30) as client:
            for start in range(0, len(rows), PER_REQUEST):
                body = {"instances": rows[start : start + PER_REQUEST]}
                response = client.post("/v1/models/adult/predict", json=body)
                assert response.status_code == 200, response.text
                answer = response.json()
                assert response.headers["keel-request-id"] == answer["request_id"]
                answers.append((answer["request_id"], answer["predictions"]))
        yield Fed(
            served,
            root,
            headers,
            {"authorization": f"Bearer {reader}"},
            answers,
            [truth[i : i + PER_REQUEST] for i in range(0, len(truth), PER_REQUEST)],
        )


def _post(fed: Fed, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    url = f"{fed.served.url}/v1/models/adult/feedback"
    sent = fed.predictor if headers is None else headers
    return httpx.post(url, json=body, headers=sent, timeout=30)


def test_labels_over_http_get_one_answer_each(fed: Fed) -> None:
    half = REQUESTS // 2
    labels = [
        {"request_id": rid, "instance": i, "label": fed.truth[r][i]}
        for r, (rid, _) in enumerate(fed.answers[:half])
        for i in range(PER_REQUEST)
    ]
    first_id = fed.answers[0][0]
    bad = [
        {"request_id": "not-a-request", "label": ">50K"},
        {"request_id": first_id, "label": "rich"},
        {"request_id": first_id, "instance": 0, "label": "<=50K"},  # a second label
        {"request_id": first_id, "instance": 9, "label": "<=50K"},
        {"label": ">50K"},
    ]
    response = _post(fed, {"labels": labels + bad})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["counts"] == {"accepted": len(labels), "replaced": 0, "rejected": len(bad)}
    reasons = [item["reason"] for item in result["items"][len(labels) :]]
    assert "unknown request id 'not-a-request'" in reasons[0]
    assert "'rich' is not one of the target's values" in reasons[1]
    assert "already has a label" in reasons[2]
    assert "instance 9 is out of range" in reasons[3]
    assert "either 'request_id' or 'key'" in reasons[4]


def test_bad_requests_are_4xx_never_5xx(fed: Fed) -> None:
    url = f"{fed.served.url}/v1/models/adult/feedback"
    label = {"labels": [{"request_id": fed.answers[0][0], "label": ">50K"}]}
    assert _post(fed, label, headers={}).status_code == 401
    refused = _post(fed, label, headers=fed.reader)
    assert refused.status_code == 403 and "predict" in refused.json()["message"]
    for body in ({"labels": []}, {"labels": "x"}, [1, 2], {"labels": [{}], "extra": 1}):
        response = _post(fed, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "DataValidationError"
    broken = httpx.post(url, content=b"{not json", headers={**fed.predictor, **_JSON})
    assert broken.status_code == 422
    text = httpx.post(url, content=b"x", headers={**fed.predictor, "content-type": "text/plain"})
    assert text.status_code == 415
    too_many = _post(fed, {"labels": [{"request_id": "x", "label": ">50K"}] * 10_001})
    assert too_many.status_code == 422 and "at most" in too_many.json()["message"]
    unknown = httpx.post(f"{fed.served.url}/v1/models/nope/feedback", json=label,
                         headers=fed.predictor)  # fmt: skip
    assert unknown.status_code == 404


_JSON = {"content-type": "application/json"}


def _logged_requests(root: Path) -> int:
    return sum(
        len(path.read_bytes().splitlines())
        for path in (root / ".keel" / "predictions" / "adult").glob("*/*.jsonl")
    )


def test_labels_from_a_file_and_the_realised_accuracy(fed: Fed, tmp_path: Path) -> None:
    deadline = time.monotonic() + 20
    while _logged_requests(fed.root) < REQUESTS:  # the log writer flushes every 0.5 s
        assert time.monotonic() < deadline, "the prediction log was not written"
        time.sleep(0.1)
    half = REQUESTS // 2
    lines = ["request_id,instance,label"]
    for r, (rid, _) in enumerate(fed.answers[half:], start=half):
        lines += [f"{rid},{i},{fed.truth[r][i]}" for i in range(PER_REQUEST)]
    lines.append("nobody,0,>50K")
    source = tmp_path / "labels.csv"
    source.write_text("\n".join(lines) + "\n")
    rejected = tmp_path / "rejected.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["feedback", "adult", "--input", str(source), "--instance-column", "instance",
         "--rejected", str(rejected), "--project", str(fed.root)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # one row rejected
    printed = " ".join(result.output.split())  # rich wraps long lines
    assert f"{half * PER_REQUEST} accepted, 0 replaced, 1 rejected" in printed
    assert f"line {len(lines)}: unknown request id 'nobody'" in printed
    written = [orjson.loads(line) for line in rejected.read_bytes().splitlines()]
    assert [(w["line"], w["request_id"]) for w in written] == [(len(lines), "nobody")]

    report = runner.invoke(app, ["monitor", "adult", "--project", str(fed.root),
                                 "--format", "json"])  # fmt: skip
    assert report.exit_code in (0, 1), report.output
    realised = orjson.loads(report.stdout)["realised"]
    joined = [
        (predicted[i], fed.truth[r][i])
        for r, (_, predicted) in enumerate(fed.answers)
        for i in range(PER_REQUEST)
    ]
    expected = sum(p == t for p, t in joined) / len(joined)
    assert realised["labelled"] == REQUESTS * PER_REQUEST
    assert realised["status"] == "ok"
    assert realised["metrics"]["accuracy"]["value"] == pytest.approx(expected, abs=1e-9)
    low, high = realised["metrics"]["accuracy"]["low"], realised["metrics"]["accuracy"]["high"]
    assert low <= expected <= high
    assert {"roc_auc", "precision", "recall"} <= set(realised["metrics"])

    text = runner.invoke(app, ["monitor", "adult", "--project", str(fed.root)])
    assert "realised from 200 labelled rows" in " ".join(text.output.split()), text.output
    arms = runner.invoke(app, ["monitor", "adult", "--arms", "--project", str(fed.root),
                               "--format", "json"])  # fmt: skip
    assert arms.exit_code == 0, arms.output
    comparison = orjson.loads(arms.stdout)
    assert [a["arm"] for a in comparison["arms"]] == ["1/primary"]
    assert any("fewer than two arms" in note for note in comparison["notes"])


def test_labels_still_join_after_the_log_is_compacted(fed: Fed) -> None:
    from keel.monitor.compact import compact

    runner = CliRunner()
    command = ["monitor", "adult", "--project", str(fed.root), "--format", "json"]
    before = orjson.loads(runner.invoke(app, command).stdout)["realised"]
    with Project(fed.root) as project:  # every file closed: pretend two days have passed
        reports = compact(project, "adult", now=time.time() + 2 * 86_400, grace=0)
    assert reports[0].parts >= 1
    assert not list((fed.root / ".keel" / "predictions" / "adult").glob("*/*.jsonl"))
    after = orjson.loads(runner.invoke(app, command).stdout)["realised"]
    assert after["labelled"] == before["labelled"] > 0
    assert after["metrics"]["accuracy"] == before["metrics"]["accuracy"]


def test_bad_files_and_names_are_clear_errors(fed: Fed, tmp_path: Path) -> None:
    source = tmp_path / "labels.csv"
    source.write_text("id,truth\nx,>50K\n")

    def keel(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "keel.cli", *args, "--project", str(fed.root)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    missing = keel("feedback", "adult", "--input", str(source))
    printed = " ".join(missing.stderr.split())
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no column label, request_id" in printed and "--request-id-column" in printed
    renamed = keel("feedback", "adult", "--input", str(source), "--request-id-column", "id",
                   "--label-column", "truth", "--format", "json")  # fmt: skip
    assert renamed.returncode == 1, renamed.stderr
    assert orjson.loads(renamed.stdout)["counts"] == {"accepted": 0, "replaced": 0, "rejected": 1}
    unknown = keel("feedback", "nope", "--input", str(source))
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "nope" in unknown.stderr
