"""`keel init DIR --from FILE --target COLUMN`: a keel.yaml for any CSV or Parquet file.

The file is read the way ``keel run`` will read it (the same DuckDB scan, after sniffing its
delimiter, quoting, header and the tokens it spells "missing" with); the task follows from the
target's values; gates and slices from the task and the columns; ids, row counters, free text
and study labels (:mod:`keel.validate.infer_roles`) and columns that leak the target (alone decide
a class target, :mod:`keel.commands.profile`; a regression target is computed from them,
:mod:`keel.commands.leak_sums`) go into ``drop:``; a date or timestamp column makes the split
``method: time`` by it (a random split of a time series tests on rows from the days it trained
on, and overstates the score). Every choice is written with
a comment that says why it was made and how to change it. The result is loaded with
:func:`keel.config.load_config` before it is left on disk, so it is always a valid keel.yaml.
"""

from __future__ import annotations

import difflib
import filecmp
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.commands.profile import MAX_INT_CLASSES, SAMPLE_ROWS, Column, Profile, profile_file
from keel.config import CONFIG_FILE, SourceConfig, load_config
from keel.errors import ConfigError
from keel.validate.infer_roles import SetAside

__all__ = ["Scaffold", "init_from_file", "print_scaffold", "project_directory"]

#: A text target with more values than this is not a label (an id, free text).
MAX_TEXT_CLASSES = 100
#: Categorical columns with this many values at most are evaluation slices.
MAX_SLICE_VALUES = 12
MAX_SLICES = 3
#: A date column with at least this many distinct values splits the rows by time.
MIN_TIME_VALUES = 20
_POSITIVE = frozenset({"1", "1.0", "true", "t", "yes", "y", "positive", "pos"})
_SENSITIVE = re.compile(r"^(sex|gender|race|ethnicity)$", re.IGNORECASE)
# A date that describes the row's subject, not when the row happened: no time split by it.
_NOT_WHEN = re.compile(r"birth|dob|born", re.IGNORECASE)


@dataclass(frozen=True)
class Scaffold:
    """What ``keel init --from`` wrote.

    Attributes:
        directory: The project directory.
        config: The keel.yaml written there.
        data: The data file the config reads (the copy, or the original).
        target: The label column.
        task: ``binary``, ``multiclass`` or ``regression``.
        warnings: Things to fix before ``keel run`` (also written into keel.yaml).
        created: The files written: keel.yaml, and the copy of the data file when one was made.
        dropped: The columns set aside in keel.yaml's ``drop:`` (ids, counters, free text...).
        split_column: The date or timestamp column keel.yaml's ``split:`` holds the latest rows
            out by (``method: time``); None: the default split (stratified or random).
    """

    directory: Path
    config: Path
    data: Path
    target: str
    task: str
    warnings: tuple[str, ...]
    created: tuple[Path, ...] = ()
    dropped: tuple[str, ...] = ()
    split_column: str | None = None


@dataclass(frozen=True)
class _Task:
    task: str
    why: str
    positive: str | None = None
    positive_why: str = ""
    gate: str | None = None
    gate_why: str = ""


def init_from_file(
    directory: str | Path,
    source: str | Path,
    target: str | None,
    *,
    copy: bool = True,
    force: bool = False,
) -> Scaffold:
    """Write ``directory/keel.yaml`` for a CSV or Parquet file, every choice commented.

    Args:
        directory: The project directory (created when missing).
        source: The CSV or Parquet file to train on.
        target: The column to predict (None: the error lists the file's columns).
        copy: Copy the file into ``directory/data/`` (default) rather than reference it.
        force: Overwrite an existing keel.yaml.

    Returns:
        What was written, with anything to fix before ``keel run``.

    Raises:
        ConfigError: The file is missing or unreadable, the target is not one of its columns,
            or its values cannot be learned (one value, all missing, free text).

    Example:
        >>> init_from_file("penguins", "penguins.csv", "species").task
        'multiclass'
    """
    root = Path(directory)
    file = Path(source).expanduser()
    if not file.is_file():
        hint = " It is a directory; name one file in it." if file.is_dir() else ""
        msg = f"{file}: no such data file.{hint} Give the path of a CSV or Parquet file."
        raise ConfigError(msg, field="--from")
    config = root / CONFIG_FILE
    if config.exists() and not force:
        msg = f"{config} already exists. Use another directory, or --force to overwrite it."
        raise ConfigError(msg)
    profile = profile_file(file.resolve(), target)
    column = _target_column(profile, target, file)
    task = _infer_task(column, profile)
    root.mkdir(parents=True, exist_ok=True)
    data, path_note = _place(file.resolve(), root.resolve(), copy=copy, force=force)
    name = _name(root.resolve().name) or _name(file.stem) or "model"
    warnings = _warnings(column, profile)
    text = _render(name, data, path_note, profile, column, task, warnings)
    config.write_text(text, encoding="utf-8")
    try:
        load_config(config, env="")
    except ConfigError as exc:  # a bug in this module, never the user's: say so plainly
        msg = f"keel init wrote a keel.yaml that does not load ({exc.message}); please report it."
        raise ConfigError(msg) from exc
    resolved = Path(data if Path(data).is_absolute() else root / data)
    copied = copy and not file.resolve().is_relative_to(root.resolve())
    created = (config, resolved) if copied else (config,)
    dropped = tuple(found.name for found in _dropped(profile, column.name))
    split = _time_column(profile, column.name)
    return Scaffold(
        root, config, resolved, column.name, task.task, tuple(warnings), created, dropped, split
    )


