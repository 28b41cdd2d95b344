"""keel.yaml's model and split sections: params per flavor, tasks, split methods."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import LightGBMParams, ModelConfig, load_config
from keel.errors import ConfigError

HEAD = """\
project: demo
data:
  train:
    path: data/train.csv
  target: label
"""


def load(tmp_path: Path, body: str) -> object:
    (tmp_path / "keel.yaml").write_text(HEAD + body, encoding="utf-8")
    return load_config(tmp_path, env="")


def error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body)
    return info.value.message


def test_sklearn_params_are_a_free_mapping(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
model:
  name: m
  flavor: sklearn
  task: multiclass
  params:
    estimator: sklearn.ensemble.RandomForestClassifier
    n_estimators: 50
""",
    )
    model = config.model  # type: ignore[attr-defined]
    assert model.params == {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "n_estimators": 50,
    }
    assert model.param_mapping() == model.params and model.task == "multiclass"


def test_lightgbm_is_the_default_and_checks_its_params(tmp_path: Path) -> None:
    config = load(tmp_path, "model:\n  name: m\n")
    assert isinstance(config.model.params, LightGBMParams)  # type: ignore[attr-defined]
    assert config.model.param_mapping()["n_estimators"] == 400  # type: ignore[attr-defined]
    message = error(tmp_path, "model:\n  name: m\n  params:\n    num_leafs: 8\n")
    assert message == (
        "keel.yaml:9: unknown key 'num_leafs' in model.params. Did you mean 'num_leaves'?"
    )


def test_other_flavors_default_to_empty_params() -> None:
    assert ModelConfig(name="m", flavor="mlp").params == {}
    assert ModelConfig(name="m", flavor="xgboost", params={"max_depth": 3}).params == {
        "max_depth": 3
    }


def test_params_must_be_a_mapping(tmp_path: Path) -> None:
    message = error(tmp_path, "model:\n  name: m\n  flavor: xgboost\n  params: [1, 2]\n")
    assert "model.params" in message and "mapping" in message


def test_unknown_task_and_flavor_list_the_choices(tmp_path: Path) -> None:
    task = error(tmp_path, "model:\n  name: m\n  task: ranking\n")
    assert "'ranking' is not a registered task; use one of binary, multiclass, regression" in task
    assert "'keel.tasks' entry-point group" in task
    flavor = error(tmp_path, "model:\n  name: m\n  flavor: catboost\n")
    assert "'catboost'" in flavor and "lightgbm, xgboost, sklearn, mlp, auto" in flavor


def test_split_section(tmp_path: Path) -> None:
    config = load(tmp_path, "model:\n  name: m\nsplit:\n  method: time\n  column: ts\n  folds: 4\n")
    split = config.split  # type: ignore[attr-defined]
    assert (split.method, split.column, split.folds) == ("time", "ts", 4)
    assert "needs 'column'" in error(tmp_path, "model:\n  name: m\nsplit:\n  method: group\n")
    assert "split.folds" in error(tmp_path, "model:\n  name: m\nsplit:\n  folds: 1\n")
