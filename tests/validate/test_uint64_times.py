"""A uint64 at or past 2**63 sent for a timestamp with a unit (a Parquet file's ``UINT64``
column) is refused like any number that is no time: the row is rejected with the column and the
value named, never an Arrow overflow with a traceback. Values below 2**63 convert as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.validate.coerce import Coercer, InputRule
from keel.validate.epochs import to_timestamps

MS = 1_600_000_000_000  # 2020-09-13T12:26:40Z
HUGE = [2**63, 2**64 - 1]


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_to_timestamps_takes_uint64_past_int64(unit: str) -> None:
    values = pa.array([MS, *HUGE, None], pa.uint64())
    times, bad = to_timestamps(values, unit)
    assert bad.tolist() == [unit == "s", True, True, False]  # MS seconds: year 52000
    assert times.is_null().to_pylist() == [unit == "s", True, True, True]
    if unit == "ms":
        assert times[0].as_py().isoformat() == "2020-09-13T12:26:40"


def test_the_batch_coercion_rejects_them_naming_column_and_value() -> None:
    coercer = Coercer([InputRule("created_ms", "timestamp", unit="ms")])
    coerced = coercer.table(pa.table({"created_ms": pa.array([MS, *HUGE], pa.uint64())}))
    [issue] = coerced.errors
    assert issue.column == "created_ms" and issue.kind == "type_mismatch"
    assert issue.rows.tolist() == [1, 2]
    assert "9223372036854775808" in issue.message and "milliseconds" in issue.message


def keel_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def test_predict_explain_and_monitor_refuse_a_uint64_file_cleanly(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 300
    created = MS + np.sort(rng.integers(0, 60 * 86_400_000, n))
    amount = rng.gamma(2.0, 20.0, n).round(2)
    fraud = np.where(((created // 3_600_000) % 24 < 6) | (amount > 80), "yes", "no")
    lines = ["created_ms,amount,fraud"]
    lines += [f"{c},{a},{f}" for c, a, f in zip(created, amount, fraud, strict=True)]
    (tmp_path / "payments.csv").write_text("\n".join(lines) + "\n")
    made = init_from_file(tmp_path / "p", tmp_path / "payments.csv", "fraud")
    root = made.directory
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"] = {"n_estimators": 20, "num_leaves": 8}
    config["evaluate"]["gates"] = []
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    keel.run(root)  # writes schema.yaml; then the time becomes a model input
    schema = root / "schema.yaml"
    schema.write_text(schema.read_text().replace("    role: timestamp\n", "    role: feature\n"))
    assert keel.run(root)["model"]["version"] == 2
    scored = tmp_path / "new.parquet"
    pq.write_table(pa.table({"created_ms": pa.array([MS, *HUGE], pa.uint64()),
                             "amount": [10.0, 20.0, 30.0]}), scored)  # fmt: skip
    out = tmp_path / "scored.csv"
    done = keel_cli("predict", "p@2", "-i", str(scored), "-o", str(out), root=root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(out.read_text().splitlines()) == 2
    rejects = (tmp_path / "scored.rejects.csv").read_text()
    assert '2,"created_ms","9223372036854775808"' in rejects
    assert '3,"created_ms","18446744073709551615"' in rejects
    explained = keel_cli("explain", "p@2", "-i", str(scored), root=root)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "9223372036854775808" in explained.stderr and "Traceback" not in explained.stderr
    watched = keel_cli("monitor", "p@2", "--input", str(scored), root=root)
    assert "Traceback" not in watched.stderr, watched.stderr
