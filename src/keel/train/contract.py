"""Contract suites for trainer flavors and tasks, built-in or plug-in (see :mod:`keel.testing`).

Subclass with pytest and provide the fixtures, or call the ``check_*`` functions, which run
every check and raise ``AssertionError`` naming the one that failed::

    from keel.testing import TaskContract, TrainerContract, check_trainer_plugin

    class TestRidge(TrainerContract):
        kinds = ("binary", "regression")          # the task kinds the flavor trains

        @pytest.fixture
        def trainer(self):
            return RidgeTrainer

    check_trainer_plugin(RidgeTrainer, kinds=("binary", "regression"))

The data are small and synthetic (a few hundred rows, easy to learn), so a suite runs in
seconds and needs nothing beyond Keel.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar
from unittest import mock

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from keel.train.base import HISTORY_METRICS, KINDS, Trainer
from keel.train.tasks import Task

__all__ = ["TaskContract", "TrainerContract", "check_task_plugin", "check_trainer_plugin"]

_ROWS, _FEATURES, _CLASSES = 360, 5, 3


def synthetic(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Easy, seeded ``(x, y)`` for a task kind: 0/1, codes ``0..2`` or values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(_ROWS, _FEATURES))
    signal = x @ np.array([1.5, -2.0, 1.0, 0.5, 0.0])
    if kind == "regression":
        return x, 10.0 + 3.0 * signal + rng.normal(scale=0.5, size=_ROWS)
    if kind == "binary":
        return x, (signal + rng.normal(scale=0.5, size=_ROWS) > 0).astype(np.int64)
    edges = np.quantile(signal, [1 / 3, 2 / 3])
    return x, np.searchsorted(edges, signal).astype(np.int64)


@contextmanager
def _no_unpickling() -> Iterator[None]:
    """Fail any ``pickle`` load for the duration (what ``Trainer.load`` must never do)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Trainer.load unpickled something; use a safe format")

    with (
        mock.patch.object(pickle, "loads", refuse),
        mock.patch.object(pickle, "load", refuse),
        mock.patch.object(pickle, "Unpickler", refuse),
    ):
        yield


