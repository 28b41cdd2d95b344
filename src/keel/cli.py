"""The ``keel`` command: a thin layer over :mod:`keel.api`.

Every command that prints results takes ``--format json`` (one JSON document on stdout).
Exit codes: 0 success, 1 a check or gate failed, 2 usage or configuration error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from keel.commands import alerts as alerts_commands
from keel.commands import audit as audit_commands
from keel.commands import build as build_commands
from keel.commands import data as data_commands
from keel.commands import deploy as deploy_commands
from keel.commands import doctor as doctor_commands
from keel.commands import explain as explain_commands
from keel.commands import features as features_commands
from keel.commands import feedback as feedback_commands
from keel.commands import keys as keys_commands
from keel.commands import lineage as lineage_commands
from keel.commands import models as models_commands
from keel.commands import monitor as monitor_commands
from keel.commands import packages as packages_commands
from keel.commands import reading
from keel.commands import runs as runs_commands
from keel.commands import schedule as schedule_commands
from keel.commands import schema as schema_commands
from keel.commands import serve as serve_commands
from keel.commands import tokens as tokens_commands
from keel.commands import tune as tune_commands
from keel.commands import validate as validate_commands
from keel.commands.output import Format, FormatOpt, ProjectOpt, err, out
from keel.commands.output import emit_json as _emit_json
from keel.commands.viewfill import FeaturesOpt
from keel.errors import ConfigError, KeelError

app = typer.Typer(
    name="keel",
    help="Keel: data -> features -> model -> registry -> serving -> monitoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs re-wrap to the terminal's width
)
for _group in (data_commands, features_commands, runs_commands, schema_commands, validate_commands):
    _group.register(app)
tune_commands.register(app)
schedule_commands.register(app)
doctor_commands.register(app)
lineage_commands.register(app)
monitor_commands.register(app)
alerts_commands.register(app)
feedback_commands.register(app)
models_app = models_commands.register(app)
audit_commands.register(app)
tokens_commands.register(app)
serve_commands.register(app)
deploy_commands.register(app)
keys_commands.register(app)
explain_commands.register(app)
packages_commands.register(models_app)
build_commands.register(app)

_state: dict[str, Any] = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from keel.version import __version__

        typer.echo(f"keel {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def init(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="Directory to create the project in. With --from it defaults to the current "
            "directory, when that has no keel.yaml.",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from", help="A CSV or Parquet file: write a keel.yaml for it (with --target)."
        ),
    ] = None,
    target: Annotated[str | None, typer.Option(help="The column to predict (with --from).")] = None,
    example: Annotated[
        str | None,
        typer.Option(
            help="Bundled example: adult (the default), bike-sharing, california-housing."
        ),
    ] = None,
    copy: Annotated[
        bool,
        typer.Option(
            "--copy/--no-copy",
            help="Copy the --from file into DIRECTORY/data/ (default), or reference it in place.",
        ),
    ] = True,
    force: Annotated[bool, typer.Option(help="Overwrite an existing keel.yaml.")] = False,
    delimiter: reading.DelimiterOpt = None,
    header: reading.HeaderOpt = None,
    columns: reading.ColumnsOpt = None,
    encoding: reading.EncodingOpt = None,
    quote: reading.QuoteOpt = None,
) -> None:
    """Scaffold a project: a bundled example, or a commented keel.yaml for your own file.

    keel init churn --from churn.csv --target Churn infers the task, the positive label, the
    gates, the slices and the columns to set aside (ids, row counters, free text, columns that
    alone decide the target) from the data, and explains each choice in keel.yaml. Without
    DIRECTORY, --from writes to the current directory.

    A CSV's delimiter, quoting, header and encoding are sniffed unless given; what is given
    goes into keel.yaml's source, so keel run reads the file the same way. --columns names
    the fields in file order, as keel predict reads them: a file without a header row gets
    its names (keel init ml --from u.data --columns user_id,item_id,rating,timestamp --target
    rating), a header's names are replaced; --header/--no-header says whether the first line
    is a header to skip (sniffed when left out).
    """
    from keel import api

    read = reading.read_options(delimiter, header, columns, encoding, quote)
    if source is None and (read.given or read.columns is not None):
        msg = "reading options (--columns, --delimiter...) go with --from FILE."
        raise ConfigError(msg, field="--from")
    if source is None:
        if directory is None:
            msg = (
                "name the DIRECTORY to create the project in: keel init adult-demo (or, for a "
                "file of your own: keel init [DIR] --from FILE --target COLUMN)."
            )
            raise ConfigError(msg, field="DIRECTORY")
        created = api.init(directory, example=example, target=target, force=force)
        out.print(_created(example or "adult", created), highlight=False, soft_wrap=True)
        return
    if example is not None:
        raise ConfigError("give either --example or --from, not both.")
    from keel.commands.init import init_from_file, print_scaffold, project_directory

    made = init_from_file(project_directory(directory, force=force), source, target, copy=copy,
                          force=force, read=read)  # fmt: skip
    print_scaffold(made, here=directory is None)


def _created(name: str, created: Path) -> str:
    """``Created project 'adult' in /abs/dir. Next: cd dir && keel run``: the absolute path
    (``dir`` as given may be ``.``; quoted for the shell), and no ``cd`` when the project is
    the current directory."""
    from shlex import quote

    where = created.resolve()
    if where == Path.cwd().resolve():
        return f"Created project '{escape(name)}' here ({escape(str(where))}). Next: keel run"
    return (
        f"Created project '{escape(name)}' in {escape(str(where))}. "
        f"Next: cd {escape(quote(str(created)))} && keel run"
    )


@app.command()
def run(
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Execute every step, even unchanged ones.")
    ] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Say per step whether its cache hit, and what changed (code, config, raw "
            "files, which input) when it did not.",
        ),
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="PIPELINE_RUN",
            help="Resume a failed or cancelled pipeline run from its failed step, reusing "
            "the outputs of the steps that succeeded (keel.yaml must be unchanged).",
        ),
    ] = None,
) -> None:
    """Run the pipeline: ingest, profile, schema, validate, features, train, evaluate, register.

    Independent steps run at the same time within resources: (executor: local or ray);
    Ctrl-C or 'keel runs cancel ID' stops it, recorded cancelled."""
    from keel import api

    console = err if format is Format.json else out
    summary = api.run(project, console=console, cache=not no_cache, explain=explain, resume=resume)
    if format is Format.json:
        _emit_json(summary)
    else:
        _print_run(summary)
    if not all(gate["passed"] for gate in summary["model"]["gates"]):
        raise typer.Exit(1)


def _print_run(summary: dict[str, Any]) -> None:
    table = Table(title=f"keel run: {summary['project']}", show_edge=False)
    for col in ("step", "status", "seconds", "details"):
        table.add_column(col)
    for step in summary["steps"]:
        status = "[green]ran[/]" if step["status"] == "succeeded" else "[cyan]cached[/]"
        facts = {k: v for k, v in step["facts"].items() if not isinstance(v, dict | list)}
        detail = ", ".join(f"{k}={_short(v)}" for k, v in facts.items())
        table.add_row(step["step"], status, f"{step['seconds']:.2f}", detail)
    out.print(table)
    _print_warning_count(summary["steps"])
    model = summary["model"]
    metrics = model["metrics"]
    out.print(f"model {model['name']} version {model['version']}: {_headline(metrics)} (test)")
    for gate in model["gates"]:
        mark = "[green]pass[/]" if gate["passed"] else "[red]FAIL[/]"
        reason = str(gate.get("reason") or "")
        # a plain comparison says it all; an undefined value, a slice too small to gate or the
        # champion comparison says why
        plain = reason.startswith(f"{gate.get('path')} = ") or not reason
        why = "" if plain else f": {escape(reason)}"
        out.print(f"  gate {gate['gate']}: {mark} (value {_short(gate['value'])}){why}")
    if model["promoted"]:
        out.print(f"alias '{model['alias']}' -> version {model['version']}")
    elif model.get("pending_request"):
        request = model["pending_request"]
        out.print(
            f"promotion to the alias awaits approval: request {request} "
            f"(keel models approve {request})"
        )
    elif model["gates"] and not all(gate["passed"] for gate in model["gates"]):
        out.print("[red]gates failed: the alias was not moved[/]")
    register = next((s for s in summary["steps"] if s["step"] == "register"), None)
    if register is not None and register["facts"].get("unchanged"):
        out.print(f"model unchanged: still version {model['version']} (nothing new registered)")
    short = summary["pipeline_run"][:12]
    resumed = f" (resumes {summary['resumes'][:12]})" if summary.get("resumes") else ""
    out.print(f"pipeline run {short}{resumed}: keel runs show {short}")


def _print_warning_count(steps: list[dict[str, Any]]) -> None:
    """How many warnings the run had, and the command that shows each step's again."""
    warned = [s for s in steps if s.get("warnings")]
    if not warned:
        return
    count = sum(len(s["warnings"]) for s in warned)
    cached = sum(len(s["warnings"]) for s in warned if s["status"] == "cached")
    fresh = count - cached
    where = ", ".join(
        part
        for part in (
            f"{fresh} from this run" * bool(fresh),
            f"{cached} from cached steps" * bool(cached),
        )
        if part
    )
    shows = "; ".join(f"keel runs show {s['run_id'][:12]} ({s['step']})" for s in warned)
    out.print(f"[yellow]{count} warning(s)[/] ({where}); to see them: {shows}")


