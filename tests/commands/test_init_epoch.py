"""Unix times in `keel init --from`: a number column named like a time whose values are
plausible dates in seconds, milliseconds or microseconds is read as a timestamp (keel.yaml's
``unix_time:``, schema.yaml's ``unit:``), converted once as the source is read, and the time
split is proposed on it; requests and scored files may send the raw numbers, or ISO text.

MovieLens 100k's u.data (``timestamp`` in unix seconds) is read from ../shared/data beside the
repository, with the header its README names, and the test is skipped without it. A ``time``
column of minutes (1 to 60) stays a number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.config import load_config
from keel.errors import ConfigError
from keel.validate.epochs import epoch_unit
from keel.validate.schema import read_schema
from tests.serve.conftest import keel_serve

MOVIELENS = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-100k"
ROWS = 3000
FAST = {"n_estimators": 30, "learning_rate": 0.2, "num_leaves": 8}


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def _edit(root: Path, change: Any) -> None:
    path = root / "keel.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat()


def _fast(config: dict[str, Any]) -> None:
    config["model"]["params"] = FAST
    config["evaluate"]["gates"] = []


# --- recognising a unix time --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values", "unit"),
    [
        ("timestamp", [881250949, 891717742], "s"),
        ("created_at", [1.6e9 + 0.25, 1.7e9], "s"),
        ("eventTime", [1_600_000_000_123, 1_700_000_000_000], "ms"),
        ("ts", [1_600_000_000_000_000, 1_600_000_000_000_001], "us"),
        ("time", [1, 15, 60], None),  # minutes: a number named like a time
        ("response_time", [120, 3400], None),
        ("user_id", [881250949, 891717742], None),  # epoch-like values, not named like a time
        ("birth_ts", [881250949, 891717742], None),
        ("timestamp", [881250949, 4_200_000_000], None),  # after 2100 in seconds: no unit fits
        ("timestamp", [None, None], None),
    ],
)
def test_epoch_unit(name: str, values: list[Any], unit: str | None) -> None:
    assert epoch_unit(name, pa.array(values)) == unit


# --- keel init, keel run, predict and serve -------------------------------------------------


def test_a_time_column_of_minutes_stays_a_number(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    minutes = rng.integers(1, 61, 200)
    table = pa.table({"time": minutes, "speed": rng.normal(size=200),
                      "late": np.where(minutes > 30, "yes", "no")})  # fmt: skip
    pq.write_table(table, tmp_path / "trips.parquet")
    made = init_from_file(tmp_path / "trips", tmp_path / "trips.parquet", "late")
    assert made.unix_time == () and made.split_column is None
    config = load_config(made.config, env="")
    assert config.data.train.unix_time == {} and config.split.method == "auto"
    assert "unix_time" not in made.config.read_text()


@pytest.fixture(scope="module")
def millis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV with ``created_ms`` in unix milliseconds: init, then two runs, the second with
    the time as a model input (schema.yaml's role: feature)."""
    root = tmp_path_factory.mktemp("millis")
    rng = np.random.default_rng(1)
    n = 400
    created = 1_600_000_000_000 + np.sort(rng.integers(0, 90 * 86_400_000, n))
    hours = (created // 3_600_000) % 24
    amount = rng.gamma(2.0, 20.0, n).round(2)
    fraud = np.where((hours < 6) | (amount > 80), "yes", "no")
    lines = ["created_ms,amount,fraud"]
    lines += [f"{c},{a},{f}" for c, a, f in zip(created, amount, fraud, strict=True)]
    (root / "payments.csv").write_text("\n".join(lines) + "\n")
    made = init_from_file(root / "payments", root / "payments.csv", "fraud")
    assert made.unix_time == (("created_ms", "ms"),) and made.split_column == "created_ms"
    _edit(made.directory, _fast)
    keel.run(made.directory)
    return made.directory


def test_init_reads_milliseconds_as_a_timestamp_and_splits_by_it(millis: Path) -> None:
    config = load_config(millis / "keel.yaml", env="")
    assert config.data.train.unix_time == {"created_ms": "ms"}
    assert (config.split.method, config.split.column) == ("time", "created_ms")
    column = read_schema(millis / "schema.yaml").columns["created_ms"]
    assert (column.type, column.unit, column.role) == ("timestamp", "ms", "timestamp")
    run = keel.run(millis)  # nothing changed: the same version
    assert run["model"]["version"] == 1


def test_a_time_input_takes_unix_milliseconds_and_iso_text_alike(millis: Path) -> None:
    schema = millis / "schema.yaml"
    schema.write_text(schema.read_text().replace("    role: timestamp\n", "    role: feature\n"))
    assert keel.run(millis)["model"]["version"] == 2
    model = keel.load_model("payments@2", project=millis)
    when = 1_600_000_000_000 + 3 * 3_600_000  # 03:00 UTC: the small hours
    iso = datetime.fromtimestamp(when / 1000, UTC).replace(tzinfo=None).isoformat()
    rows = [{"created_ms": when, "amount": 10.0}, {"created_ms": iso, "amount": 10.0},
            {"created_ms": str(when), "amount": 10.0}]  # fmt: skip
    _, probabilities = model.package.predict_rows([dict(r) for r in rows], findings=[])
    assert probabilities[0] == probabilities[1] == probabilities[2]
    batch = model.predict_proba(pa.table({"created_ms": [when, when], "amount": [10.0, 10.0]}))
    assert np.allclose(batch, probabilities[0])
    scored = millis / "score.csv"
    scored.write_text(f"created_ms,amount\n{when},10.0\n{iso},10.0\n")
    out = millis / "scored.jsonl"
    done = keel_cli("predict", "payments@2", "-i", str(scored), "-o", str(out), root=millis)
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["probability"] for a in answers] == pytest.approx([probabilities[0]] * 2)
    with keel_serve(millis) as server:
        meta = httpx.get(f"{server.url}/v2/models/payments", timeout=10).json()
        simple = httpx.post(f"{server.url}/v1/models/payments/predict",
                            json={"instances": rows}, timeout=10)  # fmt: skip
        tensors = {"inputs": [
            {"name": "created_ms", "datatype": "INT64", "shape": [1], "data": [when]},
            {"name": "amount", "datatype": "FP64", "shape": [1], "data": [10.0]},
        ]}  # fmt: skip
        oip = httpx.post(f"{server.url}/v2/models/payments/infer", json=tensors, timeout=10)
        wrong = {"instances": [{"created_ms": True, "amount": 1.0}]}
        bad = httpx.post(f"{server.url}/v1/models/payments/predict", json=wrong, timeout=10)
    created = next(i for i in meta["inputs"] if i["name"] == "created_ms")
    assert created["datatype"] == "BYTES"
    assert created["parameters"] == {"type": "timestamp", "nullable": True, "unit": "ms"}
    assert simple.status_code == 200, simple.text
    assert simple.json()["probabilities"] == pytest.approx([probabilities[0]] * 3)
    assert oip.status_code == 200, oip.text
    assert bad.status_code == 422 and "unix time in milliseconds" in bad.json()["message"]


