"""search:, automl:, executor and resources in keel.yaml: parsing, and errors that name the line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from keel.config import ResourcesConfig, SearchParam, load_config
from keel.errors import ConfigError
from keel.train.search.distributed import check_feasible, executor_settings
from keel.train.search.objective import check_metric, grid_of, suggest
from keel.train.search.study import budget_for


def write(tmp_path: Path, adult_root: Path, extra: str) -> Path:
    config = yaml.safe_load((adult_root / "keel.yaml").read_text())
    text = yaml.safe_dump(config, sort_keys=False) + textwrap.dedent(extra)
    (tmp_path / "keel.yaml").write_text(text)
    return tmp_path


def line_of(path: Path, needle: str) -> int:
    lines = (path / "keel.yaml").read_text().splitlines()
    return max(i for i, line in enumerate(lines, start=1) if needle in line)


def test_search_section_parses(tmp_path: Path, adult_root: Path) -> None:
    root = write(
        tmp_path,
        adult_root,
        """
        search:
          trials: 40
          sampler: random
          pruner: hyperband
          workers: 2
          space:
            num_leaves: {type: int, low: 8, high: 256, log: true}
            learning_rate: {type: float, low: 0.01, high: 0.3, log: true}
            boosting: {type: categorical, choices: [gbdt, dart]}
        executor: ray
        resources: {cpus: 2, gpus: 0, memory: 4GB}
        """,
    )
    config = load_config(root, env="")
    assert config.search is not None and config.search.trials == 40
    assert config.search.space["num_leaves"].log is True
    assert config.search.space["boosting"].choices == ["gbdt", "dart"]
    assert config.executor == "ray" and config.resources.memory_bytes() == 4 * 1024**3
    assert config.automl.time_budget_seconds == 120


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("{type: int, low: 64, high: 8}", "low (64) must be below high (8)"),
        ("{type: float, low: 0, high: 1, log: true}", "log: true needs low > 0"),
        ("{type: integer, low: 1, high: 8}", "'int', 'float' or 'categorical'"),
        ("{type: categorical}", "needs a non-empty 'choices' list"),
        ("{type: int, low: 1.5, high: 8}", "whole-number low, high and step"),
    ],
)
def test_bad_parameters_name_the_line(
    tmp_path: Path, adult_root: Path, param: str, message: str
) -> None:
    root = write(
        tmp_path,
        adult_root,
        f"""
        search:
          space:
            num_leaves: {param}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(root, env="")
    assert message in caught.value.message
    assert f"keel.yaml:{line_of(root, 'num_leaves:')}:" in caught.value.message
    assert "search.space.num_leaves" in caught.value.message


def test_unknown_search_key_suggests_the_right_one(tmp_path: Path, adult_root: Path) -> None:
    root = write(
        tmp_path,
        adult_root,
        """
        search:
          trails: 10
        """,
    )
    with pytest.raises(ConfigError, match=r"unknown key 'trails' in search\. Did you mean"):
        load_config(root, env="")


def test_grid_needs_a_step_for_floats(tmp_path: Path, adult_root: Path) -> None:
    root = write(
        tmp_path,
        adult_root,
        """
        search:
          sampler: grid
          space:
            learning_rate: {type: float, low: 0.05, high: 0.2}
        """,
    )
    with pytest.raises(ConfigError, match=r"grid needs a finite grid.*'learning_rate'"):
        load_config(root, env="")


def test_grid_values_and_budget() -> None:
    space = {
        "num_leaves": SearchParam(type="int", low=8, high=32, step=8),
        "learning_rate": SearchParam(type="float", low=0.1, high=0.3, step=0.1),
        "boosting": SearchParam(type="categorical", choices=["gbdt", "dart"]),
    }
    grid = grid_of(space)
    assert grid["num_leaves"] == [8, 16, 24, 32]
    assert grid["learning_rate"] == pytest.approx([0.1, 0.2, 0.3])
    from keel.config import SearchConfig

    config = SearchConfig(sampler="grid", trials=100, space=space)
    assert budget_for(config, done=5, space=space).trials == 4 * 3 * 2 - 5


def test_suggest_respects_types_and_bounds() -> None:
    space = {
        "n": SearchParam(type="int", low=2, high=10, step=2),
        "lr": SearchParam(type="float", low=1e-3, high=1.0, log=True),
        "kind": SearchParam(type="categorical", choices=["a", "b", None]),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        params = suggest(study.ask(), space)
        assert params["n"] in (2, 4, 6, 8, 10)
        assert 1e-3 <= params["lr"] <= 1.0
        assert params["kind"] in ("a", "b", None)


def test_metric_must_fit_the_task_and_direction() -> None:
    assert check_metric("log_loss", "binary", None) == "minimize"
    assert check_metric("r2", "regression", "maximize") == "maximize"
    with pytest.raises(ConfigError, match=r"search\.metric 'r2' does not apply to a binary model"):
        check_metric("r2", "binary", None)
    with pytest.raises(ConfigError, match="would search for the worst roc_auc"):
        check_metric("roc_auc", "binary", "minimize")


def test_bad_memory_and_executor_env(
    tmp_path: Path, adult_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(
        tmp_path,
        adult_root,
        """
        resources: {memory: lots}
        """,
    )
    with pytest.raises(ConfigError, match="memory 'lots' is not a size"):
        load_config(root, env="")
    config = load_config(write(tmp_path, adult_root, "ray_address: auto\n"), env="")
    assert executor_settings(config) == ("local", "auto")
    monkeypatch.setenv("KEEL_EXECUTOR", "ray")
    monkeypatch.setenv("KEEL_RAY_ADDRESS", "ray://head:10001")
    assert executor_settings(config) == ("ray", "ray://head:10001")
    monkeypatch.setenv("KEEL_EXECUTOR", "spark")
    with pytest.raises(ConfigError, match="KEEL_EXECUTOR='spark' is not an executor"):
        executor_settings(config)


def test_feasibility_names_request_and_capacity() -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 4 * 1024**3}}]
    check_feasible(ResourcesConfig(cpus=2), nodes)
    with pytest.raises(ConfigError) as caught:
        check_feasible(ResourcesConfig(cpus=64), nodes)
    assert "asks for 64 CPU" in caught.value.message
    assert "1 alive node(s), 2 CPUs in all" in caught.value.message
    with pytest.raises(ConfigError, match="1 GPU"):
        check_feasible(ResourcesConfig(gpus=1), nodes)
    with pytest.raises(ConfigError, match=r"memory 8.0 GiB"):
        check_feasible(ResourcesConfig(memory="8GB"), nodes)
