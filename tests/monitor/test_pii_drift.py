"""Monitoring inputs the log holds as keyed hashes (personal data): a hashed categorical input is
compared with its training categories hashed with the same key (no false drift, real drift
found); a hashed numeric input is reported not comparable, never drift or stable."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pv
import pytest
import yaml

import keel
from keel.api.registered import monitor
from keel.project import Project
from keel.serve.predlog import PredictionLog, pii_policy

from .test_cli import keel_cli, no_traceback

SHIFTED = "Mexico"  # about 2% of the training rows


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained Adult project whose schema then marks native-country (categorical) and age
    (numeric) ``pii: true``: both stay model inputs."""
    root = tmp_path_factory.mktemp("pii") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["n_estimators"] = 40  # fast; the model's quality is not tested
    config["evaluate"]["gates"] = []
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    keel.run(root)
    schema = root / "schema.yaml"
    text = schema.read_text()
    for column in ("native-country", "age"):
        assert f"  {column}:\n" in text
        text = text.replace(f"  {column}:\n", f"  {column}:\n    pii: true\n", 1)
    schema.write_text(text)
    return root


def log_traffic(root: Path, rows: list[dict[str, Any]]) -> None:
    """Rows logged by the server's writer with the project's pii policy, 10 per request."""
    with Project(root) as opened:
        policy = pii_policy(opened, opened.config.serve.log_pii)
        assert policy is not None and policy.columns == {"native-country", "age"}
        log = PredictionLog(opened.predictions_dir, pii=policy)
    scores = np.random.default_rng(0).random(len(rows))
    for start in range(0, len(rows), 10):
        chunk = rows[start : start + 10]
        labels = [">50K" if s >= 0.5 else "<=50K" for s in scores[start : start + 10]]
        log.append(f"r{start}", "adult", "1", chunk, labels, scores[start : start + 10].tolist())
    log.close()


def by_column(window: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["column"]: c for c in window["columns"]}


def test_hashed_inputs_compare_like_with_like(project: Path, adult_test_table: Any) -> None:
    rows = adult_test_table.drop_columns(["income"]).slice(0, 4000).to_pylist()
    unchanged, shifted = rows[:2000], [{**r, "native-country": SHIFTED} for r in rows[2000:]]
    log_traffic(project, unchanged + shifted)
    raw = b"".join(p.read_bytes() for p in (project / ".keel" / "predictions").rglob("*.jsonl"))
    assert b"United-States" not in raw and b'"hashed":["age","native-country"]' in raw

    report = monitor("adult", project=project, window="2000rows")
    first, second = report["windows"]
    assert first["rows"] == second["rows"] == 2000
    country = by_column(first)["native-country"]
    assert country["verdict"] == "stable" and country["js"] < 0.1  # not JS 1.0: all "unseen"
    assert "native-country" not in first["drifted_columns"]
    shifted_country = by_column(second)["native-country"]
    assert shifted_country["verdict"] == "drift" and shifted_country["js"] > 0.5
    assert second["drifted_columns"] == ["native-country"]
    for window in (first, second, report):
        age = by_column(window)["age"]
        assert age["verdict"] == "not_comparable" and age["reason"] == "hashed"
        assert age["psi"] is None and age["p_value"] is None
        assert "age" not in window["drifted_columns"]

    text = keel_cli("monitor", "adult", "--window", "2000rows", cwd=project)
    no_traceback(text)
    assert "not_comparable (hashed)" in text.stdout

    # a file passed with --input holds values in clear: compared in clear, as before
    source = project / "clear.csv"
    pv.write_csv(adult_test_table.drop_columns(["income"]).slice(0, 2000), source)
    clear = keel_cli("monitor", "adult", "--input", str(source), "-f", "json", cwd=project)
    no_traceback(clear)
    checked = by_column(json.loads(clear.stdout))
    assert checked["native-country"]["verdict"] == "stable"
    assert checked["age"]["verdict"] == "stable"


def test_compacted_hashed_log_gives_the_same_verdicts(project: Path) -> None:
    """Closed files compacted with their sketches (counted on the hashed bins) report as the
    JSON Lines did."""
    from keel.monitor.compact import _registered, compact_log

    before = monitor("adult", project=project, window="all")
    with Project(project) as opened:
        done = compact_log(
            opened.predictions_dir / "adult",
            lambda: _registered(opened, "adult"),
            now=time.time() + 3 * 86_400,
            grace=0,
        )
    assert done.files >= 1 and done.sketches >= 1 and before["rows"] == 4000
    after = monitor("adult", project=project, window="all")
    assert after["rows"] == before["rows"]
    for name, column in by_column(before).items():
        assert by_column(after)[name]["verdict"] == column["verdict"], name
    assert by_column(after)["native-country"]["js"] == pytest.approx(
        by_column(before)["native-country"]["js"], abs=1e-9
    )