def project_directory(directory: Path | None, *, force: bool = False) -> Path:
    """The directory ``keel init --from`` writes to: the one given, else the current one.

    Raises:
        ConfigError: No directory was given and the current one already holds a keel.yaml
            (without ``force``).
    """
    if directory is not None:
        return directory
    here = Path.cwd()
    if (here / CONFIG_FILE).exists() and not force:
        msg = (
            f"{here} already holds a {CONFIG_FILE}: name a new project directory "
            "(keel init DIR --from FILE --target COLUMN), or add --force to overwrite it."
        )
        raise ConfigError(msg, field="DIRECTORY")
    return here


def print_scaffold(made: Scaffold, *, here: bool) -> None:
    """What ``keel init --from`` wrote, what it set aside, and the next command."""
    from rich.markup import escape

    from keel.commands.output import err, out

    out.print(
        f"Wrote {made.config} for {made.data}: {made.task} model of '{made.target}'.",
        highlight=False,
    )
    where = "the current directory" if here else str(made.directory)
    names = [path.relative_to(made.directory).as_posix() for path in made.created]
    names[1:] = [f"{name} (a copy of the data file)" for name in names[1:]]
    out.print(f"Created in {escape(where)}: {escape(', '.join(names))}.", highlight=False)
    if made.dropped:
        listed = ", ".join(escape(name) for name in made.dropped)
        out.print(
            f"Set aside (not model inputs; the reasons are in keel.yaml's drop:): {listed}.",
            highlight=False,
        )
    if made.split_column is not None:
        out.print(
            f"Split by time: the latest rows by {escape(made.split_column)} are the test "
            "split (keel.yaml's split:).",
            highlight=False,
        )
    for warning in made.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    step = "keel run" if here else f"cd {escape(str(made.directory))} && keel run"
    out.print(f"Review the comments in it, then: {step}", highlight=False)


# --- choosing ----------------------------------------------------------------------------------