def _short(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _headline(metrics: dict[str, Any]) -> str:
    """The task's main test metrics that the model has (classification or regression)."""
    names = ("roc_auc", "accuracy", "macro_f1", "log_loss", "rmse", "mae", "r2")
    return " ".join(f"{n}={_short(metrics[n])}" for n in names if metrics.get(n) is not None)


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="Run id or prefix (see 'keel run --format json').")],
    project: ProjectOpt = None,
    format: FormatOpt = Format.text,
) -> None:
    """Re-execute a recorded run on its recorded inputs; exit 1 if an output hash differs."""
    from keel import api

    result = api.reproduce(run_id, project=project)
    if format is Format.json:
        _emit_json(result)
    else:
        for name, output in result["outputs"].items():
            mark = "[green]same[/]" if output["match"] else "[red]DIFFERENT[/]"
            out.print(
                f"{result['step']} {name}: recorded {output['recorded'][:12]}, "
                f"reproduced {(output['reproduced'] or '-')[:12]}: {mark}"
            )
        changed = " (the step's code changed since)" if result["code_changed"] else ""
        verdict = "reproduced" if result["match"] else "NOT reproduced"
        out.print(f"run {result['run'][:12]}: {verdict}{changed}")
    if not result["match"]:
        raise typer.Exit(1)


