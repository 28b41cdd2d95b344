"""Batch scoring: a CSV or Parquet file in, a Parquet file with predictions out."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from keel.data.sources import read_table
from keel.registry.package import ModelPackage

__all__ = ["predict_file"]


def predict_file(
    package: ModelPackage, source: str | Path, output: str | Path, *, version: str = ""
) -> int:
    """Score every row of ``source`` with the batch path of the same feature pipeline.

    The output holds the input columns plus ``prediction``, then ``probability`` (binary: of
    the positive class) or one ``probability_<class>`` column per class (multiclass), and
    ``model_version``, written atomically. Regression outputs the value as ``prediction``.
    Returns the number of rows scored.
    """
    table = read_table(source)
    if package.task == "regression":
        values = pa.array(package.predict(table), type=pa.float64())
        scored = table.append_column("prediction", values)
    else:
        proba = package.predict_proba(table)
        labels = pa.array(package.labels(proba).tolist(), type=pa.string())
        scored = table.append_column("prediction", labels)
        if proba.ndim == 1:
            scored = scored.append_column("probability", pa.array(proba, type=pa.float64()))
        else:
            for i, name in enumerate(package.classes):
                column = pa.array(proba[:, i], type=pa.float64())
                scored = scored.append_column(f"probability_{name}", column)
    scored = scored.append_column(
        "model_version", pa.array([version] * table.num_rows, type=pa.string())
    )
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(scored, tmp)
    tmp.replace(target)
    return int(table.num_rows)
