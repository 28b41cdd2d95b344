"""Custom ``@keel.feature`` functions: resolution, source hashes, and serving refusing a model
whose feature code changed since training (through the real model package load)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import keel
from keel.errors import ConfigError, DataValidationError, IntegrityError, NotFoundError
from keel.features import FeaturePipeline
from keel.features.custom import CustomFeature, source_sha256
from tests.features import feats_fixture

FIXTURE = "tests.features.feats_fixture"


def test_source_hash_ignores_comments_but_not_code() -> None:
    namespace: dict[str, Any] = {}
    sources = {
        "plain": "def f(x: float) -> float:\n    return x + 1\n",
        "commented": "def f(x: float) -> float:  # add one\n\n    # really\n    return x + 1\n",
        "changed": "def f(x: float) -> float:\n    return x + 2\n",
    }
    hashes = {}
    for name, source in sources.items():
        path = Path(f"/tmp/keel_src_{name}.py")
        path.write_text(source)
        code = compile(source, str(path), "exec")
        exec(code, namespace)
        hashes[name] = source_sha256(namespace["f"])
    assert hashes["plain"] == hashes["commented"] != hashes["changed"]


def test_resolution_errors_name_the_feature() -> None:
    spec = {"inputs": ["n"], "output": "out", "type": "float"}
    with pytest.raises(NotFoundError, match="feature 'out': cannot import module 'nope_mod'"):
        CustomFeature.create(spec | {"function": "nope_mod:f"})
    with pytest.raises(NotFoundError, match="has no function 'missing'"):
        CustomFeature.create(spec | {"function": f"{FIXTURE}:missing"})
    with pytest.raises(ConfigError, match=r"decorate it with @keel\.feature"):
        CustomFeature.create(spec | {"function": f"{FIXTURE}:undecorated"})
    with pytest.raises(ConfigError, match="takes 1 arguments but inputs lists 2"):
        CustomFeature.create(spec | {"function": f"{FIXTURE}:age_decade", "inputs": ["a", "b"]})


def test_state_records_hash_and_a_changed_hash_is_refused() -> None:
    table = pa.table({"n": [10, 25, None, 70]})
    custom = [{"function": f"{FIXTURE}:age_decade", "inputs": ["n"], "output": "decade"}]
    pipe = FeaturePipeline(inputs={"n": "int"}, custom=custom).fit(table)
    state = json.loads(json.dumps(pipe.state()))
    assert state["custom"][0]["sha256"] == source_sha256(feats_fixture.age_decade)
    assert FeaturePipeline.from_state(state).transform(table).tobytes() == (
        pipe.transform(table).tobytes()
    )
    state["custom"][0]["sha256"] = "0" * 64
    with pytest.raises(IntegrityError) as info:
        FeaturePipeline.from_state(state)
    message = info.value.message
    assert f"{FIXTURE}:age_decade" in message and "000000000000" in message
    assert source_sha256(feats_fixture.age_decade)[:12] in message
    assert "Retrain" in message


def test_custom_feature_errors_are_422_not_crashes() -> None:
    table = pa.table({"c": ["a", "b"], "k": ["x", "y"]})
    custom = [{"function": f"{FIXTURE}:age_decade", "inputs": ["c"], "output": "bad"}]
    pipe = FeaturePipeline(inputs={"c": "string"}, custom=custom)
    with pytest.raises(DataValidationError, match=r"custom feature .*age_decade failed"):
        pipe.fit(table)
    typed = [{"function": f"{FIXTURE}:sex_race", "inputs": ["c", "k"], "output": "ck"}]
    pipe = FeaturePipeline(inputs={"c": "string", "k": "string"}, custom=typed)
    with pytest.raises(DataValidationError, match="returned str 'a/x'; its type is float"):
        pipe.fit(table)


def test_array_aware_feature_row_and_batch() -> None:
    table = pa.table({"x": [1.0, None, 4.0], "n": [1, 2, -3]})
    custom = [{"function": f"{FIXTURE}:ratio", "inputs": ["x", "n"], "output": "r"}]
    pipe = FeaturePipeline(inputs={"x": "float", "n": "int"}, custom=custom, scale="none")
    pipe.fit(table)
    assert pipe.custom_[0].vectorized
    r = pipe.feature_names_.index("r")
    x = pipe.transform(table)
    # the function sees the raw NaN; its output's default chain imputes the median of 0.5 and 1
    assert x[:, r].tolist() == [0.5, 0.75, 1.0]
    for i, row in enumerate(table.to_pylist()):
        assert pipe.transform_row(row)[0].tobytes() == x[i].tobytes()


# --- through a real project: keel run, the package, keel serve ----------------------------

FEATS_V1 = '''
import keel


@keel.feature
def age_band(age: float) -> str | None:
    """Age in bands of 15 years."""
    if age != age:
        return None
    return f"band{int(age // 15)}"
'''
FEATS_V2 = FEATS_V1.replace("age // 15", "age // 10")
TRANSFORMS = """
  transforms:
    - columns: [capital-gain, capital-loss]
      steps:
        - {kind: impute, strategy: median, indicator: true}
        - {kind: log1p}
        - {kind: standardize}
    - column: hours-per-week
      steps: [{kind: clip, lower: 1, upper: 80}, {kind: bucketize, n_bins: 8}]
    - columns: [workclass, occupation]
      steps: [{kind: cross}, {kind: hash, n_features: 32}]
    - column: age_band
      steps: [{kind: one_hot, unseen: other}]
  custom:
    - {function: "feats:age_band", inputs: [age], output: age_band, type: string}
