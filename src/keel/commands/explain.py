"""`keel explain`: each input column's contribution to a registered model's predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.commands import reading
from keel.commands.output import (
    Format,
    FormatOpt,
    ProjectOpt,
    emit_json,
    err,
    out,
    print_wrapped,
)
from keel.commands.viewfill import FeaturesOpt
from keel.errors import ConfigError, DataValidationError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from keel.data.reader import BadLine, ReadOptions
    from keel.evaluate.explain import Explanation
    from keel.project import Project
    from keel.registry.package import ModelPackage
    from keel.serve.viewfill import FeatureFill
    from keel.validate.coerce import Coerced

__all__ = ["register"]

_SHOWN = 5  # contributions printed per row in text output
_SHOWN_REJECTS = 3  # rejected rows named in the warning
_FORMATS = ("json", "parquet", "csv", "jsonl")  # json: the document; the others: a table


def register(app: typer.Typer) -> None:
    """Add `keel explain` to the `keel` app."""
    app.command("explain")(explain)


def explain(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="NAME (NAME@ALIAS for keel.yaml's registry.alias, else the newest version), "
            "NAME@VERSION or NAME@ALIAS.",
        ),
    ],
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV or Parquet file of rows.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write FILE.json (the explanation) or a table: FILE.parquet/.pq, .csv or "
            ".jsonl/.ndjson, instead of printing.",
        ),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--output-format",
            help="json, parquet, csv or jsonl (default: the one --output's suffix names).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Explain the first N rows only.")
    ] = None,
    delimiter: reading.DelimiterOpt = None,
    header: reading.HeaderOpt = None,
    columns: reading.ColumnsOpt = None,
    encoding: reading.EncodingOpt = None,
    quote: reading.QuoteOpt = None,
    features: FeaturesOpt = "auto",
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Explain a model's predictions: each input column's contribution to the raw output.

    LightGBM and XGBoost give exact TreeSHAP values; other flavors (scikit-learn, mlp) get
    shap's Permutation estimate against training rows saved with the model (needs the
    'explain' extra: pip install 'keel\\[explain]'). For every row, base value +
    contributions = the raw output (log-odds for a binary classifier, per class for
    multiclass, the value for regression).

    Rows are read and checked as 'keel predict' reads them, with the same reading options: a
    row whose values do not convert to the model's input types is not explained; it is named
    (file and line; for Parquet the row number from 1) in a warning and, with --output,
    written to FILE.rejects.csv (line, field, value, reason). Each explained row carries its
    line (for a CSV the file's line, the header being line 1; Parquet: the row number from 1)
    and keel predict's answer for it: the predicted label as prediction, then probability
    (binary: of the positive class) or probability_CLASS (multiclass); a regression's
    prediction is the value.

    A model trained with feature views explains a file of entity keys as keel predict scores
    it: the view features the file lacks are joined as of each row's time (the column
    training joined as of) or, without it, read from the online store (--features).
    """
    from keel.api.registered import explain_hint, load_model
    from keel.commands.viewfill import print_filled
    from keel.data.export import table_format
    from keel.project import Project

    if output is None and output_format is not None:
        raise ConfigError("--output-format needs --output FILE.", field="output-format")
    fmt = None if output is None else table_format(output, output_format, accepted=_FORMATS)
    from keel.serve.batch import rejects_path

    given = reading.read_options(delimiter, header, columns, encoding, quote)
    model = load_model(ref, project=project)
    try:
        with Project(project) as opened:
            rows = _read_rows(model.package, input, limit, _na_values(project), opened, features,
                              given)  # fmt: skip
    except DataValidationError as exc:
        raise explain_hint(ref, project, exc) from exc
    filled = None if rows.features is None else rows.features.to_dict()
    if format is not Format.json:
        print_filled(filled)
    written = None if output is None else rejects_path(output)
    if written is not None:
        _write_rejects(rows.rejects, written)
    _nothing_left(rows, input, written)
    _report_rejects(rows, input, written)
    explanation = model.explain(rows.table)
    lines = rows.lines.tolist()
    if output is not None and fmt is not None:
        _write(explanation, output, fmt, lines)
        ref = f"{model.name}@{model.version}"
        out.print(f"explained {explanation.rows} rows with {ref} -> {output}")
    elif format is Format.json:
        emit_json(
            _document(explanation, lines) | {"rejected": rows.rejects.num_rows, "features": filled}
        )
    else:
        _print(explanation, [f"{rows.unit} {n}" for n in lines])


def _document(explanation: Explanation, lines: list[int]) -> dict[str, Any]:
    """The explanation's JSON (its rows as ``Model.explain`` gives them) and ``lines``: each
    row's file line (CSV: the header is line 1; Parquet: the row number from 1)."""
    return explanation.to_json() | {"lines": lines}


