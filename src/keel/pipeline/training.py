"""The training rows as the ``train`` and ``tune`` steps see them: the target encoded for the
task, the feature matrix from the fitted feature pipeline, sample weights, and the fit and
validation rows. One preparation, so every search trial fits on what the final model fits on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from keel.errors import ConfigError, DataValidationError
from keel.pipeline.contract import SCHEMA_FILE
from keel.project import Project
from keel.types import Artifact

if TYPE_CHECKING:  # imported where used: declaring steps loads neither NumPy nor Arrow
    import numpy as np
    import pyarrow as pa

__all__ = ["TrainingData", "sample_weights", "target_labels", "training_data"]


def target_labels(
    project: Project, table: pa.Table, classes: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """The target encoded for ``model.task``: 0/1 and ``[negative, positive]`` (binary), codes
    and class names (multiclass), floats and ``[]`` (regression). Pass the training
    ``classes`` to encode evaluation data the way the model was trained."""
    from keel.train.target import encode_target

    data = project.config.data
    if data.target not in table.column_names:
        raise DataValidationError(
            f"target '{data.target}' is not a column of the data ({table.column_names[:20]}).",
            field="data.target",
        )
    return encode_target(
        table.column(data.target),
        task=project.config.model.task,
        target=data.target,
        positive_label=data.positive_label,
        classes=classes,
    )


def sample_weights(
    project: Project, table: pa.Table, *, inputs: Mapping[str, Any]
) -> np.ndarray | None:
    """``model.sample_weight``'s column as float weights, or None when it is not set.

    Raises:
        ConfigError: The column is missing, or it is also a model input.
        DataValidationError: A weight is not a number, missing, infinite or negative.
    """
    column = project.config.model.sample_weight
    if column is None:
        return None
    if column in inputs:
        raise ConfigError(
            f"model.sample_weight: column '{column}' is also a model input; a weight must not be "
            f"a feature. Add it to data.drop (or set its role to ignored in {SCHEMA_FILE}).",
            field="model.sample_weight",
        )
    import numpy as np

    values = _column_values(table, column, field="model.sample_weight")
    try:
        weights = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"model.sample_weight: column '{column}' is not numeric. Name a numeric column."
        raise DataValidationError(msg, field="model.sample_weight") from exc
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise DataValidationError(
            f"model.sample_weight: column '{column}' has missing, infinite or negative weights; "
            "weights must be finite and >= 0.",
            field="model.sample_weight",
        )
    return weights


def _column_values(table: pa.Table, column: str | None, *, field: str = "split.column") -> Any:
    if column is None or column not in table.column_names:
        raise ConfigError(
            f"{field}: column '{column}' is not in the training data (columns: "
            f"{table.column_names[:20]}).",
            field=field,
        )
    return table.column(column).to_numpy()


@dataclass(frozen=True)
class TrainingData:
    """The training rows as the ``train`` and ``tune`` steps see them, made once, one way.

    Attributes:
        x: The feature matrix (out-of-fold target encodings: no row sees its own label).
        y: The encoded target.
        classes: Class names by code (empty for regression).
        weights: ``model.sample_weight`` per row, or None.
        values: The ``split.column`` values for time and group splits, else None.
        fit_rows: Rows the model is fitted on.
        valid_rows: Rows early stopping watches (``model.validation_fraction``, per ``split:``).
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    weights: np.ndarray | None
    values: Any
    fit_rows: np.ndarray
    valid_rows: np.ndarray


def training_data(project: Project, snapshot: Artifact, features: Artifact) -> TrainingData:
    """The training snapshot transformed by the fitted feature pipeline and split into fit and
    validation rows: the one preparation both the final fit and every search trial use.

    Raises:
        ConfigError: ``split.column`` or ``model.sample_weight`` names no column, or the weight
            column is a model input.
        DataValidationError: Weights are missing, negative or not numbers; a value does not
            convert to its input's type.
    """
    from keel.data import read_snapshot
    from keel.features.custom import importable_from
    from keel.features.pipeline import FeaturePipeline
    from keel.train.splits import validation_split

    cfg = project.config
    table = read_snapshot(project.artifacts, snapshot)
    with importable_from(project.root):  # custom feature modules live in the project
        pipe = FeaturePipeline.from_state(orjson.loads(project.artifacts.get(features.sha256)))
        y, classes = target_labels(project, table)
        x = pipe.transform_training(table, y)
    weights = sample_weights(project, table, inputs=pipe.inputs)
    split = cfg.split
    values = _column_values(table, split.column) if split.method in ("time", "group") else None
    fit_rows, valid_rows = validation_split(
        y,
        task=cfg.model.task,
        fraction=cfg.model.validation_fraction,
        seed=cfg.model.seed,
        method=split.method,
        values=values,
        column=split.column,
    )
    return TrainingData(x, y, classes, weights, values, fit_rows, valid_rows)