def _target_column(profile: Profile, target: str | None, file: Path) -> Column:
    columns = profile.columns
    if target is None:
        listed = ", ".join(columns)
        msg = f"--target is missing: name the column to predict. Columns of {file}: {listed}."
        raise ConfigError(msg, field="--target")
    if target not in columns:
        names = list(columns)
        lowered = {n.lower(): n for n in names}
        close = [lowered[target.lower()]] if target.lower() in lowered else []
        close = close or difflib.get_close_matches(target, names, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        headless = "" if profile.source.header is not False else " (the file has no header row)"
        msg = (
            f"--target '{target}' is not a column of {file}{headless}.{hint} "
            f"Columns: {', '.join(names)}."
        )
        raise ConfigError(msg, field="--target")
    column = columns[target]
    present = profile.rows - column.nulls
    if present == 0:
        msg = f"--target '{target}' is empty in {file} (every value is missing). Pick another."
        raise ConfigError(msg, field="--target")
    if column.distinct < 2:
        value = next(iter(column.counts), "?")
        msg = (
            f"--target '{target}' has one value in {file} ('{value}' in all {present} rows): "
            "there is nothing to learn. Pick a column whose values differ."
        )
        raise ConfigError(msg, field="--target")
    if column.kind in ("temporal", "other"):
        msg = (
            f"--target '{target}' holds {column.kind} values; Keel predicts classes or numbers. "
            "Pick a label or a numeric column."
        )
        raise ConfigError(msg, field="--target")
    return column


def _infer_task(column: Column, profile: Profile) -> _Task:
    values = column.distinct
    if values == 2:
        return _binary(column)
    whole = column.kind == "integer" or (
        column.kind == "number" and all(_is_whole(v) for v in column.counts)
    )
    if column.kind == "number" and not (whole and column.counts):
        why = f"{column.name} is a number with {values} distinct values"
        return _regression(why)
    if column.kind in ("integer", "number"):
        if whole and values <= MAX_INT_CLASSES:
            why = (
                f"{column.name} takes {values} whole-number values ({_listed(column.counts)}); "
                "if they are amounts rather than classes, write task: regression"
            )
            return _multiclass(column, why)
        why = (
            f"{column.name} is a number with {values} distinct values; "
            "to predict its values as classes instead, write task: multiclass"
        )
        return _regression(why)
    if values > MAX_TEXT_CLASSES:
        sample = "the sampled rows" if profile.sampled else "the file"
        msg = (
            f"--target '{column.name}' has {values} distinct text values in {sample}: it looks "
            "like an id or free text, not a label. Pick a column with classes or numbers."
        )
        raise ConfigError(msg, field="--target")
    why = f"{column.name} has {values} classes ({_listed(column.counts)})"
    return _multiclass(column, why)


def _binary(column: Column) -> _Task:
    labels = sorted(column.counts)
    yes_like = [label for label in labels if label.lower() in _POSITIVE]
    if len(yes_like) == 1:
        positive = yes_like[0]
        why = f"'{positive}' reads as the 'yes' of the two"
    else:
        rare = min(reversed(labels), key=column.counts.__getitem__)  # a tie: the later label
        share = column.counts[rare] / sum(column.counts.values())
        positive = rare
        why = f"the rarer class ({share:.0%} of rows), usually the event worth predicting"
    task_why = f"{column.name} has 2 values ({_listed(column.counts)})"
    return _Task(
        "binary",
        task_why,
        positive,
        why,
        "roc_auc > 0.5",
        "better than a coin toss; raise it to what your use needs (e.g. roc_auc >= 0.8)",
    )


def _multiclass(column: Column, why: str) -> _Task:
    commonest = max(column.counts, key=lambda label: column.counts[label])
    share = column.counts[commonest] / sum(column.counts.values())
    gate_why = (
        f"better than always answering '{commonest}', the commonest class ({share:.1%} of rows);"
        " raise it to what your use needs"
    )
    return _Task("multiclass", why, gate=f"accuracy > {share:.3f}", gate_why=gate_why)


def _regression(why: str) -> _Task:
    gate_why = "better than always predicting the mean; raise it to what your use needs"
    return _Task("regression", why, gate="r2 > 0", gate_why=gate_why)


def _slices(profile: Profile, target: str) -> list[str]:
    """Low-cardinality text or yes/no columns: metrics per value of each are worth a look;
    sensitive ones (sex, race...) are always among them. In file order."""
    chosen = []
    dropped = {found.name for found in _dropped(profile, target)}
    for column in profile.columns.values():
        if column.name == target or column.name in dropped or column.kind not in ("text", "bool"):
            continue
        if 2 <= column.distinct <= MAX_SLICE_VALUES:
            chosen.append(column.name)
    kept = set(sorted(chosen, key=lambda name: not _SENSITIVE.match(name))[:MAX_SLICES])
    return [name for name in chosen if name in kept]


def _time_column(profile: Profile, target: str) -> str | None:
    """The first date or timestamp column (in file order) with enough distinct values to hold
    the latest rows out by, that is neither the target, nor set aside, nor a date of birth;
    None when there is none."""
    dropped = {found.name for found in _dropped(profile, target)}
    for column in profile.columns.values():
        if column.kind != "temporal" or column.name == target or column.name in dropped:
            continue
        if column.distinct >= MIN_TIME_VALUES and not _NOT_WHEN.search(column.name):
            return column.name
    return None


def _warnings(column: Column, profile: Profile) -> list[str]:
    warnings = []
    if column.nulls:
        warnings.append(
            f"target '{column.name}' is missing in {column.nulls} of {profile.rows} rows; "
            "keel run stops on them: remove those rows from the file (or fill them) first"
        )
    for found in profile.mostly_numbers:
        shown = ", ".join(repr(v) for v in found.examples)
        warnings.append(
            f"column '{found.name}' holds numbers but for {found.strays} of its "
            f"{found.values} values ({shown}), so keel run reads it as text, one category "
            "per value: fix those cells in the file, or add them to na_values if they mean "
            "'missing'"
        )
    if profile.sampled:
        warnings.append(
            f"the choices below come from the first {SAMPLE_ROWS:,} rows of a larger file"
        )
    return warnings


def _place(file: Path, root: Path, *, copy: bool, force: bool) -> tuple[str, str]:
    """The path keel.yaml names (copying the file into ``data/`` when asked), and a comment."""
    if file.is_relative_to(root):
        path = file.relative_to(root).as_posix()
        return path, "The file sits inside this project, so it is referenced where it is."
    if copy:
        destination = root / "data" / file.name
        if destination.exists() and not force and not filecmp.cmp(file, destination, False):
            msg = (
                f"{destination} already exists and differs from {file}. Move it away, or use "
                "--force to overwrite it."
            )
            raise ConfigError(msg)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, destination)
        note = (
            f"A copy of {file}, so the project keeps the exact bytes it was trained on (Keel"
            " hashes them into every run's lineage). To train on another file, point `path` at"
            " it: relative to this file, or absolute."
        )
        return f"data/{file.name}", note
    note = (
        "The original file, not a copy (keel init --no-copy): if it changes, the next keel run"
        " trains on the new bytes. `keel init --from` without --no-copy copies it into data/."
    )
    return str(file), note


