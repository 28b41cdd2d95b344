"""``model.task: ordinal``: ordered classes (grades, ratings, sizes).

The classes are ranked (numerically when every value is a number, else alphabetically), the
trainer fits a regression on the ranks, and a prediction answers the nearest class. Metrics are
on ranks: ``mae`` (the headline: how many steps off), exact ``accuracy``, ``within_one``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from keel.errors import DataValidationError
from keel.train.target import as_text, check_complete, encode_classes
from keel.train.tasks import RegressionTask

__all__ = ["OrdinalTask"]


class OrdinalTask(RegressionTask):
    """Ordered classes, fitted as a regression on their ranks, answered as the nearest class."""

    name: ClassVar[str] = "ordinal"
    headline: ClassVar[str] = "mae"
    gaps: ClassVar[Mapping[str, str]] = {"mae_difference": "mae"}

    def encode(
        self,
        values: pa.ChunkedArray | pa.Array,
        *,
        target: str,
        positive_label: str | None = None,
        classes: list[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        check_complete(values, target)
        if classes is None:
            classes = sorted({str(v) for v in as_text(values)}, key=_rank_key)
            if len(classes) < 3:
                raise DataValidationError(
                    f"target '{target}' has {len(classes)} values; model.task: ordinal needs at "
                    "least 3 ordered classes. Use model.task: binary for two.",
                    field=target,
                )
        codes, classes = encode_classes(values, target=target, classes=classes, task=self.name)
        return codes.astype(np.float64), classes

    def metrics(self, y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
        ranks = np.clip(np.rint(prediction), 0, None)
        steps = np.abs(ranks - y)
        rows = len(y)
        return {
            "rows": rows,
            "mae": float(steps.mean()) if rows else None,
            "accuracy": float(np.mean(steps == 0)) if rows else None,
            "within_one": float(np.mean(steps <= 1)) if rows else None,
            "rmse": float(np.sqrt(np.mean((prediction - y) ** 2))) if rows else None,
        }

    def columns(self, prediction: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
        names = np.asarray(list(classes), dtype=object)
        ranks = np.clip(np.rint(np.asarray(prediction, dtype=np.float64)), 0, len(names) - 1)
        return {"prediction": names[ranks.astype(np.int64)]}

    def answer(
        self, prediction: np.ndarray, classes: Sequence[str]
    ) -> tuple[list[Any], list[Any] | None]:
        return self.columns(prediction, classes)["prediction"].tolist(), None

    def outputs(self, classes: Sequence[str]) -> list[dict[str, Any]]:
        return [{"name": "prediction", "type": "string", "classes": list(classes)}]


def _rank_key(value: str) -> tuple[int, float, str]:
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value
