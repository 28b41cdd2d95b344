"""The trainer and task contract suites (keel.testing) over the built-ins and the example
plug-in, and what they catch in a broken one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from keel.testing import TaskContract, TrainerContract, check_task_plugin, check_trainer_plugin
from keel.train import Task, Trainer, task_for, trainer_for
from keel.train.sklearn import SklearnTrainer

from ..plugins import PLUGIN

GRADES = pa.array([str(g) for g in [3, 5, 5, 7, 8, 8, 9, 10, 10, 11, 12, 12, 13, 14, 15, 15, 17,
                                    18, 3, 7, 9, 11, 13, 14, 17, 18, 10, 12, 8, 5]])  # fmt: skip
TARGETS: dict[str, pa.Array] = {
    "binary": pa.array(["yes", "no"] * 20),
    "multiclass": pa.array(["Adelie", "Gentoo", "Chinstrap"] * 12),
    "regression": pa.array(np.linspace(-3.0, 40.0, 37)),
}


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(PLUGIN))
    import keel_example_plugin

    yield keel_example_plugin


class TestSklearnTrainer(TrainerContract):
    params: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "binary": {"estimator": "sklearn.linear_model.LogisticRegression"},
        "multiclass": {"estimator": "sklearn.linear_model.LogisticRegression"},
        "regression": {"estimator": "sklearn.linear_model.Ridge"},
    }

    @pytest.fixture
    def trainer(self) -> type[Trainer]:
        return SklearnTrainer


class TestLightGBMTrainer(TrainerContract):
    params: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "*": {"n_estimators": 40, "min_child_samples": 5}
    }

    @pytest.fixture
    def trainer(self) -> type[Trainer]:
        return trainer_for("lightgbm")


class TestPluginTrainer(TrainerContract):
    @pytest.fixture
    def trainer(self, plugin: Any) -> type[Trainer]:
        trainer: type[Trainer] = plugin.RidgeTrainer
        return trainer


@pytest.mark.parametrize("name", sorted(TARGETS))
class TestBuiltinTasks(TaskContract):
    @pytest.fixture
    def task(self, name: str) -> Task:
        return task_for(name)

    @pytest.fixture
    def target(self, name: str) -> pa.Array:
        return TARGETS[name]


class TestPluginTask(TaskContract):
    @pytest.fixture
    def task(self, plugin: Any) -> Task:
        made: Task = plugin.OrdinalTask()
        return made

    @pytest.fixture
    def target(self) -> pa.Array:
        return GRADES


def test_the_ordinal_plugin_task_ranks_numbers_and_answers_the_nearest_class(plugin: Any) -> None:
    task = plugin.OrdinalTask()
    y, classes = task.encode(pa.array([10, 9, 100, 9]), target="grade")
    assert classes == ["9", "10", "100"] and y.tolist() == [1.0, 0.0, 2.0, 0.0]
    assert task.answer(np.array([0.4, 1.6, 7.0, -2.0]), classes) == (["9", "100", "100", "9"], None)
    metrics = task.metrics(y, np.array([1.2, 1.0, 2.0, 0.0]))
    assert metrics["mae"] == 0.25 and metrics["accuracy"] == 0.75 and metrics["within_one"] == 1.0


def test_the_functions_run_the_suites(plugin: Any) -> None:
    check_trainer_plugin(plugin.RidgeTrainer, kinds=("regression", "binary"))
    check_task_plugin(plugin.OrdinalTask(), GRADES)


class _PickledTrainer(SklearnTrainer):
    """Saves a pickle: what the contract refuses."""

    flavor: ClassVar[str] = "pickled"

    def save(self) -> dict[str, bytes]:
        import pickle

        return {"model.pkl": pickle.dumps(self.estimator_)}


class _NoisyTask:
    """Answers a label the encoding never produced."""

    name, kind, headline = "noisy", "binary", "accuracy"
    greater_is_better, stratify = True, True
    gaps: ClassVar[dict[str, str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(task_for("binary"), name)

    def columns(self, prediction: np.ndarray, classes: Any) -> dict[str, np.ndarray]:
        return {"prediction": np.full(len(prediction), "?", dtype=object)}


def test_the_suites_catch_a_pickle_and_a_wrong_decoding() -> None:
    params = {"*": {"estimator": "sklearn.linear_model.LogisticRegression"}}
    with pytest.raises(AssertionError, match=r"round_trip_without_pickle failed: .*pickle"):
        check_trainer_plugin(_PickledTrainer, kinds=("binary",), params=params)
    with pytest.raises(AssertionError, match=r"perfect_prediction_decodes_to_the_target failed"):
        check_task_plugin(_NoisyTask(), ["yes", "no"] * 10)  # type: ignore[arg-type]