@dataclass(frozen=True)
class _Rows:
    """The rows to explain, the file line (CSV) or row number from 1 (Parquet) of each, and
    the rejects: one row per value that does not convert or line that does not parse."""

    table: pa.Table
    lines: np.ndarray
    rejects: pa.Table
    unit: str  # "line" (CSV) or "row" (Parquet)
    features: FeatureFill | None = None  # how the view features the file lacked were filled


def _na_values(project: Path | None) -> tuple[str, ...]:
    """The training source's NA tokens (``data.train.na_values``): ``keel predict`` reads a
    file to score with them, so ``keel explain`` does too."""
    from keel.config import load_config
    from keel.project import find_project

    return tuple(load_config(find_project(project)).data.train.na_values)


def _read_rows(
    package: ModelPackage,
    path: Path,
    limit: int | None,
    na_values: tuple[str, ...] = (),
    project: Project | None = None,
    features: str = "file",
    given: ReadOptions | None = None,
) -> _Rows:
    """The first ``limit`` rows of ``path`` read as ``keel predict`` reads them (``given``: the
    reading options; the model's inputs as text, with the training source's NA tokens unless
    ``given`` has others, parsed by its coercion rules; the view features it lacks filled as
    ``features`` says), split into those that convert and the rejects
    (:data:`keel.serve.batch.REJECTS_SCHEMA`).

    Raises:
        DataValidationError: An input column is missing (named, with what the file has).
    """
    from dataclasses import replace

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from keel.data.files import open_data, read_batches, retyped
    from keel.data.reader import CsvFile, ReadOptions
    from keel.serve.batch import BATCH_ROWS, view_fill

    inputs = list(package.pipeline.inputs)
    options = given or ReadOptions()
    tokens = options.na_values or na_values
    opened = open_data(path, replace(options, text=tuple(inputs), na_values=tokens))
    fill = view_fill(project, package, opened, features, where=str(path))

    def read() -> pa.Table:
        parts: list[pa.Table] = []
        count = 0
        if fill is not None:
            fill.restart()
        for part in read_batches(opened, None, BATCH_ROWS):
            part = part if limit is None else part.slice(0, limit - count)
            parts.append(part if fill is None else fill.fill(part))
            count += parts[-1].num_rows
            if limit is not None and count >= limit:
                break
        return pa.concat_tables(parts)

    try:
        table = retyped(opened, read)
    finally:
        if fill is not None:
            fill.close()
    csv = isinstance(opened, CsvFile)
    lines = (
        opened.line_numbers(0, table.num_rows)
        if isinstance(opened, CsvFile)
        else np.arange(1, table.num_rows + 1, dtype=np.int64)
    )
    coerced = package.pipeline.coerce(table)
    parts = [_rejected(coerced, table, lines)]
    if isinstance(opened, CsvFile):  # with --limit, the bad lines among the rows read
        last = int(lines.max(initial=0))
        parts.append(_bad_lines([b for b in opened.bad_lines if limit is None or b.line < last]))
    rejects = pa.concat_tables(parts)
    rejects = rejects.take(pc.sort_indices(rejects, [("line", "ascending")]))
    keep = ~coerced.rejected if len(coerced.rejected) else np.ones(table.num_rows, bool)
    filled = None if fill is None else fill.result()
    return _Rows(
        table.filter(pa.array(keep)), lines[keep], rejects, "line" if csv else "row", filled
    )


def _nothing_left(rows: _Rows, path: Path, written: Path | None) -> None:
    """Raise when every row read was rejected: the first reject's file, line and reason."""
    if rows.table.num_rows or not rows.rejects.num_rows:
        return
    first = rows.rejects.slice(0, 1).to_pylist()[0]
    total = rows.rejects.num_rows
    more = f" ({total} rejects in all)" if total > 1 else ""
    where = f"; all are in {written}" if written is not None else ""
    raise DataValidationError(
        f"{path}, {rows.unit} {first['line']}: {first['reason']}{more}; no row is left to "
        f"explain{where}. Fix the file (keel predict writes every such row to a rejects file).",
        field=first["field"],
        details={"file": str(path), rows.unit: first["line"], "rejected": total},
    )


def _rejected(coerced: Coerced, raw: pa.Table, lines: np.ndarray) -> pa.Table:
    """One reject per value that does not convert: line, field, value (as text), reason."""
    import pyarrow as pa

    from keel.serve.batch import REJECTS_SCHEMA

    parts = [REJECTS_SCHEMA.empty_table()]
    for issue in coerced.errors:
        values = raw.column(issue.column).take(pa.array(issue.rows)).cast(pa.string())
        columns = [
            pa.array(lines[issue.rows], type=pa.int64()),
            pa.array([issue.column] * issue.count, type=pa.string()),
            values,
            pa.array([issue.message] * issue.count, type=pa.string()),
        ]
        parts.append(pa.table(columns, schema=REJECTS_SCHEMA))
    return pa.concat_tables(parts)