class TrainerContract:
    """What every trainer flavor must do (the :class:`keel.train.Trainer` protocol).

    Provide a ``trainer`` fixture returning the trainer class. Set ``kinds`` to the task kinds
    it trains and ``params`` to hyper-parameters that train quickly (kind -> params, ``*`` for
    every kind).
    """

    kinds: ClassVar[tuple[str, ...]] = KINDS
    params: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def _params(self, kind: str) -> dict[str, Any]:
        return dict(self.params.get(kind, self.params.get("*", {})))

    def _fit(self, trainer: type[Trainer], kind: str, seed: int = 3) -> tuple[Trainer, Any]:
        x, y = synthetic(kind)
        model = trainer(task=kind, params=self._params(kind), seed=seed)
        fitted = model.fit(x[:240], y[:240], x_valid=x[240:300], y_valid=y[240:300])
        assert fitted is model, "fit must return self"
        return model, (x[300:], y[300:])

    def test_declares_a_flavor(self, trainer: type[Trainer]) -> None:
        """The class names its flavor; an unfitted instance stores its arguments unchanged."""
        assert isinstance(getattr(trainer, "flavor", None), str) and trainer.flavor
        for kind in self.kinds:
            params = self._params(kind)
            model = trainer(task=kind, params=params, seed=7)
            assert (model.task, model.params, model.seed) == (kind, params, 7)
            assert model.history_ == {} and model.best_iteration_ is None

    def test_predictions_have_the_kind_shape(self, trainer: type[Trainer]) -> None:
        """P(positive) in [0, 1], rows of k probabilities, or finite values; better than
        chance on easy data."""
        for kind in self.kinds:
            model, (x, y) = self._fit(trainer, kind)
            out = np.asarray(model.predict(x))
            if kind == "binary":
                assert out.shape == (len(x),) and ((out >= 0) & (out <= 1)).all()
                assert np.mean((out >= 0.5) == y) > 0.75, "binary accuracy at chance level"
            elif kind == "multiclass":
                assert out.shape == (len(x), _CLASSES)
                assert np.allclose(out.sum(axis=1), 1.0, atol=1e-4)
                assert np.mean(np.argmax(out, axis=1) == y) > 0.6, "multiclass at chance level"
            else:
                assert out.shape == (len(x),) and np.isfinite(out).all()
                assert np.corrcoef(out, y)[0, 1] > 0.8, "regression does not follow the target"

    def test_round_trip_without_pickle(self, trainer: type[Trainer]) -> None:
        """``save`` gives named bytes that are not pickles; ``load`` rebuilds the same model
        without unpickling anything."""
        for kind in self.kinds:
            model, (x, _) = self._fit(trainer, kind)
            files = model.save()
            assert files and all(
                isinstance(n, str) and isinstance(b, bytes) for n, b in files.items()
            )
            assert not any(b.startswith(b"\x80") for b in files.values()), "a file is a pickle"
            with _no_unpickling():
                loaded = trainer.load(files)
            assert loaded.task == kind
            np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6, atol=1e-9)

    def test_same_seed_same_bytes(self, trainer: type[Trainer]) -> None:
        """The same data, parameters and seed give byte-identical files."""
        for kind in self.kinds:
            first, _ = self._fit(trainer, kind)
            second, _ = self._fit(trainer, kind)
            assert first.save() == second.save(), f"{kind}: two fits differ"

    def test_validation_history(self, trainer: type[Trainer]) -> None:
        """Validation metrics per iteration use Keel's names for the kind (first: the
        early-stopping metric); the kept iteration is within the curve."""
        for kind in self.kinds:
            model, _ = self._fit(trainer, kind)
            names = set(HISTORY_METRICS[kind])
            assert set(model.history_) <= names, (
                f"{kind}: unknown metrics {set(model.history_) - names}"
            )
            lengths = {len(v) for v in model.history_.values()}
            assert len(lengths) <= 1, "every metric needs one value per iteration"
            best = model.best_iteration_
            assert best is None or 1 <= best <= max(lengths, default=0)
            assert isinstance(model.facts_, dict)
            orjson.dumps(model.facts_)  # facts are tracked: JSON only


