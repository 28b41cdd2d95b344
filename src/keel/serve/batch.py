"""Batch scoring: a CSV or Parquet file in, a Parquet file with predictions out, streamed.

Parquet input is read a row group batch at a time and a CSV over 64 MiB in batches
(:class:`keel.data.sources.CsvFile`), so scoring a file of any size holds one batch in memory;
each batch's predictions are appended to the output as they are made. The output is written
to a temporary file and renamed when every row is scored, so a crash leaves no partial output.

Every batch goes through the model's coercion rules (:mod:`keel.validate.coerce`), the same
the server applies to a request: a row with a value that does not convert is not scored but
written to the rejects file (``<output>.rejects.csv``: line, field, value, reason), and values
scored with a warning (out of range, unseen category) are counted per column.

A model trained with feature views scores a file of entity keys as the server scores a request
of them: the view features the file lacks are filled per batch, joined as of each row's time
when the file has the training join's time column, else from the online store
(:mod:`keel.serve.viewfill`; ``features`` chooses). A view feature column the file carries
keeps its own values.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv

from keel.data.columns import check_columns
from keel.data.export import TableWriter
from keel.data.files import open_data, read_batches, retyped
from keel.data.reader import BadLine, CsvFile, Dialect, ReadOptions, dialect_of, file_columns
from keel.registry.package import ModelPackage
from keel.validate.coerce import Coerced

if TYPE_CHECKING:
    from keel.project import Project
    from keel.serve.viewfill import FeatureFill, ViewFill

__all__ = ["BATCH_ROWS", "REJECTS_SCHEMA", "Scored", "predict_file", "rejects_path"]

BATCH_ROWS = 1 << 18
REJECTS_SCHEMA = pa.schema(
    [("line", pa.int64()), ("field", pa.string()), ("value", pa.string()), ("reason", pa.string())]
)


@dataclass
class Scored:
    """What a batch-scoring run did.

    Attributes:
        rows: Rows scored (written to the output).
        rejected: Rows not scored: a value did not convert (see the rejects file).
        rejects: The rejects file, or None when no row was rejected.
        warnings: Per column and kind (``age: out_of_range``), rows scored with a warning.
        dialect: What the input was read as (delimiter, header, ...; or Parquet).
        bad_lines: Lines of a CSV input that could not be read as rows (file, line, reason,
            raw text); they are not scored.
        features: How the view features the file lacked were filled (None: none were).
    """

    rows: int = 0
    rejected: int = 0
    rejects: Path | None = None
    warnings: dict[str, int] = field(default_factory=dict)
    dialect: Dialect | None = None
    bad_lines: tuple[BadLine, ...] = ()
    features: FeatureFill | None = None


def rejects_path(output: str | Path) -> Path:
    """Where rows that could not be scored go: ``scored.parquet`` -> ``scored.rejects.csv``."""
    target = Path(output)
    return target.with_name(f"{target.stem}.rejects.csv")


def predict_file(
    package: ModelPackage,
    source: str | Path,
    output: str | Path,
    *,
    version: str = "",
    read: ReadOptions | None = None,
    fmt: str = "parquet",
    project: Project | None = None,
    features: str = "auto",
) -> Scored:
    """Score every row of ``source`` with the batch path of the same feature pipeline, into
    ``output`` as ``fmt`` (parquet, csv, jsonl or json: :class:`keel.data.export.TableWriter`,
    written once as the batches are scored).

    The output holds the input columns plus ``prediction``, then ``probability`` (binary: of
    the positive class) or one ``probability_<class>`` column per class (multiclass), and
    ``model_version``, written atomically. Regression outputs the value as ``prediction``.
    Rows whose values do not convert to the model's input types are written, with their line
    number (CSV: the file's line; Parquet: the row number, from 1), to
    :func:`rejects_path` instead.

    With ``project``, a model trained with feature views gets the view features the file
    lacks filled batch by batch as ``features`` says (``auto``, ``as-of``, ``online`` or
    ``file``: :mod:`keel.serve.viewfill`); they are output columns too, after the file's.
    A view feature column the file carries keeps its values. Without ``project`` the file
    must carry every input.

    Raises:
        ConfigError: The file is missing or neither CSV nor Parquet; ``features`` is unknown.
        DataValidationError: The CSV does not parse, or an input column is missing (or a view
            fill is impossible: :func:`keel.serve.viewfill.plan_fill`).
        NotFoundError: ``features="online"`` and the online store lacks a view.
    """
    path = Path(source)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    # this writer's own temporary files: two scorings of one output never share them
    mine = f"{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp = target.with_name(f".{target.name}.{mine}")
    rejects = rejects_path(target)
    tmp_rejects = rejects.with_name(f".{rejects.name}.{mine}")
    # the inputs read as text: the coercion parses them exactly as it parses JSON text
    options = replace(read or ReadOptions(), text=tuple(package.pipeline.inputs))
    opened = open_data(path, options)
    fill = view_fill(project, package, opened, features, where=str(path))
    try:
        scored = retyped(
            opened,
            lambda: _write(
                package,
                _filled(read_batches(opened, None, BATCH_ROWS), fill),
                _Outputs(TableWriter(tmp, fmt), tmp_rejects),
                version,
                _lines(opened),
            ),
        )
        scored.features = None if fill is None else fill.result()
        scored.dialect = dialect_of(opened)
        scored.bad_lines = opened.bad_lines if isinstance(opened, CsvFile) else ()
        if scored.bad_lines:  # malformed lines are rejects too, after the rows that were read
            _write_bad(tmp_rejects, scored.bad_lines, header=not scored.rejected)
            scored.rejected += len(scored.bad_lines)
        tmp.replace(target)
        if scored.rejected:
            tmp_rejects.replace(rejects)
            scored.rejects = rejects
        else:
            rejects.unlink(missing_ok=True)  # an old run's rejects would describe other data
    finally:
        tmp.unlink(missing_ok=True)
        tmp_rejects.unlink(missing_ok=True)
        if fill is not None:
            fill.close()
    return scored


def view_fill(
    project: Project | None,
    package: ModelPackage,
    opened: Path | CsvFile,
    features: str,
    *,
    where: str,
) -> ViewFill | None:
    """How the view features ``opened`` lacks are filled (None: it must carry every input),
    after checking that it has every other model input (:func:`check_columns`)."""
    inputs = list(package.pipeline.inputs)
    fill = None
    if project is not None:
        from keel.serve.viewfill import plan_fill

        columns = file_columns(opened)
        fill = plan_fill(project, package.sha256, inputs, columns, features, where=where)
    try:
        check_columns(opened, [c for c in inputs if fill is None or c not in fill.filled],
                      of="model input")  # fmt: skip
    except BaseException:
        if fill is not None:
            fill.close()
        raise
    return fill


def _filled(tables: Iterator[pa.Table], fill: ViewFill | None) -> Iterator[pa.Table]:
    """Each batch with the view features it lacks (as they come, when there is no fill)."""
    if fill is not None:
        fill.restart()  # a CSV read again once its types are settled: counted once
    for table in tables:
        yield table if fill is None else fill.fill(table)


@dataclass
class _Outputs:
    scored: TableWriter
    rejects: Path
    written: bool = False
    rejects_writer: pv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        self.scored.write(table)
        self.written = True

    def reject(self, table: pa.Table) -> None:
        if self.rejects_writer is None:
            self.rejects_writer = pv.CSVWriter(self.rejects, REJECTS_SCHEMA)
        self.rejects_writer.write_table(table)

    def close(self, *, failed: bool = False) -> None:
        """Finish both files (no batch at all: an empty output with no columns)."""
        if self.rejects_writer is not None:
            self.rejects_writer.close()
        self.scored.close(failed=failed)


def _lines(opened: object) -> Callable[[int, int], np.ndarray]:
    """Row ``start .. start + count - 1`` -> its line in the file (CSV) or row number (Parquet)."""
    if isinstance(opened, CsvFile):
        return opened.line_numbers
    return lambda start, count: np.arange(start + 1, start + count + 1, dtype=np.int64)


def _bad_rows(bad: tuple[BadLine, ...]) -> pa.Table:
    """Malformed lines as rejects: no field; the line's text as the value."""
    return pa.table(
        [
            pa.array([b.line for b in bad], type=pa.int64()),
            pa.array([None] * len(bad), type=pa.string()),
            pa.array([b.raw for b in bad], type=pa.string()),
            pa.array([b.reason for b in bad], type=pa.string()),
        ],
        schema=REJECTS_SCHEMA,
    )


def _write_bad(path: Path, bad: tuple[BadLine, ...], *, header: bool) -> None:
    """Append the malformed lines to the rejects file (a new one when ``header``)."""
    with path.open("wb" if header else "ab") as handle:
        options = pv.WriteOptions(include_header=header)
        writer = pv.CSVWriter(handle, REJECTS_SCHEMA, write_options=options)
        writer.write_table(_bad_rows(bad))
        writer.close()


def _write(
    package: ModelPackage,
    tables: Iterator[pa.Table],
    outputs: _Outputs,
    version: str,
    lines: Callable[[int, int], np.ndarray],
) -> Scored:
    scored = Scored()
    offset = 0
    failed = True
    try:
        for table in tables:
            coerced = package.pipeline.coerce(table)
            for issue in coerced.warnings:
                key = f"{issue.column}: {issue.kind}"
                scored.warnings[key] = scored.warnings.get(key, 0) + issue.count
            keep = ~coerced.rejected
            if not keep.all():
                outputs.reject(_rejected_rows(coerced, table, lines(offset, len(keep))))
                scored.rejected += int(coerced.rejected.sum())
                mask = pa.array(keep)
                table = table.filter(mask)
                coerced = Coerced(
                    coerced.table.filter(mask), coerced.warnings, np.zeros(len(table), bool)
                )
            if table.num_rows or not outputs.written:
                outputs.write(_score(package, table, coerced, version))
            scored.rows += table.num_rows
            offset += len(keep)
        failed = False
    finally:
        outputs.close(failed=failed)
    return scored


def _numbers_as_read(package: ModelPackage, table: pa.Table, coerced: Coerced) -> pa.Table:
    """The output's number inputs as the model read them (the file's text parsed by the
    rules): ``int`` inputs as int64, ``float`` ones as float64."""
    for rule in package.pipeline.coercer().rules:
        if rule.type not in ("int", "float") or rule.name not in table.column_names:
            continue
        values = coerced.table.column(rule.name)
        if rule.type == "int":
            values = values.cast(pa.int64(), safe=False)  # integral: the rules refuse 2.5
        index = table.schema.get_field_index(rule.name)
        table = table.set_column(index, rule.name, values)
    return table


def _rejected_rows(coerced: Coerced, raw: pa.Table, lines: np.ndarray) -> pa.Table:
    """One line per value that did not convert: line, field, value (as text), reason."""
    parts = []
    for issue in coerced.errors:
        values = raw.column(issue.column).take(pa.array(issue.rows))
        text = values.cast(pa.string()) if not pa.types.is_string(values.type) else values
        parts.append(
            pa.table(
                [
                    pa.array(lines[issue.rows], type=pa.int64()),
                    pa.array([issue.column] * issue.count, type=pa.string()),
                    text,
                    pa.array([issue.message] * issue.count, type=pa.string()),
                ],
                schema=REJECTS_SCHEMA,
            )
        )
    table = pa.concat_tables(parts)
    order = np.argsort(table.column("line").to_numpy(), kind="stable")
    return table.take(pa.array(order))


def _score(package: ModelPackage, table: pa.Table, coerced: Coerced, version: str) -> pa.Table:
    x = package.pipeline.transform(coerced)
    table = _numbers_as_read(package, table, coerced)
    if not len(x):  # every row rejected: the model is not asked about nothing
        width = len(package.classes) if package.task_spec.kind == "multiclass" else 0
        predicted = np.zeros((0, width) if width else 0, dtype=np.float64)
    else:
        predicted = package.model.predict(x)
    scored = table
    for name, values in package.task_spec.columns(predicted, package.classes).items():
        array = np.asarray(values)
        if array.dtype.kind in "fiub":
            column = pa.array(array, type=pa.float64())
        else:  # labels
            column = pa.array([str(v) for v in array.tolist()], type=pa.string())
        scored = scored.append_column(name, column)
    versions = pa.array([version], type=pa.string()).take([0] * table.num_rows)
    return scored.append_column("model_version", versions)