def _bad_lines(bad: list[BadLine]) -> pa.Table:
    """Lines of a CSV file that do not parse as rows, as rejects (no field)."""
    import pyarrow as pa

    from keel.serve.batch import REJECTS_SCHEMA

    columns = [
        pa.array([b.line for b in bad], type=pa.int64()),
        pa.array([None] * len(bad), type=pa.string()),
        pa.array([b.raw for b in bad], type=pa.string()),
        pa.array([b.reason for b in bad], type=pa.string()),
    ]
    return pa.table(columns, schema=REJECTS_SCHEMA)


def _write_rejects(rejects: pa.Table, path: Path) -> None:
    """The rejects file beside the output, as ``keel predict`` writes it; an old one goes."""
    import pyarrow.csv as pv

    if rejects.num_rows:
        pv.write_csv(rejects, path)
    else:
        path.unlink(missing_ok=True)  # an old run's rejects would describe other data


def _report_rejects(rows: _Rows, path: Path, written: Path | None) -> None:
    """A warning naming the rows not explained: the first few, and the rejects file."""
    if not rows.rejects.num_rows:
        return
    shown = rows.rejects.slice(0, _SHOWN_REJECTS).to_pylist()
    from rich.markup import escape

    named = "; ".join(f"{rows.unit} {r['line']}: {escape(str(r['reason']))}" for r in shown)
    more = ", ..." if rows.rejects.num_rows > len(shown) else ""
    where = f" (all in {written})" if written is not None else " (--output FILE writes them all)"
    count = len(set(rows.rejects.column("line").to_pylist()))
    err.print(
        f"[yellow]warning:[/] {escape(str(path))}: {count} row(s) not explained (a value "
        f"that does not convert, or a line that does not parse){where}: {named}{more}",
        highlight=False,
        markup=True,
    )


def _write(explanation: Explanation, output: Path, fmt: str, lines: list[int]) -> None:
    """The JSON document (``json``, with each row's ``lines``), else one row per explained row
    in a table file, its file line (CSV; Parquet: row number) first."""
    import orjson
    import pyarrow as pa

    from keel.data.export import write_table

    if fmt == "json":
        document = _document(explanation, lines)
        output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        return
    columns: dict[str, Any] = {"line": pa.array(lines, type=pa.int64())}
    single = len(explanation.outputs) == 1
    for k, name in enumerate(explanation.outputs):
        stem = "" if single else f"{name}."
        columns[f"{stem}base_value"] = pa.array([explanation.base_value[k]] * explanation.rows)
        columns[f"{stem}margin"] = explanation.margin[:, k]
        for i, column in enumerate(explanation.columns):
            columns[f"{stem}contribution.{column}"] = explanation.contributions[:, k, i]
    for name, values in explanation.predicted().items():  # as keel predict names them
        labels = values.dtype == object
        columns[name] = pa.array(values.tolist() if labels else values)
    write_table(pa.table(columns), output, fmt)


def _print(explanation: Explanation, labels: list[str]) -> None:
    """Per row its file line and keel predict's answer, then per output (multiclass: class)
    the margin and the largest contributions."""
    from rich.markup import escape

    bases = dict(zip(explanation.outputs, explanation.base_value.tolist(), strict=True))
    word = "margin" if explanation.labels is not None else "value"  # regression: the output
    answers = _answers(explanation)
    for row, item in enumerate(explanation.row_json()):
        out.print(escape(f"{labels[row]}: {answers[row]}"), highlight=False)
        margins = item["margin"] if isinstance(item["margin"], dict) else {"": item["margin"]}
        per_output = (
            item["contributions"] if len(explanation.outputs) > 1 else {"": item["contributions"]}
        )
        for output, contributions in per_output.items():
            base = bases[output] if output else bases[explanation.outputs[0]]
            label = f"class {output}: " if output else ""
            top = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:_SHOWN]
            shown = ", ".join(f"{c} {v:+.4f}" for c, v in top)
            line = f"{label}{word} {margins[output]:.4f} = base {base:.4f} + {shown}, ..."
            print_wrapped(line, indent=2, markup=False)


def _answers(explanation: Explanation) -> list[str]:
    """Per row, ``prediction >50K, probability 0.8312``: keel predict's answer for it."""
    said: list[list[str]] = [[] for _ in range(explanation.rows)]
    for name, values in explanation.predicted().items():
        for row, value in enumerate(values.tolist()):
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            said[row].append(f"{name} {shown}")
    return [", ".join(parts) for parts in said]
