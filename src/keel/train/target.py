"""The target column as a model sees it: 0/1, class codes ``0..k-1``, or float values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import ConfigError, DataValidationError

__all__ = ["encode_target"]


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
        task: ``binary``, ``multiclass`` or ``regression``.
        target: The column's name, for messages.
        positive_label: The positive class of a binary target (default: the last in sort order).
        classes: The training classes, when encoding evaluation data with them.

    Returns:
        ``(y, classes)``: 0/1 and ``[negative, positive]`` (binary); codes and the sorted class
        names (multiclass); float values and ``[]`` (regression).

    Raises:
        DataValidationError: Missing target values, the wrong number of classes, a class the
            model never saw, or a non-numeric regression target.
        ConfigError: ``positive_label`` is not a value of the target.
    """
    if values.null_count:
        raise DataValidationError(
            f"target '{target}' has {values.null_count} missing values; drop those rows or fill "
            "them before training.",
            field=target,
        )
    if task == "regression":
        return _numeric(values, target), []
    if pa.types.is_boolean(values.type):
        strings = pc.if_else(values, "True", "False")  # as str(bool), like the served labels
    else:
        strings = pc.cast(values, pa.string())
    text = np.asarray(strings.to_numpy(zero_copy_only=False), dtype=object)
    if task == "binary":
        return _binary(text, target, positive_label, classes)
    seen = classes if classes is not None else sorted({str(v) for v in np.unique(text)})
    if classes is None and len(seen) < 3:
        raise DataValidationError(
            f"target '{target}' has {len(seen)} classes ({seen}); model.task: multiclass needs at "
            "least 3. Use model.task: binary for two classes.",
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


def _binary(
    text: np.ndarray, target: str, positive_label: str | None, classes: list[str] | None
) -> tuple[np.ndarray, list[str]]:
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


def _numeric(values: Any, target: str) -> np.ndarray:
    try:
        cast = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataValidationError(
            f"target '{target}' is not numeric ({values.type}); model.task: regression needs "
            "numbers. Use a classification task for labels.",
            field=target,
        ) from exc
    return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)
