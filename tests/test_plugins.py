"""Extension points: built-ins and installed plug-ins share one registry per entry-point group;
keel.yaml accepts a plug-in's names, and an unknown name names the choices and the group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.config import load_config
from keel.errors import ConfigError
from keel.features.online import open_online_store
from keel.plugins import EXECUTORS, ONLINE_STORES, TASKS, TRAINERS
from keel.train import FLAVORS, fit, flavors, task_for, task_names, trainer_for
from keel.train.search.distributed import executor_settings

from .plugins import install_plugin, write_dist

MINIMAL = """\
project: demo
data:
  train:
    path: data/train.csv
  target: y
model:
  name: demo
  flavor: {flavor}
  task: {task}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(site))
    yield site


def write(root: Path, flavor: str = "lightgbm", task: str = "binary") -> Path:
    (root / "keel.yaml").write_text(MINIMAL.format(flavor=flavor, task=task))
    return root


def test_builtins_are_registered_without_plugins() -> None:
    assert FLAVORS == ("lightgbm", "xgboost", "sklearn", "mlp")
    assert flavors()[:4] == FLAVORS and task_names()[:3] == ("binary", "multiclass", "regression")
    assert "ridge" not in TRAINERS and "ordinal" not in TASKS
    assert set(ONLINE_STORES.names()) >= {"sqlite", "redis"}
    assert EXECUTORS.names()[:2] == ("local", "ray")


def test_an_unknown_flavor_or_task_in_keel_yaml_names_the_line_choices_and_group(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, flavor="ridge"))
    message = str(caught.value)
    assert message.startswith("keel.yaml:8: model.flavor:"), message
    assert "'ridge'" in message and "lightgbm, xgboost, sklearn, mlp, auto" in message
    assert "'keel.trainers' entry-point group" in message
    with pytest.raises(ConfigError, match=r"keel\.yaml:9: model\.task:.*binary, multiclass, "
                       r"regression.*'keel\.tasks'"):  # fmt: skip
        load_config(write(tmp_path, task="ordinal"))


def test_an_installed_plugin_adds_a_flavor_and_a_task(installed: Path, tmp_path: Path) -> None:
    assert "ridge" in flavors() and "ordinal" in task_names()
    assert TRAINERS.plugins() == {"ridge": "keel_example_plugin.ridge:RidgeTrainer"}
    config = load_config(write(tmp_path, flavor="ridge", task="ordinal"))
    assert (config.model.flavor, config.model.task) == ("ridge", "ordinal")
    trainer = trainer_for("ridge")
    assert trainer.__module__ == "keel_example_plugin.ridge" and trainer.flavor == "ridge"
    task = task_for("ordinal")
    assert (task.name, task.kind, task.headline) == ("ordinal", "regression", "mae")
    # the trainer fits the task's kind: a regression on the ordinal ranks
    import numpy as np

    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    result = fit(x, x[:, 0] / 10, flavor="ridge", task="ordinal", params={}, seed=0)
    assert result.model.task == "regression" and result.facts["task"] == "ordinal"


def test_a_plugin_cannot_take_over_a_builtin_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = write_dist(tmp_path, "keel-shadow", {"keel.trainers": {"lightgbm": "shadow:Fake"}})
    monkeypatch.syspath_prepend(str(site))
    assert trainer_for("lightgbm").__module__ == "keel.train.lightgbm"
    assert flavors().count("lightgbm") == 1


def test_a_broken_plugin_is_a_config_error_naming_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = {"keel.trainers": {"broken": "keel_missing_module:Trainer"},
               "keel.tasks": {"odd": "keel_testing_odd_task:ODD"}}  # fmt: skip
    site = write_dist(tmp_path, "keel-broken", entries)
    (site / "keel_testing_odd_task.py").write_text("ODD = object()\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigError, match=r"plug-in 'keel-broken'.*failed to load.*reinstall"):
        trainer_for("broken")
    with pytest.raises(ConfigError, match=r"model\.task 'odd'.*not a keel Task.*check_task_plugin"):
        task_for("odd")


def test_an_online_store_plugin_is_chosen_by_its_url_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keel_testing_store.py").write_text(
        "class MemoryStore:\n"
        "    def __init__(self, url, *, namespace):\n"
        "        self.url, self.namespace = url, namespace\n"
    )
    entries = {"keel.online_stores": {"memory": "keel_testing_store:MemoryStore"}}
    monkeypatch.syspath_prepend(str(write_dist(tmp_path, "keel-memory-store", entries)))
    store = open_online_store("memory://cache", None)
    assert type(store).__name__ == "MemoryStore" and store.url == "memory://cache"
    with pytest.raises(ConfigError, match=r"unknown scheme 'nope'.*sqlite://.*memory://"):
        open_online_store("nope://x", None)


def test_an_executor_plugin_is_a_known_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write(tmp_path))
    monkeypatch.setenv("KEEL_EXECUTOR", "dask")
    with pytest.raises(ConfigError, match=r"KEEL_EXECUTOR='dask' is not an executor.*local, ray"):
        executor_settings(config)
    entries = {"keel.executors": {"dask": "keel_dask:DaskExecutor"}}
    monkeypatch.syspath_prepend(str(write_dist(tmp_path / "site", "keel-dask", entries)))
    # a plug-in executor runs pipeline steps (tests/pipeline/test_executors.py runs one);
    # search trials inside a step run on Ray only with executor: ray
    assert executor_settings(config) == ("dask", None)
    (tmp_path / "keel.yaml").write_text(
        MINIMAL.format(flavor="lightgbm", task="binary") + "executor: dask\n"
    )
    assert load_config(tmp_path).executor == "dask"
