"""Model packages per task and flavor: manifest, signature, predictions, verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from keel.errors import ConfigError, IntegrityError
from keel.features import FeaturePipeline
from keel.registry.package import MODEL_FILE, ModelPackage, build_package, model_file_of
from keel.store.artifacts import ArtifactStore
from keel.train import fit
from keel.train.target import encode_target

BIKES = Path(__file__).resolve().parents[1] / "fixtures" / "bike-sharing" / "hour.csv"
INPUTS = {"hr": "int", "workingday": "int", "temp": "float", "hum": "float", "season": "string"}
WEATHER = {"1": "clear", "2": "mist", "3": "rain", "4": "rain"}
CASES = [
    ("regression", "cnt", "xgboost"),
    ("multiclass", "weather", "sklearn"),
    ("binary", "workingday_label", "mlp"),
]
PARAMS = {
    "xgboost": {"n_estimators": 30},
    "sklearn": {"estimator": "sklearn.linear_model.LogisticRegression", "max_iter": 200},
    "mlp": {"epochs": 3, "hidden": [8]},
}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    raw = pacsv.read_csv(BIKES).slice(0, 4000)
    season = pa.array([str(v) for v in raw.column("season").to_pylist()])
    weather = pa.array([WEATHER[str(v)] for v in raw.column("weathersit").to_pylist()])
    working = pa.array(["work" if v else "rest" for v in raw.column("weekday").to_pylist()])
    return (
        raw.set_column(raw.schema.get_field_index("season"), "season", season)
        .append_column("weather", weather)
        .append_column("workingday_label", working)
    )


def package_for(
    store: ArtifactStore, table: pa.Table, task: str, target: str, flavor: str
) -> tuple[ModelPackage, Any]:
    pipe = FeaturePipeline(inputs=INPUTS).fit(table)
    y, classes = encode_target(
        table.column(target),
        task=task,
        target=target,
        positive_label="work" if task == "binary" else None,
    )
    result = fit(pipe.transform(table), y, flavor=flavor, task=task, params=PARAMS[flavor], seed=0)
    artifact = build_package(
        store,
        name=f"bikes-{task}",
        flavor=flavor,
        task=task,
        model_files=result.model.save(),
        model_file=result.model.model_file,  # type: ignore[attr-defined]
        pipeline_state=pipe.state(),
        classes=classes,
        metrics={},
        statistics={"rows": table.num_rows},
        lineage={},
    )
    return ModelPackage.load(store, artifact.sha256), result


@pytest.mark.parametrize(("task", "target", "flavor"), CASES)
def test_package_round_trip_per_task(
    task: str, target: str, flavor: str, table: pa.Table, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path)
    package, result = package_for(store, table, task, target, flavor)
    manifest = package.manifest
    assert (manifest["flavor"], manifest["task"]) == (flavor, task)
    assert model_file_of(manifest) in manifest["files"]
    rows = table.select(list(INPUTS)).slice(0, 5).to_pylist()
    values, probabilities = package.predict_rows(rows)
    batch = result.model.predict(package.pipeline.transform(table.slice(0, 5)))
    outputs = [o["name"] for o in package.signature["outputs"]]
    if task == "regression":
        assert probabilities is None and outputs == ["prediction"]
        assert values == pytest.approx(batch.tolist())
        assert package.predict(table.slice(0, 5)).tolist() == pytest.approx(values)
        with pytest.raises(ConfigError, match="regression model"):
            package.predict_proba(table.slice(0, 5))
    elif task == "multiclass":
        assert outputs == ["prediction", "probabilities"]
        assert package.classes == ["clear", "mist", "rain"]
        assert probabilities is not None and np.allclose(probabilities, batch)
        assert values == [package.classes[i] for i in np.argmax(batch, axis=1)]
        assert package.predict(table.slice(0, 5)).tolist() == values
    else:
        assert outputs == ["prediction", "probability"]
        assert probabilities == pytest.approx(batch.tolist())
        assert set(values) <= {"rest", "work"}


def test_tampered_model_file_is_refused(table: pa.Table, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    package, _ = package_for(store, table, "regression", "cnt", "xgboost")
    sha = package.manifest["files"][model_file_of(package.manifest)]["sha256"]
    path = store.local_path(sha)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(IntegrityError):
        ModelPackage.load(store, package.sha256)


def test_manifests_before_flavors_name_the_lightgbm_file() -> None:
    assert model_file_of({"files": {MODEL_FILE: {}}}) == MODEL_FILE
    assert model_file_of({"model_file": "model.skops"}) == "model.skops"
