"""The keel.yaml that ``keel init --from`` writes: every choice commented with why it was made
and how to change it.

:func:`render_config` lays out the text from the file's :class:`~keel.commands.profile.Profile`
and the task :mod:`keel.commands.init` chose for the target; the choices made while writing
(evaluation slices, the column a time split holds the latest rows out by, the columns set aside)
live here with the sections that state them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.commands.profile import Column, Profile
from keel.config import SourceConfig
from keel.validate.infer_roles import SetAside

__all__ = ["TaskChoice", "listed", "render_config", "set_aside", "time_column"]

#: Categorical columns with this many values at most are evaluation slices.
MAX_SLICE_VALUES = 12
MAX_SLICES = 3
#: A date column with at least this many distinct values splits the rows by time.
MIN_TIME_VALUES = 20
SENSITIVE = re.compile(r"^(sex|gender|race|ethnicity)$", re.IGNORECASE)
"""Column names an audit of fairness is suggested for (and that are always slices)."""
# A date that describes the row's subject, not when the row happened: no time split by it.
_NOT_WHEN = re.compile(r"birth|dob|born", re.IGNORECASE)


@dataclass(frozen=True)
class TaskChoice:
    """The task a target implies, why, and (for a class target) the positive label and the
    gate that goes with it, each with the reason keel.yaml's comment gives."""

    task: str
    why: str
    positive: str | None = None
    positive_why: str = ""
    gate: str | None = None
    gate_why: str = ""


def render_config(
    name: str,
    data: str,
    path_note: str,
    profile: Profile,
    column: Column,
    task: TaskChoice,
    warnings: list[str],
) -> str:
    """keel.yaml's text: the data source as sniffed, the target and task, the columns set aside,
    a time split when the rows carry dates, slices and a gate, each with its comment."""
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
        *_unix_time(profile.unix_time),
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
        "    # How to read the file, as sniffed from it (or given to keel init: --delimiter,",
        "    # --header, --columns...); correct any that is wrong.",
        f"    delimiter: {_char(source.delimiter)}",
        f"    header: {_yaml(source.header)}",
    ]
    if source.columns and source.header:
        why = "The names given to keel init (--columns), in place of the header row's."
    elif source.columns:
        why = "The file has no header row; its columns are named as keel init --columns gave."
    else:
        why = (
            "The file has no header row, so its columns got these names: rename them here "
            "(and `target` with them), or run keel init again with --columns a,b,c."
        )
    if source.columns or not source.header:
        lines += _comment(why, indent=4)
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
        where = "; ".join(f"{t} in {listed(dict.fromkeys(cols))}" for t, cols in na_found.items())
        lines += _comment(f"Cells that mean 'missing' (found: {where}).", indent=4)
        lines.append(f"    na_values: {_yaml(list(na_found))}")
    return lines


_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}


def _unix_time(units: dict[str, str]) -> list[str]:
    """``unix_time:``: the number columns that hold unix times, read as timestamps."""
    if not units:
        return []
    said = "; ".join(f"{name}: {_UNIT_WORDS[unit]}" for name, unit in units.items())
    lines = _comment(
        f"Numbers of seconds (s), milliseconds (ms) or microseconds (us) since 1970-01-01 UTC, "
        f"read as timestamps (named like a time, and every value falls between 1990 and 2100 "
        f"read so; {said}). Requests may send the same numbers, or ISO 8601 text. Delete a "
        "line to read that column as a number.",
        indent=4,
    )
    return [*lines, "    unix_time:", *(f"      {_yaml(n)}: {u}" for n, u in units.items())]


def set_aside(profile: Profile, target: str) -> list[SetAside]:
    """The columns keel.yaml's ``drop:`` lists (ids, counters, free text...), the target aside."""
    return [found for found in profile.set_aside if found.name != target]


def _roles(profile: Profile, target: str, task: str) -> list[str]:
    lines = _comment(
        "Columns the model must not see: anything known only after the outcome (it leaks the "
        "target), ids, row counters and free text. Keel's schema also sets aside dates, "
        "near-unique ids and personal data it recognises; see schema.yaml after the first "
        "keel run.",
        indent=2,
    )
    dropped = set_aside(profile, target)
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
    sensitive = [c for c in profile.columns if SENSITIVE.match(c) and c != target]
    if sensitive and task == "regression":
        lines += _comment(
            f"{listed(dict.fromkeys(sensitive))}: a regression model gets no fairness audit "
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
    name = time_column(profile, target)
    if name is None:
        return []
    distinct = profile.columns[name].distinct
    others = [c.name for c in profile.columns.values() if c.kind == "temporal" and c.name != name]
    also = f" ({listed(dict.fromkeys(others))} also hold times: any of them can be `column`)"
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


def _slices(profile: Profile, target: str) -> list[str]:
    """Low-cardinality text or yes/no columns: metrics per value of each are worth a look;
    sensitive ones (sex, race...) are always among them. In file order."""
    chosen = []
    dropped = {found.name for found in set_aside(profile, target)}
    for column in profile.columns.values():
        if column.name == target or column.name in dropped or column.kind not in ("text", "bool"):
            continue
        if 2 <= column.distinct <= MAX_SLICE_VALUES:
            chosen.append(column.name)
    kept = set(sorted(chosen, key=lambda name: not SENSITIVE.match(name))[:MAX_SLICES])
    return [name for name in chosen if name in kept]


def time_column(profile: Profile, target: str) -> str | None:
    """The first date or timestamp column (in file order) with enough distinct values to hold
    the latest rows out by, that is neither the target, nor set aside, nor a date of birth;
    None when there is none."""
    dropped = {found.name for found in set_aside(profile, target)}
    for column in profile.columns.values():
        if column.kind != "temporal" or column.name == target or column.name in dropped:
            continue
        if column.distinct >= MIN_TIME_VALUES and not _NOT_WHEN.search(column.name):
            return column.name
    return None


def _evaluate(profile: Profile, target: str, task: TaskChoice) -> list[str]:
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


def listed(counts: dict[str, Any], limit: int = 6) -> str:
    """The first ``limit`` keys, comma-separated, and how many in all when there are more."""
    names = list(counts)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
