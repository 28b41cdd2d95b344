"""`keel tune`: add trials to the project's hyper-parameter search, then retrain if it improved."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this module's command to the `keel` app."""
    app.command("tune")(tune)


def tune(
    trials: Annotated[
        int, typer.Option("--trials", "-n", min=1, help="How many more trials to run.")
    ] = 10,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Run N more trials of the search in keel.yaml (resuming its study), then the pipeline:
    the model is retrained and registered when the best trial changed."""
    from keel import api

    console = err if fmt is Format.json else out
    result = api.tune(project, trials=trials, console=console)
    if fmt is Format.json:
        emit_json(result)
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    table = Table(title=f"keel tune: study {result['study']}", show_edge=False, show_header=False)
    table.add_column("what")
    table.add_column("value")
    done = result["trials_before"] + result["trials_run"]
    table.add_row("trials", f"{result['trials_run']} run now, {done} in the study")
    table.add_row(
        f"best {result['metric']}", f"{result['best_value']:.4f} (trial {result['best_trial']})"
    )
    params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(result["best_params"].items()))
    table.add_row("best params", params)
    model = result["model"]
    metrics = model["metrics"]
    table.add_row("model", f"{model['name']} version {model['version']}")
    table.add_row("test", ", ".join(f"{k}={_short(v)}" for k, v in sorted(metrics.items())))
    out.print(table)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
