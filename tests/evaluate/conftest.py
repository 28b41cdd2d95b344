"""Adult test-set predictions of a small LightGBM model, trained once per session."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from keel.evaluate.explain import ModelParts
from keel.features.pipeline import FeaturePipeline
from keel.train.lightgbm import LightGBMTrainer


@dataclass(frozen=True)
class AdultPredictions:
    table: pa.Table
    y: np.ndarray
    proba: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.table.column(name).to_pylist(), dtype=object)


def _frame(table: pa.Table) -> tuple[object, np.ndarray]:
    frame = table.to_pandas()
    y = (frame.pop("income").astype(str).str.strip().str.rstrip(".") == ">50K").to_numpy()
    for name in frame.columns:
        if frame[name].dtype.kind not in "iufb":
            frame[name] = frame[name].astype("category")
    return frame, y.astype(np.int64)


@pytest.fixture(scope="session")
def adult_predictions(adult_train_table: pa.Table, adult_test_table: pa.Table) -> AdultPredictions:
    import lightgbm as lgb

    x, y = _frame(adult_train_table)
    model = lgb.LGBMClassifier(n_estimators=60, learning_rate=0.2, num_leaves=15, verbose=-1)
    model.fit(x, y)
    x_test, y_test = _frame(adult_test_table)
    for name in x_test.columns:
        if hasattr(x[name], "cat"):
            x_test[name] = x_test[name].astype(x[name].dtype)
    proba = model.predict_proba(x_test)[:, 1]
    return AdultPredictions(adult_test_table, y_test, proba)


@pytest.fixture(scope="session")
def adult_parts(adult_train_table: pa.Table) -> ModelParts:
    """Keel's feature pipeline fitted on Adult's training rows and a 120-tree LightGBM model."""
    inputs = {
        f.name: "int" if pa.types.is_integer(f.type) else (
            "float" if pa.types.is_floating(f.type) else "string")
        for f in adult_train_table.schema if f.name != "income"
    }  # fmt: skip
    pipe = FeaturePipeline(inputs=inputs).fit(adult_train_table)
    raw = np.asarray(adult_train_table.column("income").to_pylist(), dtype=object).astype(str)
    y = (np.char.rstrip(np.char.strip(raw), ".") == ">50K").astype(np.int64)
    params = {"n_estimators": 120, "num_leaves": 31}
    model = LightGBMTrainer(task="binary", params=params, seed=0).fit(
        pipe.transform(adult_train_table), y
    )
    return ModelParts(pipe, model, "binary", "lightgbm", ["<=50K", ">50K"])