class TaskContract:
    """What every task must do (the :class:`keel.train.Task` protocol).

    Provide fixtures ``task`` (the Task object) and ``target`` (a pyarrow array of at least
    30 target values the task accepts, every class present at least twice).
    """

    def test_attributes(self, task: Task, target: pa.Array) -> None:
        """A name, a kind Keel's trainers fit, and a headline among the metrics."""
        assert isinstance(task, Task), "missing members of the Task protocol"
        assert isinstance(task.name, str) and task.name
        assert task.kind in KINDS, f"kind {task.kind!r} is not one of {KINDS}"
        assert isinstance(task.greater_is_better, bool) and isinstance(task.stratify, bool)
        y, classes = task.encode(target, target="y")
        metrics = task.metrics(y, _perfect(task, y, classes))
        assert task.headline in metrics, f"headline {task.headline!r} not in {sorted(metrics)}"
        for gap, metric in task.gaps.items():
            assert metric in metrics, f"gap {gap} needs metric {metric!r}, not computed"

    def test_encode(self, task: Task, target: pa.Array) -> None:
        """One finite value per row in the kind's encoding; encoding again with the
        training classes gives the same values."""
        y, classes = task.encode(target, target="y")
        assert isinstance(y, np.ndarray) and y.shape == (len(target),)
        assert np.isfinite(y.astype(np.float64)).all()
        assert all(isinstance(c, str) for c in classes)
        if task.kind == "binary":
            assert set(np.unique(y)) <= {0, 1} and len(classes) == 2
        if task.kind == "multiclass":
            assert y.min() >= 0 and y.max() < len(classes)
        again, same = task.encode(target, target="y", classes=classes or None)
        assert np.array_equal(again, y) and same == classes

    def test_metrics_rank_a_perfect_model_first(self, task: Task, target: pa.Array) -> None:
        """The headline of a perfect prediction beats that of a wrong one."""
        y, classes = task.encode(target, target="y")
        good = task.metrics(y, _perfect(task, y, classes))[task.headline]
        bad = task.metrics(y, _wrong(task, y, classes))[task.headline]
        assert isinstance(good, int | float) and isinstance(bad, int | float)
        assert (good > bad) if task.greater_is_better else (good < bad), (good, bad)
        orjson.dumps(task.metrics(y, _perfect(task, y, classes)))  # reports are JSON

    def test_a_perfect_prediction_decodes_to_the_target(self, task: Task, target: pa.Array) -> None:
        """``columns`` inverts ``encode``: the perfect prediction answers the original values."""
        y, classes = task.encode(target, target="y")
        columns = task.columns(_perfect(task, y, classes), classes)
        assert next(iter(columns)) == "prediction"
        assert all(len(values) == len(y) for values in columns.values())
        got = np.asarray(columns["prediction"])
        if got.dtype.kind in "fiu":
            expected = np.asarray(pc.cast(target, pa.float64()), dtype=np.float64)
            np.testing.assert_allclose(got.astype(np.float64), expected, rtol=1e-9)
        else:
            from keel.train.target import as_text

            assert [str(v) for v in got] == [str(v) for v in as_text(target)]

    def test_answer_matches_columns_and_signature(self, task: Task, target: pa.Array) -> None:
        """The online answer is JSON, agrees with the batch columns and the signature."""
        y, classes = task.encode(target, target="y")
        prediction = _perfect(task, y, classes)
        values, probabilities = task.answer(prediction, classes)
        orjson.dumps({"predictions": values, "probabilities": probabilities})
        assert len(values) == len(y)
        batch = task.columns(prediction, classes)["prediction"]
        assert [str(v) for v in values] == [str(v) for v in np.asarray(batch).tolist()]
        outputs = task.outputs(classes)
        assert outputs and outputs[0]["name"] == "prediction"
        assert all({"name", "type"} <= set(o) for o in outputs)
        assert (probabilities is None) == (len(outputs) == 1), "one output per answer part"


def _perfect(task: Task, y: np.ndarray, classes: list[str]) -> np.ndarray:
    if task.kind == "multiclass":
        return np.eye(len(classes))[y.astype(np.int64)]
    return y.astype(np.float64)


def _wrong(task: Task, y: np.ndarray, classes: list[str]) -> np.ndarray:
    if task.kind == "multiclass":
        return np.eye(len(classes))[(y.astype(np.int64) + 1) % len(classes)]
    if task.kind == "binary":
        return 1.0 - y.astype(np.float64)
    values = y.astype(np.float64)
    return values + 3.0 * (float(np.std(values)) + 1.0)


def check_trainer_plugin(
    trainer: type[Trainer],
    *,
    kinds: tuple[str, ...] = KINDS,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Run every :class:`TrainerContract` check on a trainer class.

    Args:
        trainer: The trainer class (what the ``keel.trainers`` entry point loads).
        kinds: The task kinds it trains.
        params: Quick hyper-parameters per kind (``*``: every kind).

    Raises:
        AssertionError: A check failed; the message names it.
    """
    suite = type("Suite", (TrainerContract,), {"kinds": kinds, "params": params or {}})()
    _run(suite, lambda check: check(trainer))


def check_task_plugin(task: Task, target: pa.Array | list[Any]) -> None:
    """Run every :class:`TaskContract` check on a task and target values it accepts.

    Raises:
        AssertionError: A check failed; the message names it.
    """
    values = target if isinstance(target, pa.Array) else pa.array(target)
    _run(TaskContract(), lambda check: check(task, values))


def _run(suite: object, call: Callable[[Callable[..., None]], None]) -> None:
    for name in sorted(n for n in dir(suite) if n.startswith("test_")):
        try:
            call(getattr(suite, name))
        except AssertionError as exc:
            raise AssertionError(f"{type(suite).__name__}.{name} failed: {exc}") from exc