@pytest.mark.skipif(not (MOVIELENS / "u.data").exists(), reason=f"needs {MOVIELENS}")
def test_movielens_ratings_split_by_their_unix_timestamp(tmp_path: Path) -> None:
    """u.data's columns as its README names them; init proposes the time split on timestamp,
    keel run trains, keel predict and the server take the raw seconds."""
    head = (MOVIELENS / "u.data").read_text().splitlines()[:ROWS]
    ratings = tmp_path / "ratings.tsv"
    ratings.write_text("user_id\titem_id\trating\ttimestamp\n" + "\n".join(head) + "\n")
    made = init_from_file(tmp_path / "movielens", ratings, "rating", copy=False)
    assert made.split_column == "timestamp" and made.unix_time == (("timestamp", "s"),)
    text = made.config.read_text()
    assert "unix_time:\n      timestamp: s" in text and "column: timestamp" in text
    _edit(made.directory, _fast)
    summary = keel.run(made.directory)
    assert summary["model"]["version"] == 1
    root = made.directory
    column = read_schema(root / "schema.yaml").columns["timestamp"]
    assert (column.type, column.unit) == ("timestamp", "s")
    few = tmp_path / "few.tsv"
    kept = ["\t".join(line.split("\t")[i] for i in (0, 1, 3)) for line in head[-5:]]
    few.write_text("user_id\titem_id\ttimestamp\n" + "\n".join(kept) + "\n")
    out = tmp_path / "scored.csv"
    done = keel_cli("predict", "movielens", "-i", str(few), "-o", str(out), root=root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(out.read_text().splitlines()) == 6
    user, item, _, seconds = head[-1].split("\t")
    row = {"user_id": int(user), "item_id": int(item), "timestamp": int(seconds)}
    with keel_serve(root) as server:
        answers = [
            httpx.post(f"{server.url}/v1/models/movielens/predict",
                       json={"instances": [dict(row, timestamp=value)]}, timeout=10)
            for value in (int(seconds), _iso(int(seconds)))
        ]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200], answers[0].text + answers[1].text
    assert answers[0].json()["predictions"] == answers[1].json()["predictions"]


# --- a bad unit is a configuration error naming where --------------------------------------


def test_a_bad_unit_names_the_file_line_and_field(millis: Path, tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    text = (millis / "keel.yaml").read_text()
    config.write_text(text.replace("created_ms: ms", "created_ms: hours"))
    with pytest.raises(ConfigError) as caught:
        load_config(config, env="")
    message = caught.value.message
    assert "keel.yaml:" in message and "unix_time" in message and "created_ms" in message
    schema = tmp_path / "schema.yaml"
    schema.write_text((millis / "schema.yaml").read_text().replace("unit: ms", "unit: hours"))
    with pytest.raises(ConfigError) as caught:
        read_schema(schema)
    said = caught.value.message
    assert str(schema) in said and "columns.created_ms.unit" in said and "'hours'" in said
    assert "s, ms, us" in said
    line = next(i for i, ln in enumerate(schema.read_text().splitlines(), 1) if "hours" in ln)
    assert f"schema.yaml:{line}:" in said


def test_unix_time_must_name_a_number_column(millis: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "payments.csv").write_text((millis.parent / "payments.csv").read_text())
    text = (millis / "keel.yaml").read_text().replace("created_ms: ms", "fraud: ms")
    path_line = next(ln for ln in text.splitlines() if ln.strip().startswith("path:"))
    text = text.replace(path_line, "    path: payments.csv")
    (project / "keel.yaml").write_text(text)
    with pytest.raises(Exception) as caught:
        keel.run(project)
    assert "unix_time: column 'fraud' holds VARCHAR" in str(caught.value)


def test_a_number_that_is_no_time_in_its_unit_names_the_column(tmp_path: Path) -> None:
    """A wrong unit (milliseconds declared as seconds) stops ingestion with the column named,
    where DuckDB says only "Overflow in multiplication"."""
    (tmp_path / "d.csv").write_text("ts,x,y\n1600000000000,1,a\n1600000000001,2,b\n")
    (tmp_path / "keel.yaml").write_text(
        "project: p\ndata:\n  train: {path: d.csv, unix_time: {ts: s}}\n  target: y\n"
        "model: {name: p}\n"
    )
    with pytest.raises(Exception) as caught:
        keel.run(tmp_path)
    assert "unix_time: column 'ts' holds a number that is no time in s" in str(caught.value)