@app.command()
def predict(
    ref: Annotated[
        str,
        typer.Argument(
            help="NAME (NAME@ALIAS for keel.yaml's registry.alias, else the newest version), "
            "NAME@VERSION or NAME@ALIAS."
        ),
    ],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="CSV or Parquet file (see the reading options).")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="File to write: .parquet/.pq, .csv, .jsonl/.ndjson or .json (one array).",
        ),
    ],
    output_format: Annotated[
        str | None,
        typer.Option(
            "--output-format",
            help="parquet, csv, jsonl or json (default: the one --output's suffix names).",
        ),
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
    """Batch-score a file with a registered model.

    The output, in the format its suffix names (or --output-format), holds the input columns,
    then the prediction, the probabilities and the model version; a binary classifier's
    probability column is of its positive class, which the summary names
    (probability = P(income = >50K)). A CSV's delimiter, quoting,
    header and encoding are detected unless given; what it was read as is printed. Malformed
    lines are not scored; each is reported with its line.

    A model trained with feature views scores a file of entity keys as the server scores a
    request: the view features the file lacks are joined point in time as of each row's
    time (the column training joined as of, e.g. rated_at) or, without it, read from the
    online store (keel features materialize); --features chooses. A view feature column the
    file carries keeps its values.
    """
    from keel import api
    from keel.commands.viewfill import print_filled
    from keel.data.export import table_format

    fmt = table_format(output, output_format)  # before the model loads; named as the CLI's
    read = reading.read_options(delimiter, header, columns, encoding, quote)
    result = api.predict(
        ref, input, output, project=project, read=read, format=fmt, features=features
    )
    if format is Format.json:
        _emit_json(result)
    else:
        reading.print_dialect(input, result["dialect"])
        reading.print_bad_lines(result["bad_lines"])
        print_filled(result["features"])
        out.print(
            f"scored {result['rows']} rows with {result['model']}@{result['version']}"
            f" -> {result['output']} ({result['format']})"
        )
        if result.get("positive_label") is not None:  # which class the probability is of
            of = f"{result['target']} = " if result.get("target") else ""
            out.print(escape(f"probability = P({of}{result['positive_label']})"), highlight=False)
        for what, count in result["warnings"].items():
            err.print(f"[yellow]warning:[/] {count} rows scored with {what}", highlight=False)
        if result["rejected"]:
            err.print(
                f"[yellow]warning:[/] {result['rejected']} rows not scored (values that do not "
                f"convert): see {result['rejects']}",
                highlight=False,
            )


def _noop_run(args: list[str]) -> None:
    """A ``keel run [--format F]`` with nothing changed, decided from the last run's manifest
    without building the command line (:mod:`keel.pipeline.noop`); it exits as ``run`` does.
    Returns when the normal path must run."""
    if args[:1] != ["run"]:  # every other command: not even imported
        return
    from keel.pipeline.noop import attempt

    outcome = attempt(args)
    summary = outcome.summary
    if summary is None:
        return
    if outcome.format == Format.json.value:
        _emit_json(summary)
    else:
        _print_run(summary)
    sys.exit(0 if all(gate["passed"] for gate in summary["model"]["gates"]) else 1)


#: The root callback's options, all flags: what may come before the command's name.
_ROOT_FLAGS = frozenset({"--debug", "--version"})


def _app_for(args: list[str]) -> typer.Typer:
    """A copy of :data:`app` holding only the command ``args`` invoke, so that Typer builds the
    Click tree of that command alone (building all of them is a tenth of a cached `keel run`).
    ``app`` itself is never changed: in-process callers (tests, ``CliRunner``) keep every
    command. Anything else (no command, ``--help`` first, an unknown name) gets ``app``."""
    from copy import copy

    from typer.main import get_command_name, solve_typer_info_defaults

    name = next((a for a in args if a not in _ROOT_FLAGS), None)
    if name is None or name.startswith("-"):
        return app
    commands = [
        c
        for c in app.registered_commands
        if c.callback is not None and (c.name or get_command_name(c.callback.__name__)) == name
    ]
    groups = [g for g in app.registered_groups if solve_typer_info_defaults(g).name == name]
    if not commands and not groups:
        return app
    pruned = copy(app)  # new lists below: the original's are untouched
    pruned.registered_commands = commands
    pruned.registered_groups = groups
    return pruned


def main() -> None:
    """Entry point: run the app, turning Keel errors into a headline and an exit code."""
    try:
        _noop_run(sys.argv[1:])
        code = _app_for(sys.argv[1:])(standalone_mode=False)
    except KeelError as exc:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {type(exc).__name__}", highlight=False)
        err.print(exc.message, markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:
        # usage errors (typer's vendored click exceptions) arrive here in non-standalone mode
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
