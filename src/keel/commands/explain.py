"""`keel explain`: each input column's contribution to a registered model's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.evaluate.explain import Explanation

__all__ = ["register"]

_SHOWN = 5  # contributions printed per row in text output


def register(app: typer.Typer) -> None:
    """Add `keel explain` to the `keel` app."""
    app.command("explain")(explain)


def explain(
    ref: Annotated[str, typer.Argument(metavar="MODEL", help="NAME, NAME@VERSION or NAME@ALIAS.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV or Parquet file of rows.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write FILE.json or FILE.parquet instead of printing."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Explain the first N rows only.")
    ] = None,
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Explain a model's predictions: each input column's contribution to the raw output.

    LightGBM and XGBoost give exact TreeSHAP values; other flavors (scikit-learn, mlp) get
    shap's Permutation estimate against training rows saved with the model (needs the
    'explain' extra: pip install 'keel\\[explain]'). For every row, base value +
    contributions = the raw output (log-odds for a binary classifier, per class for
    multiclass, the value for regression).
    """
    from keel.api.registered import load_model
    from keel.data.sources import read_table

    if output is not None and output.suffix not in (".json", ".parquet"):
        msg = f"--output {output}: write a .json or .parquet file."
        raise ConfigError(msg, field="output")
    model = load_model(ref, project=project)
    table = read_table(input)
    if limit is not None:
        table = table.slice(0, limit)
    explanation = model.explain(table)
    if output is not None:
        _write(explanation, output)
        out.print(f"explained {explanation.rows} rows with {model!r} -> {output}")
    elif format is Format.json:
        emit_json(explanation.to_json())
    else:
        _print(explanation)


def _write(explanation: Explanation, output: Path) -> None:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    if output.suffix == ".json":
        output.write_bytes(orjson.dumps(explanation.to_json(), option=orjson.OPT_INDENT_2))
        return
    columns: dict[str, Any] = {}
    single = len(explanation.outputs) == 1
    for k, name in enumerate(explanation.outputs):
        stem = "" if single else f"{name}."
        columns[f"{stem}base_value"] = pa.array([explanation.base_value[k]] * explanation.rows)
        columns[f"{stem}margin"] = explanation.margin[:, k]
        for i, column in enumerate(explanation.columns):
            columns[f"{stem}contribution.{column}"] = explanation.contributions[:, k, i]
    if single:
        columns["prediction"] = explanation.prediction
    pq.write_table(pa.table(columns), output)


def _print(explanation: Explanation) -> None:
    bases = dict(zip(explanation.outputs, explanation.base_value.tolist(), strict=True))
    for row, item in enumerate(explanation.row_json()):
        margins = item["margin"] if isinstance(item["margin"], dict) else {"": item["margin"]}
        per_output = (
            item["contributions"] if len(explanation.outputs) > 1 else {"": item["contributions"]}
        )
        for output, contributions in per_output.items():
            base = bases[output] if output else bases[explanation.outputs[0]]
            label = f" [{output}]" if output else ""
            top = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:_SHOWN]
            shown = ", ".join(f"{c} {v:+.4f}" for c, v in top)
            line = f"margin {margins[output]:.4f} = base {base:.4f} + {shown}, ..."
            out.print(f"row {row}{label}: {line}", highlight=False)
