"""Real data for trainer tests, small enough to train every flavor in seconds.

binary: Adult income; multiclass: Adult ``relationship`` (6 classes); regression: bike-sharing
hourly ``cnt`` (the repository's fixture copy of the UCI file).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from keel.features import FeaturePipeline
from keel.train.target import encode_target
from keel.validate.schema import Schema

BIKES = Path(__file__).resolve().parents[1] / "fixtures" / "bike-sharing" / "hour.csv"
BIKE_FEATURES = {
    "season": "int", "yr": "int", "mnth": "int", "hr": "int", "holiday": "int",
    "weekday": "int", "workingday": "int", "weathersit": "int", "temp": "float",
    "atemp": "float", "hum": "float", "windspeed": "float",
}  # fmt: skip


@dataclass(frozen=True)
class Data:
    """Train / validation / test matrices of one task."""

    task: str
    x: np.ndarray
    y: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]


def _split(task: str, x: np.ndarray, y: np.ndarray, classes: list[str], n: int) -> Data:
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    fit, valid, test = order[:n], order[n : n + n // 3], order[n + n // 3 : n + 2 * (n // 3)]
    return Data(task, x[fit], y[fit], x[valid], y[valid], x[test], y[test], classes)


def _adult(schema: Schema, table: pa.Table, target: str, task: str, n: int) -> Data:
    inputs = {c: schema.columns[c].type for c in schema.features() if c != target}
    x = FeaturePipeline(inputs=inputs).fit(table).transform(table)
    y, classes = encode_target(table.column(target), task=task, target=target,
                               positive_label=">50K" if task == "binary" else None)  # fmt: skip
    return _split(task, x, y, classes, n)


@pytest.fixture(scope="session")
def binary_data(adult_schema: Schema, adult_train_table: pa.Table) -> Data:
    return _adult(adult_schema, adult_train_table, "income", "binary", 6000)


@pytest.fixture(scope="session")
def multiclass_data(adult_schema: Schema, adult_train_table: pa.Table) -> Data:
    return _adult(adult_schema, adult_train_table, "relationship", "multiclass", 6000)


@pytest.fixture(scope="session")
def bike_table() -> pa.Table:
    return pacsv.read_csv(BIKES)


@pytest.fixture(scope="session")
def regression_data(bike_table: pa.Table) -> Data:
    x = FeaturePipeline(inputs=BIKE_FEATURES).fit(bike_table).transform(bike_table)
    y, _ = encode_target(bike_table.column("cnt"), task="regression", target="cnt")
    return _split("regression", x, y, [], 6000)


@pytest.fixture(scope="session")
def task_data(binary_data: Data, multiclass_data: Data, regression_data: Data) -> dict[str, Data]:
    return {"binary": binary_data, "multiclass": multiclass_data, "regression": regression_data}


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """OpenMP/BLAS pools of one thread: on a shared 2-CPU runner more threads only contend."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)
