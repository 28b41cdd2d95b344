"""Tasks: what a model learns, beside which algorithm learns it (the flavor).

A :class:`Task` says how the target column becomes the numbers a trainer fits (``encode``),
which metrics judge the model and which one leads (``metrics``, ``headline``), and what a
prediction answers (``columns`` for a table, ``answer`` for a request, ``outputs`` for the
signature). Its ``kind`` is what the trainer fits and predicts: P(positive) for ``binary``,
class probabilities for ``multiclass``, values for ``regression``; any trainer flavor trains
any task through its kind. ``binary``, ``multiclass`` and ``regression`` are the built-ins; a
plug-in adds more through the ``keel.tasks`` entry-point group (see :mod:`keel.plugins`),
usually by subclassing the built-in of its kind and overriding what differs::

    class OrdinalTask(RegressionTask):
        name = "ordinal"              # ordered classes, fitted as a regression on their ranks
        ...

    task_for("binary").metrics(y, proba)["roc_auc"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from keel.errors import ConfigError
from keel.plugins import TASKS as REGISTRY
from keel.train.base import KINDS, TaskKind

__all__ = [
    "BinaryTask",
    "MulticlassTask",
    "RegressionTask",
    "Task",
    "task_for",
    "task_names",
]


@runtime_checkable
class Task(Protocol):
    """A learning task: target encoding, metrics, and the outputs of a prediction.

    Attributes:
        name: The task's name in keel.yaml (``model.task``).
        kind: What the trainer fits: ``binary``, ``multiclass`` or ``regression`` (the shape
            of ``Trainer.predict``: P(positive), ``(n, k)`` probabilities, or values).
        headline: The metric reports lead with (a key of :meth:`metrics`).
        greater_is_better: Whether a higher ``headline`` is better.
        stratify: Whether ``split.method: auto`` stratifies on the encoded target.
        gaps: Per-slice gap name -> the metric whose spread across groups it is.
    """

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> TaskKind: ...
    @property
    def headline(self) -> str: ...
    @property
    def greater_is_better(self) -> bool: ...
    @property
    def stratify(self) -> bool: ...
    @property
    def gaps(self) -> Mapping[str, str]: ...

    def encode(
        self,
        values: pa.ChunkedArray | pa.Array,
        *,
        target: str,
        positive_label: str | None = None,
        classes: list[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """The target as the trainer sees it, and the class names (``[]`` without classes).

        ``classes`` are the training classes when encoding evaluation data.
        """
        ...

    def metrics(self, y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
        """Metrics of predictions (``Trainer.predict``) against encoded ``y``; ``rows`` too."""
        ...

    def columns(self, prediction: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
        """A table's output columns, ``prediction`` first (batch scoring, ``predict``)."""
        ...

    def answer(
        self, prediction: np.ndarray, classes: Sequence[str]
    ) -> tuple[list[Any], list[Any] | None]:
        """A request's answer: JSON-ready predictions and probabilities (or None)."""
        ...

    def outputs(self, classes: Sequence[str]) -> list[dict[str, Any]]:
        """The signature's outputs: ``{"name", "type", ...}`` per output of :meth:`answer`."""
        ...


