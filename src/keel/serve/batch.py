"""Batch scoring: a CSV or Parquet file in, a Parquet file with predictions out, streamed.

Parquet input is read a row group batch at a time and a CSV over 64 MiB in batches
(:class:`keel.data.sources.CsvFile`), so scoring a file of any size holds one batch in memory;
each batch's predictions are appended to the output as they are made. The output is written
to a temporary file and renamed when every row is scored, so a crash leaves no partial output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from keel.data.files import open_data, read_batches, retyped
from keel.registry.package import ModelPackage

__all__ = ["BATCH_ROWS", "predict_file"]

BATCH_ROWS = 1 << 18


def predict_file(
    package: ModelPackage, source: str | Path, output: str | Path, *, version: str = ""
) -> int:
    """Score every row of ``source`` with the batch path of the same feature pipeline.

    The output holds the input columns plus ``prediction``, then ``probability`` (binary: of
    the positive class) or one ``probability_<class>`` column per class (multiclass), and
    ``model_version``, written atomically. Regression outputs the value as ``prediction``.
    Returns the number of rows scored.

    Raises:
        ConfigError: The file is missing or neither CSV nor Parquet.
        DataValidationError: The CSV does not parse, or a row does not fit the model's inputs.
    """
    path = Path(source)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    opened = open_data(path)
    try:
        rows = retyped(
            opened, lambda: _write(package, read_batches(opened, None, BATCH_ROWS), tmp, version)
        )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _write(package: ModelPackage, tables: Iterator[pa.Table], tmp: Path, version: str) -> int:
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for table in tables:
            scored = _score(package, table, version)
            if writer is None:
                writer = pq.ParquetWriter(tmp, scored.schema)
            writer.write_table(scored)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no batch at all: an empty file with no columns
        pq.write_table(pa.table({}), tmp)
    return rows


def _score(package: ModelPackage, table: pa.Table, version: str) -> pa.Table:
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
    versions = pa.array([version], type=pa.string()).take([0] * table.num_rows)
    return scored.append_column("model_version", versions)
