"""A new user posts whole rows of their own file: on Palmer penguins (raw), columns the
project's data has and the model does not read (``Date Egg``, the target ``Species``) are
accepted and ignored on every path (predict, OIP infer, batch ``keel predict``), named in the
answer's warnings and not logged as inputs; a column the project never saw is still a 422, and
a misspelled one says which input it looks like."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from keel.project import Project
from keel.registry.package import ModelPackage
from keel.registry.verify import load_package
from tests.serve.conftest import keel_serve

RAW = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "palmer-penguins" / "penguins_raw.csv"
)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not RAW.exists(), reason="the shared datasets are not here"),
]
PREDICT = "/v1/models/peng/predict"
INFER = "/v2/models/peng/infer"
# the target, the date column the schema sets aside, and the ids, row counter, free text and
# study label keel init drops
IGNORED = ["Species", "Date Egg", "studyName", "Sample Number", "Individual ID", "Comments"]


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                            capture_output=True, timeout=600)  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("columns")
    made = keel_cli("init", "peng", "--from", str(RAW), "--target", "Species", cwd=base)
    assert made.returncode == 0, made.stderr
    root = base / "peng"
    ran = keel_cli("run", cwd=root)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return root


@pytest.fixture(scope="module")
def served(project: Path) -> Iterator[httpx.Client]:
    with keel_serve(project) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def raw_rows(count: int) -> list[dict[str, Any]]:
    """The first rows of the user's own file, as a client would post them (text; NA null)."""
    with RAW.open(newline="", encoding="utf-8") as handle:
        rows = [row for _, row in zip(range(count), csv.DictReader(handle), strict=False)]
    return [{k: None if v == "NA" else v for k, v in row.items()} for row in rows]


def test_the_package_lists_the_columns_it_ignores(project: Path) -> None:
    opened = Project(project)
    package = load_package(opened, opened.metadata.resolve("peng@1").package_sha256)
    assert sorted(package.signature["ignored"]) == sorted(IGNORED)
    assert package.pipeline.coercer().ignored == frozenset(IGNORED)
    # a package registered before the signature listed them reads them from its statistics
    manifest = dict(package.manifest, signature={
        k: v for k, v in package.signature.items() if k != "ignored"
    })  # fmt: skip
    old = ModelPackage(manifest, package.model, package.statistics, package.sha256)
    assert old.pipeline.coercer().ignored == frozenset(IGNORED)


def test_whole_rows_are_scored_as_their_inputs(served: httpx.Client) -> None:
    rows = raw_rows(20)
    inputs_only = [{k: v for k, v in row.items() if k not in IGNORED} for row in rows]
    plain = served.post(PREDICT, json={"instances": inputs_only})
    assert plain.status_code == 200, plain.text
    assert all(w["kind"] != "ignored_field" for w in plain.json().get("warnings", []))
    whole = served.post(PREDICT, json={"instances": rows})
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["predictions"] == plain.json()["predictions"]
    assert body["probabilities"] == plain.json()["probabilities"]
    right = sum(p == row["Species"] for p, row in zip(body["predictions"], rows, strict=True))
    assert right >= 18  # the model reads the inputs: the known species, bar a slip
    ignored = [w for w in body["warnings"] if w["kind"] == "ignored_field"]
    first = {w["field"] for w in ignored if w["field"].startswith("instances[0].")}
    assert first == {f"instances[0].{name}" for name in IGNORED}
    sent = {w["field"]: w["value"] for w in ignored}  # the value sent, not null
    assert all(sent[f"instances[0].{name}"] == rows[0][name] for name in IGNORED)


def test_oip_named_inputs_may_carry_the_same_columns(served: httpx.Client) -> None:
    rows = raw_rows(3)
    tensors = [
        {"name": name, "datatype": "BYTES", "shape": [len(rows)], "data": [r[name] for r in rows]}
        for name in rows[0]
    ]
    answer = served.post(INFER, json={"inputs": tensors})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    labels = next(o for o in body["outputs"] if o["name"] == "prediction")["data"]
    assert labels == [row["Species"] for row in rows]
    warnings = body["parameters"]["warnings"]
    ignored = {w["field"] for w in warnings if w["kind"] == "ignored_field"}
    # named as OIP requests name values (tensor, element), not as instances
    assert {"inputs[Species].data[0]", "inputs[Date Egg].data[0]"} <= ignored, warnings


def test_never_seen_and_misspelled_columns_are_refused(served: httpx.Client) -> None:
    row = raw_rows(1)[0]
    never = served.post(PREDICT, json={"instances": [dict(row, Colour="blue")]})
    assert never.status_code == 422, never.text
    assert never.json()["field"] == "instances[0].Colour"
    assert "Did you mean" not in never.json()["message"]

    typo = dict(row)
    typo["Culmen Lenght (mm)"] = typo.pop("Culmen Length (mm)")
    answer = served.post(PREDICT, json={"instances": [typo]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "instances[0].Culmen Lenght (mm)"
    assert "Did you mean 'Culmen Length (mm)'?" in answer.json()["message"]

    tensors = [{"name": "Flipper Lenght (mm)", "datatype": "FP64", "shape": [1], "data": [181]}]
    infer = served.post(INFER, json={"inputs": tensors})
    assert infer.status_code == 422, infer.text
    assert "Did you mean 'Flipper Length (mm)'?" in infer.json()["message"]


def test_ignored_columns_are_not_logged_as_inputs(project: Path) -> None:
    with keel_serve(project) as server:  # stopping it flushes the prediction log
        answer = httpx.post(server.url + PREDICT, json={"instances": raw_rows(2)}, timeout=30)
        assert answer.status_code == 200, answer.text
    rid = answer.json()["request_id"]
    records = [
        record
        for path in sorted(project.rglob("*.jsonl"))
        for record in map(json.loads, path.read_text().splitlines())
        if record.get("request_id") == rid
    ]
    assert len(records) == 1
    assert len(records[0]["inputs"]) == 2
    for logged in records[0]["inputs"]:
        assert "Island" in logged and not set(IGNORED) & set(logged)


def test_batch_scoring_reads_the_raw_file_and_suggests_a_misspelled_column(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scored.parquet"
    done = keel_cli("predict", "peng", "-i", str(RAW), "-o", str(out), cwd=project)
    assert done.returncode == 0, done.stderr
    scored = pq.read_table(out)
    assert scored.num_rows == 344 and {"Species", "Date Egg", "prediction"} <= set(
        scored.column_names
    )
    accuracy = sum(
        a == b for a, b in zip(scored["Species"].to_pylist(), scored["prediction"].to_pylist(),
                               strict=True)
    ) / scored.num_rows  # fmt: skip
    assert accuracy > 0.9
    header, rest = RAW.read_text(encoding="utf-8").split("\n", 1)
    typo = tmp_path / "typo.csv"
    typo.write_text(header.replace("Body Mass (g)", "Body Mass(g)") + "\n" + rest)
    failed = keel_cli("predict", "peng", "-i", str(typo), "-o", str(tmp_path / "x.parquet"),
                      cwd=project)  # fmt: skip
    assert failed.returncode != 0
    assert "The file has 'Body Mass(g)' for 'Body Mass (g)'" in (
        " ".join((failed.stdout + failed.stderr).split())
    )