class RegressionTask:
    """Predict a number: float targets, RMSE/MAE/R2, the value as the answer."""

    name: ClassVar[str] = "regression"
    kind: ClassVar[TaskKind] = "regression"
    headline: ClassVar[str] = "rmse"
    greater_is_better: ClassVar[bool] = False
    stratify: ClassVar[bool] = False
    gaps: ClassVar[Mapping[str, str]] = {"rmse_difference": "rmse"}

    def encode(
        self,
        values: pa.ChunkedArray | pa.Array,
        *,
        target: str,
        positive_label: str | None = None,
        classes: list[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        from keel.train.target import encode_numeric

        return encode_numeric(values, target=target, task=self.name), []

    def metrics(self, y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
        from keel.evaluate.metrics import regression_metrics

        return regression_metrics(y, prediction)

    def columns(self, prediction: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
        return {"prediction": np.asarray(prediction, dtype=np.float64)}

    def answer(
        self, prediction: np.ndarray, classes: Sequence[str]
    ) -> tuple[list[Any], list[Any] | None]:
        return [float(v) for v in prediction], None

    def outputs(self, classes: Sequence[str]) -> list[dict[str, Any]]:
        return [{"name": "prediction", "type": "float"}]


class BinaryTask:
    """Two classes: 0/1 targets, P(positive) from the trainer, label at threshold 0.5."""

    name: ClassVar[str] = "binary"
    kind: ClassVar[TaskKind] = "binary"
    headline: ClassVar[str] = "roc_auc"
    greater_is_better: ClassVar[bool] = True
    stratify: ClassVar[bool] = True
    gaps: ClassVar[Mapping[str, str]] = {
        "selection_rate_difference": "positive_rate",
        "accuracy_difference": "accuracy",
    }
    threshold: ClassVar[float] = 0.5

    def encode(
        self,
        values: pa.ChunkedArray | pa.Array,
        *,
        target: str,
        positive_label: str | None = None,
        classes: list[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        from keel.train.target import encode_binary

        return encode_binary(values, target=target, positive_label=positive_label, classes=classes)

    def metrics(self, y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
        from keel.evaluate.metrics import binary_metrics

        return binary_metrics(y, prediction, threshold=self.threshold)

    def columns(self, prediction: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
        proba = np.asarray(prediction, dtype=np.float64)
        labels = np.where(proba >= self.threshold, classes[1], classes[0]).astype(object)
        return {"prediction": labels, "probability": proba}

    def answer(
        self, prediction: np.ndarray, classes: Sequence[str]
    ) -> tuple[list[Any], list[Any] | None]:
        probabilities = [float(p) for p in prediction]
        negative, positive = classes[0], classes[1]
        return [positive if p >= self.threshold else negative for p in probabilities], probabilities

    def outputs(self, classes: Sequence[str]) -> list[dict[str, Any]]:
        label = {"name": "prediction", "type": "string", "classes": list(classes)}
        return [label, {"name": "probability", "type": "float", "of": classes[1]}]


class MulticlassTask:
    """Three or more classes: codes ``0..k-1``, per-class probabilities, label by argmax."""

    name: ClassVar[str] = "multiclass"
    kind: ClassVar[TaskKind] = "multiclass"
    headline: ClassVar[str] = "accuracy"
    greater_is_better: ClassVar[bool] = True
    stratify: ClassVar[bool] = True
    gaps: ClassVar[Mapping[str, str]] = {"accuracy_difference": "accuracy"}

    def encode(
        self,
        values: pa.ChunkedArray | pa.Array,
        *,
        target: str,
        positive_label: str | None = None,
        classes: list[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        from keel.train.target import encode_classes

        return encode_classes(values, target=target, classes=classes)

    def metrics(self, y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
        from keel.evaluate.metrics import multiclass_metrics

        return multiclass_metrics(y, prediction)

    def columns(self, prediction: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
        proba = np.asarray(prediction, dtype=np.float64).reshape(len(prediction), len(classes))
        names = np.asarray(list(classes), dtype=object)
        out = {"prediction": names[np.argmax(proba, axis=1)] if len(proba) else names[:0]}
        out |= {f"probability_{name}": proba[:, i] for i, name in enumerate(classes)}
        return out

    def answer(
        self, prediction: np.ndarray, classes: Sequence[str]
    ) -> tuple[list[Any], list[Any] | None]:
        names = np.asarray(list(classes), dtype=object)
        return names[np.argmax(prediction, axis=1)].tolist(), np.asarray(prediction).tolist()

    def outputs(self, classes: Sequence[str]) -> list[dict[str, Any]]:
        label = {"name": "prediction", "type": "string", "classes": list(classes)}
        return [label, {"name": "probabilities", "type": "float[]", "classes": list(classes)}]


def task_names() -> tuple[str, ...]:
    """Every registered task: the built-ins, then installed plug-ins."""
    return REGISTRY.names()


def task_for(task: str | Task) -> Task:
    """The :class:`Task` registered as ``task`` (a Task passes through).

    Raises:
        ConfigError: No task has that name (the message lists them and how a plug-in adds
            one), or a plug-in's object is not a Task.
    """
    if not isinstance(task, str):
        return task
    found = _TASKS.get(task)
    if found is not None:
        return found
    loaded = REGISTRY.load(task)
    made = loaded() if isinstance(loaded, type) else loaded
    if not isinstance(made, Task) or made.kind not in KINDS:
        kind = getattr(made, "kind", None)
        raise ConfigError(
            f"model.task '{task}': the plug-in's {type(made).__name__} is not a keel Task "
            f"(needs name, kind in {', '.join(KINDS)} (got {kind!r}), headline, "
            "greater_is_better, stratify, gaps, encode, metrics, columns, answer, outputs). "
            "Run keel.testing.check_task_plugin on it.",
            field="model.task",
        )
    if task in REGISTRY.builtins:
        _TASKS[task] = made
    return made


_TASKS: dict[str, Task] = {}