# --- writing -----------------------------------------------------------------------------------


def _render(
    name: str,
    data: str,
    path_note: str,
    profile: Profile,
    column: Column,
    task: _Task,
    warnings: list[str],
) -> str:
    source = profile.source
    file = Path(source.path or data).name
    lines = [
        f"# keel.yaml for {file}, written by `keel init --from`. Each choice below says why it",
        "# was made and how to change it. Every field, with its default: docs/keel-yaml.md.",
        *(f"# WARNING: {w}." for w in warnings),
        f"project: {_yaml(name)}",
        "",
        "data:",
        "  train:",
        *_comment(path_note, indent=4),
        f"    path: {_yaml(data)}",
        f"    format: {source.format}",
        *_dialect(source, profile.na_found, list(profile.columns)),
        *_comment(
            "No `test:` source: Keel holds out a test split of `train` itself. To evaluate on a "
            "file of your own, add `test:` with the same keys as `train:`.",
            indent=2,
        ),
        f"  target: {_yaml(column.name)}",
    ]
    if task.positive is not None:
        lines += _comment(
            f"The class whose probability the model gives: {task.positive_why}. Write the other "
            "value to predict that one instead.",
            indent=2,
        )
        lines.append(f"  positive_label: {_yaml(task.positive)}")
    lines += _roles(profile, column.name, task.task)
    lines += [
        "",
        "model:",
        f"  name: {_yaml(name)}",
        "  # Gradient-boosted trees: strong on tables as they are. `auto` lets several model",
        "  # families compete (see automl:).",
        "  flavor: lightgbm",
        *_comment(f"{task.why}. Tasks: binary, multiclass, regression.", indent=2),
        f"  task: {task.task}",
        "  # Hyper-parameters (checked; all in docs/keel-yaml.md): uncomment to change these",
        "  # defaults, e.g. more trees when `keel run` says early stopping never stopped.",
        "  # params: {n_estimators: 400, learning_rate: 0.05, num_leaves: 31}",
        *_split(profile, column.name),
        "",
        "evaluate:",
        *_evaluate(profile, column.name, task),
    ]
    return "\n".join(lines) + "\n"


def _dialect(source: SourceConfig, na_found: dict[str, list[str]], columns: list[str]) -> list[str]:
    if source.format != "csv":
        return []
    lines = [
        "    # How to read the file, as sniffed from it; correct any that is wrong.",
        f"    delimiter: {_char(source.delimiter)}",
        f"    header: {_yaml(source.header)}",
    ]
    if not source.header:
        lines += _comment(
            "The file has no header row, so its columns got these names: rename them here "
            "(and `target` with them).",
            indent=4,
        )
        lines.append(f"    columns: {_yaml(columns)}")
    if source.quote is not None:
        lines.append(f"    quote: {_char(source.quote)}")
    if source.escape is not None:
        lines.append(f"    escape: {_char(source.escape)}")
    if source.skip_rows:
        lines.append(f"    skip_rows: {source.skip_rows}  # lines before the data")
    if source.encoding is not None:
        lines.append(f"    encoding: {_yaml(source.encoding)}")
    if na_found:
        where = "; ".join(f"{t} in {_listed(dict.fromkeys(cols))}" for t, cols in na_found.items())
        lines += _comment(f"Cells that mean 'missing' (found: {where}).", indent=4)
        lines.append(f"    na_values: {_yaml(list(na_found))}")
    return lines


