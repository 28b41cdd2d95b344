"""Trials as Ray tasks on a local 2-CPU Ray instance: infeasible requests fail fast, a small
search runs and records its trials."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from keel.config import ResourcesConfig
from keel.errors import ConfigError
from keel.store.metadata import MetadataStore
from keel.train.search import TrialData, run_search
from tests.tune.conftest import objective, search_config

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


def test_infeasible_request_fails_fast_with_the_capacity(
    local_ray: Any, adult_data: TrialData
) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        run_search(adult_data, objective(), search_config(trials=2), study_dir=None,
                   study="big", executor="ray", resources=ResourcesConfig(cpus=64))  # fmt: skip
    assert time.monotonic() - started < 10
    message = caught.value.message
    assert "each trial asks for 64 CPU" in message
    assert "2 CPUs in all" in message and "resources.cpus" in message


def test_a_search_runs_as_ray_tasks(local_ray: Any, adult_data: TrialData, tmp_path: Path) -> None:
    metadata = MetadataStore(f"sqlite:///{tmp_path / 'keel.db'}")
    result = run_search(adult_data, objective(), search_config(trials=3, workers=2),
                        study_dir=tmp_path / "studies", study="ray", metadata=metadata,
                        executor="ray", resources=ResourcesConfig(cpus=1))  # fmt: skip
    assert result.ran == 3 and result.completed == 3 and result.best_value > 0.85
    assert sorted(r["trial"] for r in result.trials) == [1, 2, 3]
    runs = metadata.list_runs(step="tune/trial", limit=10)
    assert len(runs) == 3 and {r.status for r in runs} == {"succeeded"}
    assert local_ray.is_initialized(), "a connection the caller opened stays open"
    metadata.close()


def test_automl_runs_its_trials_as_ray_tasks(
    local_ray: Any,
    adult_data: TrialData,
    adult_config: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from keel.train.search import tune
    from keel.train.search.automl import run_automl

    def no_local_trials(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("an AutoML trial ran in the driver, not as a Ray task")

    monkeypatch.setattr(tune, "optimize", no_local_trials)

    config = adult_config.model_copy(
        update={
            "executor": "ray",
            "resources": ResourcesConfig(cpus=1),
            "automl": adult_config.automl.model_copy(
                update={"time_budget_seconds": 16, "families": ["linear", "lightgbm"]}
            ),
        }
    )
    metadata = MetadataStore(f"sqlite:///{tmp_path / 'keel.db'}")
    board = run_automl(adult_data, config, metadata=metadata, parent_run="")
    assert {r["family"] for r in board.rows} == {"linear", "lightgbm"}
    # Both baselines start side by side; on a loaded machine a Ray worker's start can outlast
    # round 1 (45 % of the budget), and a baseline still running then is cut, never waited for.
    scored = [r for r in board.rows if r["value"] is not None]
    assert scored, board.rows
    assert all(r["status"] == "no trial completed" for r in board.rows if r not in scored)
    assert board.best["value"] > 0.85
    runs = metadata.list_runs(step="tune/trial", limit=100_000)
    assert len(runs) == sum(int(r["trials"]) for r in board.rows) >= 3  # round 2 searched
    assert local_ray.is_initialized(), "the test's connection stays open"
    metadata.close()