"""


@pytest.fixture(scope="module")
def custom_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = Path(keel.init(tmp_path_factory.mktemp("custom") / "adult", example="adult"))
    config = root / "keel.yaml"
    text = config.read_text().replace("  max_categories: 50\n", "  max_categories: 50" + TRANSFORMS)
    config.write_text(text.replace("n_estimators: 600", "n_estimators: 80"))
    (root / "feats.py").write_text(FEATS_V1)
    summary = keel.run(root)
    assert summary["model"]["metrics"]["roc_auc"] > 0.88
    yield root
    sys.modules.pop("feats", None)


def test_declared_pipeline_travels_in_the_package(
    custom_project: Path, monkeypatch: pytest.MonkeyPatch, adult_test_table: pa.Table
) -> None:
    monkeypatch.chdir(custom_project)  # as 'keel serve' runs: from the project directory
    model = keel.load_model("adult@production", project=custom_project)
    pipe = model.package.pipeline
    names = pipe.feature_names_
    assert "capital-gain:missing" in names and "workclass*occupation:hash31" in names
    assert "age_band=band2" in names and "age_band=__other__" in names
    rows = adult_test_table.slice(0, 50).drop_columns(["income"])
    batch = pipe.transform(rows)
    for i, row in enumerate(rows.to_pylist()):
        assert pipe.transform_row(row)[0].tobytes() == batch[i].tobytes()
    proba = model.predict_proba(rows)
    _, online = model.predict_rows(rows.to_pylist())
    assert np.array_equal(proba, np.asarray(online))


def test_a_model_with_custom_features_loads_from_outside_its_project(
    custom_project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # e.g. 'keel serve --project DIR' from elsewhere
    sys.modules.pop("feats", None)
    model = keel.load_model("adult@production", project=custom_project)
    assert "age_band=band2" in model.package.pipeline.feature_names_
    assert str(custom_project) not in sys.path  # the project root was on sys.path only to load


def test_changed_feature_source_is_refused_at_load_and_by_keel_serve(
    custom_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(custom_project)
    (custom_project / "feats.py").write_text(FEATS_V2)
    sys.modules.pop("feats", None)
    importlib.invalidate_caches()
    try:
        with pytest.raises(IntegrityError) as info:
            keel.load_model("adult@production", project=custom_project)
        assert "feats:age_band" in info.value.message
        assert "changed since the model was trained" in info.value.message
        served = subprocess.run(
            [sys.executable, "-m", "keel.cli", "serve", "--port", "0"],
            cwd=custom_project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert served.returncode != 0
        assert "feats:age_band" in served.stderr and "Retrain" in served.stderr
        assert "Traceback" not in served.stderr
        # the fix the message names: retrain. Editing the function invalidated the features
        # step's cache, so 'keel run' re-fits the pipeline with the new source, and it loads.
        summary = keel.run(custom_project)
        statuses = {step["step"]: step["status"] for step in summary["steps"]}
        assert statuses["features"] == "succeeded" and statuses["ingest_train"] == "cached"
        model = keel.load_model("adult@production", project=custom_project)
        assert "age_band=band7" in model.package.pipeline.feature_names_  # only age // 10 makes it
    finally:
        (custom_project / "feats.py").write_text(FEATS_V1)
        sys.modules.pop("feats", None)
        importlib.invalidate_caches()