def _dropped(profile: Profile, target: str) -> list[SetAside]:
    return [found for found in profile.set_aside if found.name != target]


def _roles(profile: Profile, target: str, task: str) -> list[str]:
    lines = _comment(
        "Columns the model must not see: anything known only after the outcome (it leaks the "
        "target), ids, row counters and free text. Keel's schema also sets aside dates, "
        "near-unique ids and personal data it recognises; see schema.yaml after the first "
        "keel run.",
        indent=2,
    )
    dropped = _dropped(profile, target)
    if dropped:
        lines += _comment(
            "Set aside from the data (delete a line to make that column an input again):",
            indent=2,
        )
        lines.append("  drop:")
        for found in dropped:
            lines += _comment(f"{found.name}: {found.why}.", indent=4)
            lines.append(f"    - {_yaml(found.name)}")
    else:
        lines.append("  drop: []")
    sensitive = [c for c in profile.columns if _SENSITIVE.match(c) and c != target]
    if sensitive and task == "regression":
        lines += _comment(
            f"{_listed(dict.fromkeys(sensitive))}: a regression model gets no fairness audit "
            "(data.sensitive: selection rate, TPR and FPR per group need a classifier's "
            "decisions); its rmse, mae and r2 per group are reported through evaluate.slices.",
            indent=2,
        )
    elif sensitive:
        lines += _comment("Uncomment to audit fairness (metrics per group) on these.", indent=2)
        lines.append(f"  # sensitive: {_yaml(sensitive)}")
    return lines


def _split(profile: Profile, target: str) -> list[str]:
    """``split: {method: time, column: ...}`` when the rows carry a date (held out: the latest)."""
    name = _time_column(profile, target)
    if name is None:
        return []
    distinct = profile.columns[name].distinct
    others = [c.name for c in profile.columns.values() if c.kind == "temporal" and c.name != name]
    also = f" ({_listed(dict.fromkeys(others))} also hold times: any of them can be `column`)"
    return [
        "",
        "split:",
        *_comment(
            f"{name} holds dates or times ({distinct:,} distinct){also if others else ''}"
            ": the test split is the latest 20% of the rows by it, and early stopping validates"
            " on the latest rows before those, so the model is judged on a later period than the"
            " one it learned from, as it will be used. A random split would test on rows of the "
            f"same {name} as rows it trained on, and overstate the score. If the rows are not a "
            "series in time, write method: auto.",
            indent=2,
        ),
        "  method: time",
        f"  column: {_yaml(name)}",
    ]


def _evaluate(profile: Profile, target: str, task: _Task) -> list[str]:
    slices = _slices(profile, target)
    if slices:
        why = "Metrics are also reported per value of these low-cardinality columns."
    else:
        why = "No low-cardinality text column was found to report metrics per value of."
    return [
        *_comment(why, indent=2),
        f"  slices: {_yaml(slices)}",
        *_comment(
            f"A new version takes the registry alias only when every gate passes: {task.gate_why}.",
            indent=2,
        ),
        "  gates:",
        f"    - {_yaml(task.gate)}",
    ]


def _comment(text: str, *, indent: int, width: int = 98) -> list[str]:
    prefix = " " * indent + "# "
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(prefix) + len(current) + 1 + len(word) > width:
            lines.append(prefix + current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(prefix + current)
    return lines


def _yaml(value: Any) -> str:
    """One YAML flow value (quoted only when YAML needs it)."""
    import yaml

    dumped = yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()
    return dumped[1:-1]


def _char(value: str | None) -> str:
    """A one-character option, always quoted so that `;` or `'` reads as what it is."""
    if value is not None and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return _yaml(value)


def _listed(counts: dict[str, Any], limit: int = 6) -> str:
    names = list(counts)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _is_whole(label: str) -> bool:
    try:
        return float(label).is_integer()
    except ValueError:
        return False


def _name(text: str) -> str:
    """A model name from a file or directory name: ``[A-Za-z0-9][A-Za-z0-9_.-]*``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")
    return cleaned
