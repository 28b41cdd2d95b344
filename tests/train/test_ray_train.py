"""Data-parallel LightGBM / XGBoost on Ray Train, on a local 2-CPU Ray instance: the same model
format and accuracy as the single-machine fit, infeasible worker groups fail at once, and
``keel run`` with ``executor: ray`` and ``resources.workers: 2`` registers a usable model."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import roc_auc_score

import keel
from keel.config import ResourcesConfig
from keel.errors import ConfigError
from keel.train import fit, trainer_for
from keel.train.search.distributed import check_worker_group
from tests.train.conftest import Data

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
from keel.train.ray_train import fit_data_parallel  # noqa: E402

#: small, fast trees: each fit is dominated by Ray Train's start-up (seconds), not by LightGBM
PARAMS = {"n_estimators": 40, "learning_rate": 0.2}
ONE_CPU = ResourcesConfig(cpus=1)


def both(data: Data, flavor: str) -> tuple[Any, Any]:
    """The single-machine fit and the 2-worker fit of the same flavor, params and data."""
    common: dict[str, Any] = {"flavor": flavor, "task": data.task, "params": PARAMS, "seed": 0,
                              "x_valid": data.x_valid, "y_valid": data.y_valid,
                              "early_stopping_rounds": 10}  # fmt: skip
    local = fit(data.x, data.y, **common)
    parallel = fit_data_parallel(data.x, data.y, **common, workers=2, resources=ONE_CPU)
    return local, parallel


@pytest.mark.parametrize(
    "flavor",
    [
        "lightgbm",
        pytest.param("xgboost", marks=pytest.mark.skipif(
            importlib.util.find_spec("xgboost") is None, reason="the xgboost extra is missing")),
    ],
)  # fmt: skip
def test_two_workers_match_the_single_machine_fit(
    local_ray: Any, binary_data: Data, flavor: str
) -> None:
    local, parallel = both(binary_data, flavor)
    x_test, y_test = binary_data.x_test, binary_data.y_test
    auc_local = roc_auc_score(y_test, local.model.predict(x_test))
    auc_parallel = roc_auc_score(y_test, parallel.model.predict(x_test))
    assert abs(auc_parallel - auc_local) < 0.01 and auc_parallel > 0.85
    # the same trainer class and facts as a local fit, so registry and serving need no change
    assert type(parallel.model) is type(local.model)
    assert parallel.facts["workers"] == 2 and parallel.facts["train_rows"] == len(binary_data.y)
    assert set(parallel.history) == {"log_loss", "roc_auc"}
    assert parallel.best_iteration == parallel.model.best_iteration_
    assert 1 <= parallel.best_iteration <= PARAMS["n_estimators"]
    assert set(parallel.facts["metrics"]) == set(local.facts["metrics"])
    files = parallel.model.save()
    assert set(files) == set(local.model.save())
    loaded = trainer_for(flavor).load(files)
    assert np.allclose(loaded.predict(x_test), parallel.model.predict(x_test))


def test_regression_trains_data_parallel(local_ray: Any, regression_data: Data) -> None:
    data = regression_data
    local, parallel = both(data, "lightgbm")
    rmse_local = np.sqrt(np.mean((local.model.predict(data.x_test) - data.y_test) ** 2))
    rmse_parallel = np.sqrt(np.mean((parallel.model.predict(data.x_test) - data.y_test) ** 2))
    assert rmse_parallel < 1.1 * rmse_local
    assert trainer_for("lightgbm").load(parallel.model.save()).task == "regression"


def test_an_infeasible_worker_group_fails_fast_with_the_capacity(
    local_ray: Any, binary_data: Data
) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        fit_data_parallel(binary_data.x, binary_data.y, flavor="lightgbm", task="binary",
                          params=PARAMS, seed=0, workers=2,
                          resources=ResourcesConfig(cpus=64))  # fmt: skip
    assert time.monotonic() - started < 10
    message = caught.value.message
    assert "2 workers x (64 CPU" in message and "2 CPUs in all" in message
    assert "resources.workers" in message


def test_the_worker_group_must_fit_in_total_not_only_one_worker() -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 8 * 1024**3}},
             {"Alive": True, "Resources": {"CPU": 1.0, "memory": 8 * 1024**3}},
             {"Alive": False, "Resources": {"CPU": 64.0}}]  # fmt: skip
    check_worker_group(ResourcesConfig(cpus=1), 3, nodes)
    check_worker_group(ResourcesConfig(cpus=1, memory="4GB"), 3, nodes)
    with pytest.raises(ConfigError, match=r"can hold 3 such worker\(s\): it has 2 alive node"):
        check_worker_group(ResourcesConfig(cpus=1), 4, nodes)
    with pytest.raises(ConfigError, match="4 workers x"):
        check_worker_group(ResourcesConfig(cpus=0.5, memory="5GB"), 4, nodes)


def test_a_flavor_without_data_parallel_training_is_a_config_error(binary_data: Data) -> None:
    with pytest.raises(ConfigError) as caught:
        fit_data_parallel(binary_data.x, binary_data.y, flavor="sklearn", task="binary",
                          params={}, seed=0, workers=2)  # fmt: skip
    message = caught.value.message
    assert "model.flavor is 'sklearn'" in message and "resources.workers: 1" in message


def test_keel_run_on_ray_train_registers_a_model_keel_predict_uses(
    local_ray: Any, tmp_path: Path, adult_test_table: Any
) -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    root = keel.init(tmp_path / "adult", example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 40, "learning_rate": 0.2})
    config |= {"executor": "ray", "resources": {"workers": 2, "cpus": 1}}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "--project", str(root), "--format", "json"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    train = next(s for s in summary["steps"] if s["step"] == "train")
    assert train["facts"]["workers"] == 2 and train["facts"]["executor"] == "ray"
    assert summary["model"]["version"] == 1 and summary["model"]["metrics"]["roc_auc"] > 0.88
    rows = adult_test_table.slice(0, 5).drop_columns(["income"]).to_pandas()
    rows.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out.parquet"
    scored = runner.invoke(app, ["predict", "adult", "--input", str(tmp_path / "in.csv"),
                                 "--output", str(out), "--project", str(root)])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    table: pd.DataFrame = pq.read_table(out).to_pandas()
    assert len(table) == 5 and table["probability"].between(0, 1).all()


def test_ray_is_imported_only_when_a_fit_runs_on_it() -> None:
    import subprocess
    import sys

    code = ("import sys, keel.api, keel.cli, keel.pipeline.steps, keel.train.ray_train\n"
            "print(sorted(m for m in ('ray', 'ray.train') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_worker_count_joins_the_train_steps_cache_key(
    adult_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from keel.pipeline.cache_key import step_config_hash
    from keel.pipeline.runner import Step
    from keel.pipeline.steps import train, train_section

    def key(executor: str, workers: int) -> str:
        config = adult_config.model_copy(
            update={"executor": executor, "resources": ResourcesConfig(workers=workers)}
        )
        step = Step("train", train, (), train_section)
        return step_config_hash(step, SimpleNamespace(config=config))  # type: ignore[arg-type]

    monkeypatch.delenv("KEEL_EXECUTOR", raising=False)
    assert key("local", 1) == key("local", 4) == key("ray", 1)  # an in-process fit either way
    assert key("ray", 2) != key("ray", 1) and key("ray", 2) != key("ray", 3)
