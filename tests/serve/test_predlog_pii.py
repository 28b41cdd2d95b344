"""Personal data never reaches the prediction log in clear: keyed hash (stable) or dropped."""

from __future__ import annotations

import hashlib
import hmac
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from keel.errors import ConfigError
from keel.serve.predlog import PiiPolicy, PredictionLog, project_secret, read_prediction_log
from tests.serve.conftest import JSON, ROW, copy_project, keel_serve

URL = "/v1/models/adult/predict"
COUNTRIES = ["United-States", "Canada", "Mexico", "Germany"]


def _pii_project(adult_project: Path, target: Path, serve: str = "") -> Path:
    """A copy whose schema marks native-country ``role: pii`` and relationship ``pii: true``
    (both stay model inputs: the model was trained with them)."""
    root = copy_project(adult_project, target, serve=serve)
    schema = root / "schema.yaml"
    text = schema.read_text()
    for column, mark in (("native-country", "role: pii"), ("relationship", "pii: true")):
        old = f"  {column}:\n    type: string\n"
        assert old in text
        text = text.replace(old, f"{old}    {mark}\n", 1)
    schema.write_text(text)
    return root


def _serve_rows(root: Path, rows: list[dict[str, Any]]) -> None:
    with keel_serve(root) as served:  # stopped with SIGTERM: the log is flushed on shutdown
        for row in rows:
            body = orjson.dumps({"instances": [row]})
            assert httpx.post(served.url + URL, content=body, headers=JSON).status_code == 200


def _logged_bytes(root: Path) -> bytes:
    files = sorted((root / ".keel" / "predictions").glob("adult/*/*.jsonl"))
    assert files, "nothing was logged"
    return b"".join(path.read_bytes() for path in files)


def _hmac(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def test_pii_is_hashed_with_the_project_secret_and_stable_across_restarts(
    adult_project: Path, tmp_path: Path
) -> None:
    root = _pii_project(adult_project, tmp_path / "adult")
    (root / ".keel" / "secret.key").unlink(missing_ok=True)
    rows = [dict(ROW, **{"native-country": c, "age": 30 + i}) for i, c in enumerate(COUNTRIES)]
    _serve_rows(root, rows)
    secret = root / ".keel" / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    key = bytes.fromhex(secret.read_text())
    first = list(read_prediction_log(root / ".keel" / "predictions", "adult"))
    _serve_rows(root, rows[:1])  # a restart: the same secret, the same hash
    raw = _logged_bytes(root)
    for country in COUNTRIES:
        assert country.encode() not in raw  # never in clear, in any file
    assert b"Not-in-family" not in raw  # the pii: true column too
    assert secret.read_text().encode() not in raw
    records = list(read_prediction_log(root / ".keel" / "predictions", "adult"))
    assert len(records) == len(rows) + 1
    hashed = [r["inputs"]["native-country"] for r in records]
    assert hashed[: len(rows)] == [_hmac(key, c) for c in COUNTRIES]
    assert hashed[-1] == hashed[0] == first[0]["inputs"]["native-country"]  # joinable
    assert records[0]["inputs"]["relationship"] == _hmac(key, "Not-in-family")
    assert records[0]["inputs"]["age"] == 30  # other columns in clear
    line = orjson.loads(raw.splitlines()[0])
    assert line["hashed"] == ["native-country", "relationship"]


def test_drop_leaves_pii_columns_out(adult_project: Path, tmp_path: Path) -> None:
    root = _pii_project(adult_project, tmp_path / "adult", serve="  log_pii: drop\n")
    _serve_rows(root, [ROW, dict(ROW, age=50)])
    raw = _logged_bytes(root)
    assert b"native-country" not in raw and b"United-States" not in raw
    assert b"relationship" not in raw
    records = list(read_prediction_log(root / ".keel" / "predictions", "adult"))
    assert [r["inputs"]["age"] for r in records] == [39, 50]
    assert "hashed" not in orjson.loads(raw.splitlines()[0])


def test_keel_monitor_reads_a_hashed_log(adult_project: Path, tmp_path: Path) -> None:
    root = _pii_project(adult_project, tmp_path / "adult")
    rows = [dict(ROW, age=20 + i % 50, **{"native-country": COUNTRIES[i % 4]}) for i in range(40)]
    _serve_rows(root, rows)
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "monitor", "adult", "--project", str(root),
         "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: drifted, a verdict, not a failure
    assert "Traceback" not in done.stderr


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = project_secret(tmp_path)
    assert key == project_secret(tmp_path) and len(key) == 32  # created once
    (tmp_path / "secret.key").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        project_secret(tmp_path)


def test_the_policy_masks_only_pii_columns_and_keeps_nulls(tmp_path: Path) -> None:
    policy = PiiPolicy(frozenset({"email"}), "hash", b"k" * 32)
    assert "k" * 32 not in repr(policy)
    log = PredictionLog(tmp_path, pii=policy)
    log.append("r1", "m", "1", [{"email": "a@b.c", "x": 1}, {"email": None, "x": 2}], [0, 1], None)
    log.flush()
    (record,) = [orjson.loads(p.read_bytes()) for p in tmp_path.glob("m/*/*.jsonl")]
    assert record["inputs"] == [
        {"email": _hmac(b"k" * 32, "a@b.c"), "x": 1},
        {"email": None, "x": 2},
    ]
