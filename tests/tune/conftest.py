"""Shared fixtures: a subsample of Adult, transformed, split into fit and validation rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from threadpoolctl import threadpool_limits

from keel.config import KeelConfig, SearchConfig
from keel.features import FeaturePipeline
from keel.train.search import Objective, TrialData
from keel.validate.schema import Schema

ROWS = 6000
#: small, fast trees: a trial takes a fraction of a second
BASE = {"n_estimators": 30, "learning_rate": 0.2}
SPACE = {
    "num_leaves": {"type": "int", "low": 4, "high": 64, "log": True},
    "learning_rate": {"type": "float", "low": 0.01, "high": 0.4, "log": True},
    "min_child_samples": {"type": "int", "low": 5, "high": 80},
}


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_trial() -> Iterator[None]:
    """Trials on one OpenMP thread: on a busy 2-CPU machine LightGBM's threads spin-wait for
    each other and a 0.1 s fit takes seconds."""
    import lightgbm  # noqa: F401  (loads the OpenMP runtime that the limit applies to)

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def adult_data(
    adult_schema: Schema, adult_train_table: pa.Table, adult_config: KeelConfig
) -> TrialData:
    """6,000 Adult rows: 4,800 to fit, 1,200 to validate."""
    table = adult_train_table.slice(0, ROWS)
    inputs = {name: adult_schema.columns[name].type for name in adult_schema.features()}
    x = FeaturePipeline(inputs=inputs).fit(table).transform(table)
    labels = np.asarray(table.column(adult_config.data.target).to_pylist(), dtype=object)
    y = (labels == adult_config.data.positive_label).astype(np.int64)
    cut = int(ROWS * 0.8)
    return TrialData(x[:cut], y[:cut], x[cut:], y[cut:])


def objective(**overrides: object) -> Objective:
    """A LightGBM objective on the small space, maximising validation ROC AUC."""
    fields: dict[str, object] = {
        "flavor": "lightgbm",
        "task": "binary",
        "base_params": dict(BASE),
        "space": SPACE,
        "metric": "roc_auc",
        "direction": "maximize",
        "seed": 0,
        "early_stopping_rounds": 10,
        "threads": 1,
    }
    return Objective(**(fields | overrides))  # type: ignore[arg-type]


def search_config(**overrides: object) -> SearchConfig:
    return SearchConfig.model_validate({"space": SPACE, **overrides})
