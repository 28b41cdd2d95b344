"""The target column as a model sees it: 0/1, class codes ``0..k-1``, or float values.

:func:`encode_target` encodes for any registered task (its :meth:`keel.train.Task.encode`);
the encoders of the built-in tasks are here for plug-in tasks to reuse.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import ConfigError, DataValidationError

__all__ = ["as_text", "check_complete", "encode_binary", "encode_classes", "encode_numeric",
           "encode_target"]  # fmt: skip


def encode_target(
    values: pa.ChunkedArray | pa.Array,
    *,
    task: str,
    target: str,
    positive_label: str | None = None,
    classes: list[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Encode a target column for a task.

    Args:
        values: The target column.
        task: A registered task: ``binary``, ``multiclass``, ``regression`` or a plug-in's.
        target: The column's name, for messages.
        positive_label: The positive class of a binary target (default: the last in sort order).
        classes: The training classes, when encoding evaluation data with them.

    Returns:
        ``(y, classes)``: 0/1 and ``[negative, positive]`` (binary); codes and the sorted class
        names (multiclass); float values and ``[]`` (regression); what a plug-in task encodes.

    Raises:
        DataValidationError: Missing target values, the wrong number of classes, a class the
            model never saw, or a non-numeric regression target.
        ConfigError: ``positive_label`` is not a value of the target, or the task is unknown.
    """
    from keel.train.tasks import task_for

    return task_for(task).encode(
        values, target=target, positive_label=positive_label, classes=classes
    )


def check_complete(values: pa.ChunkedArray | pa.Array, target: str) -> None:
    """A DataValidationError when the target has missing values."""
    if values.null_count:
        raise DataValidationError(
            f"target '{target}' has {values.null_count} missing values; drop those rows or fill "
            "them before training.",
            field=target,
        )


def as_text(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The values as an object array of ``str`` (booleans as ``True``/``False``, like served
    labels)."""
    if pa.types.is_boolean(values.type):
        strings = pc.if_else(values, "True", "False")
    else:
        strings = pc.cast(values, pa.string())
    return np.asarray(strings.to_numpy(zero_copy_only=False), dtype=object)


def encode_numeric(
    values: pa.ChunkedArray | pa.Array, *, target: str, task: str = "regression"
) -> np.ndarray:
    """Float values of a numeric target (``task`` names the task in the message)."""
    check_complete(values, target)
    try:
        cast = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataValidationError(
            f"target '{target}' is not numeric ({values.type}); model.task: {task} needs "
            "numbers. Use a classification task for labels.",
            field=target,
        ) from exc
    return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)


def encode_classes(
    values: pa.ChunkedArray | pa.Array,
    *,
    target: str,
    classes: list[str] | None = None,
    minimum: int = 3,
    task: str = "multiclass",
) -> tuple[np.ndarray, list[str]]:
    """Codes ``0..k-1`` in the order of ``classes`` (default: the sorted values), and the
    class names; at least ``minimum`` classes when they come from the data."""
    check_complete(values, target)
    text = as_text(values)
    seen = classes if classes is not None else sorted({str(v) for v in np.unique(text)})
    if classes is None and len(seen) < minimum:
        raise DataValidationError(
            f"target '{target}' has {len(seen)} classes ({seen}); model.task: {task} needs at "
            f"least {minimum}. Use model.task: binary for two classes.",
            field=target,
        )
    import pandas as pd

    codes = np.asarray(pd.Categorical(text, categories=seen).codes, dtype=np.int64)
    if (codes < 0).any():
        unseen = sorted({str(v) for v in text[codes < 0]})[:10]
        raise DataValidationError(
            f"target '{target}' has classes the model was not trained on: {unseen} (trained on "
            f"{seen}). Retrain with data that has them, or drop those rows.",
            field=target,
        )
    return codes, list(seen)


def encode_binary(
    values: pa.ChunkedArray | pa.Array,
    *,
    target: str,
    positive_label: str | None = None,
    classes: list[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """0/1 (1 = ``positive_label``, default the last value in sort order) and
    ``[negative, positive]``."""
    check_complete(values, target)
    text = as_text(values)
    seen = sorted({str(v) for v in np.unique(text)})
    if classes is not None:
        unseen = [v for v in seen if v not in classes]
        if unseen:
            raise DataValidationError(
                f"target '{target}' has values the model was not trained on: {unseen[:10]} "
                f"(classes {classes}).",
                field=target,
            )
        return (text == classes[1]).astype(np.int64), list(classes)
    if len(seen) != 2:
        hint = " Use model.task: multiclass." if len(seen) > 2 else ""
        raise DataValidationError(
            f"target '{target}' must have exactly 2 classes for a binary model; found "
            f"{len(seen)}: {seen[:10]}.{hint}",
            field=target,
        )
    positive = positive_label or seen[1]
    if positive not in seen:
        raise ConfigError(
            f"data.positive_label '{positive}' is not a value of '{target}' (values: {seen}).",
            field="data.positive_label",
        )
    negative = next(v for v in seen if v != positive)
    return (text == positive).astype(np.int64), [negative, positive]
