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
from typing import TYPE_CHECKING

from keel.commands.init_yaml import TaskChoice, listed, render_config, set_aside, time_column
from keel.commands.profile import MAX_INT_CLASSES, SAMPLE_ROWS, Column, Profile, profile_file
from keel.config import CONFIG_FILE, load_config
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.data.dialect import ReadOptions

__all__ = ["Scaffold", "init_from_file", "print_scaffold", "project_directory"]

#: A text target with more values than this is not a label (an id, free text).
MAX_TEXT_CLASSES = 100
_POSITIVE = frozenset({"1", "1.0", "true", "t", "yes", "y", "positive", "pos"})


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
        unix_time: The number columns read as timestamps (keel.yaml's ``unix_time:``), each
            with its unit (``s``, ``ms``, ``us``).
        unnamed: The names a CSV file without a header row got (``column0``...) when no
            ``columns`` were given; empty when the columns have names.
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
    unix_time: tuple[tuple[str, str], ...] = ()
    unnamed: tuple[str, ...] = ()


def init_from_file(
    directory: str | Path,
    source: str | Path,
    target: str | None,
    *,
    copy: bool = True,
    force: bool = False,
    read: ReadOptions | None = None,
) -> Scaffold:
    """Write ``directory/keel.yaml`` for a CSV or Parquet file, every choice commented.

    Args:
        directory: The project directory (created when missing).
        source: The CSV or Parquet file to train on.
        target: The column to predict (None: the error lists the file's columns).
        copy: Copy the file into ``directory/data/`` (default) rather than reference it.
        force: Overwrite an existing keel.yaml.
        read: How to read a CSV file (delimiter, header, column names, encoding, quote);
            unset options are sniffed. ``columns`` without ``header`` names the fields of a
            file without a header row. keel.yaml's source gets them, so ``keel run`` reads
            the file the same way.

    Returns:
        What was written, with anything to fix before ``keel run``.

    Raises:
        ConfigError: The file is missing or unreadable, ``read.columns`` does not name every
            field, the target is not one of its columns, or its values cannot be learned (one
            value, all missing, free text).

    Example:
        >>> init_from_file("penguins", "penguins.csv", "species").task
        'multiclass'
        >>> names = ReadOptions(columns=("user_id", "item_id", "rating", "timestamp"))
        >>> init_from_file("ratings", "u.data", "rating", read=names).split_column
        'timestamp'
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
    profile = profile_file(file.resolve(), target, read)
    column = _target_column(profile, target, file)
    task = _infer_task(column, profile)
    root.mkdir(parents=True, exist_ok=True)
    data, path_note = _place(file.resolve(), root.resolve(), copy=copy, force=force)
    name = _name(root.resolve().name) or _name(file.stem) or "model"
    warnings = _warnings(column, profile)
    text = render_config(name, data, path_note, profile, column, task, warnings)
    config.write_text(text, encoding="utf-8")
    try:
        load_config(config, env="")
    except ConfigError as exc:  # a bug in this module, never the user's: say so plainly
        msg = f"keel init wrote a keel.yaml that does not load ({exc.message}); please report it."
        raise ConfigError(msg) from exc
    resolved = Path(data if Path(data).is_absolute() else root / data)
    copied = copy and not file.resolve().is_relative_to(root.resolve())
    created = (config, resolved) if copied else (config,)
    dropped = tuple(found.name for found in set_aside(profile, column.name))
    split = time_column(profile, column.name)
    times = tuple(profile.unix_time.items())
    read_as = profile.source  # a CSV without a header row or names; Parquet columns have names
    headless = read_as.format == "csv" and not read_as.header and not read_as.columns
    unnamed = tuple(profile.columns) if headless else ()
    return Scaffold(
        root, config, resolved, column.name, task.task, tuple(warnings), created, dropped, split,
        times, unnamed,
    )  # fmt: skip


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
    if made.unix_time:
        listed = ", ".join(f"{escape(name)} ({unit})" for name, unit in made.unix_time)
        out.print(
            f"Unix times, read as timestamps (keel.yaml's unix_time:): {listed}.",
            highlight=False,
        )
    if made.unnamed:
        span = f"{made.unnamed[0]} .. {made.unnamed[-1]}"
        out.print(
            f"No header row found: the columns are named {escape(span)}. Name them with "
            f"--columns a,b,c ({len(made.unnamed)} names, in file order), or in keel.yaml's "
            "columns: (and target: with them).",
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
        headless = ""
        if profile.source.header is False and not profile.source.columns:
            headless = " (the file has no header row)"
            hint += " Name its columns in file order: --columns a,b,c."
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


def _infer_task(column: Column, profile: Profile) -> TaskChoice:
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
                f"{column.name} takes {values} whole-number values ({listed(column.counts)}); "
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
    why = f"{column.name} has {values} classes ({listed(column.counts)})"
    return _multiclass(column, why)


def _binary(column: Column) -> TaskChoice:
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
    task_why = f"{column.name} has 2 values ({listed(column.counts)})"
    return TaskChoice(
        "binary",
        task_why,
        positive,
        why,
        "roc_auc > 0.5",
        "better than a coin toss; raise it to what your use needs (e.g. roc_auc >= 0.8)",
    )


def _multiclass(column: Column, why: str) -> TaskChoice:
    commonest = max(column.counts, key=lambda label: column.counts[label])
    share = column.counts[commonest] / sum(column.counts.values())
    gate_why = (
        f"better than always answering '{commonest}', the commonest class ({share:.1%} of rows);"
        " raise it to what your use needs"
    )
    return TaskChoice("multiclass", why, gate=f"accuracy > {share:.3f}", gate_why=gate_why)


def _regression(why: str) -> TaskChoice:
    gate_why = "better than always predicting the mean; raise it to what your use needs"
    return TaskChoice("regression", why, gate="r2 > 0", gate_why=gate_why)


def _warnings(column: Column, profile: Profile) -> list[str]:
    warnings = list(profile.warnings)
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
    dropped = [found.name for found in set_aside(profile, column.name)]
    left = [
        other.name
        for other in profile.columns.values()
        if other.name != column.name and other.name not in dropped and other.kind != "temporal"
    ]
    if dropped and not left:
        warnings.append(
            f"every column but the target '{column.name}' is set aside in drop: "
            f"({', '.join(dropped)}: see why under keel.yaml's drop:), so no input is left and "
            "keel run stops: delete from drop: each column whose value is known when you "
            "predict (it is then an input), or add input columns to the data"
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


def _is_whole(label: str) -> bool:
    try:
        return float(label).is_integer()
    except ValueError:
        return False


def _name(text: str) -> str:
    """A model name from a file or directory name: ``[A-Za-z0-9][A-Za-z0-9_.-]*``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")
    return cleaned
