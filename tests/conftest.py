"""Shared fixtures: the UCI Adult example project, read once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from keel.config import KeelConfig, load_config
from keel.data import read_source
from keel.validate.schema import Schema, infer_schema
from keel.validate.statistics import compute_statistics

REPO = Path(__file__).resolve().parents[1]
ADULT = REPO / "examples" / "adult"


@pytest.fixture(scope="session")
def adult_root() -> Path:
    """The Adult example project directory (holds keel.yaml and data/)."""
    return ADULT


@pytest.fixture(scope="session")
def adult_config() -> KeelConfig:
    return load_config(ADULT, env="")


@pytest.fixture(scope="session")
def adult_train_table(adult_config: KeelConfig) -> pa.Table:
    return read_source(adult_config.data.train, ADULT)


@pytest.fixture(scope="session")
def adult_test_table(adult_config: KeelConfig) -> pa.Table:
    assert adult_config.data.test is not None
    return read_source(adult_config.data.test, ADULT)


@pytest.fixture(scope="session")
def adult_statistics(adult_train_table: pa.Table) -> dict[str, Any]:
    """Training statistics; treat as read-only (shared by the whole session)."""
    return compute_statistics(adult_train_table)


@pytest.fixture(scope="session")
def adult_schema(adult_config: KeelConfig, adult_statistics: dict[str, Any]) -> Schema:
    data = adult_config.data
    return infer_schema(
        adult_statistics,
        target=data.target,
        sensitive=data.sensitive,
        drop=data.drop,
        max_null_fraction=data.max_null_fraction,
    )


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local 2-CPU Ray instance for the module that asks (starting one takes seconds)."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
