"""The ``--features`` option of `keel predict`, `keel explain` and `keel monitor --input`, and
the note saying how a file's view features were filled (:mod:`keel.serve.viewfill`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from keel.commands.output import err

__all__ = ["FeaturesOpt", "print_filled"]

FeaturesOpt = Annotated[
    str,
    typer.Option(
        "--features",
        help="A model trained with feature views: fill the view features the file lacks from "
        "its entity keys. auto: joined as of each row's time when the file has the training "
        "join's time column, else from the online store; as-of; online; file: the file "
        "carries them.",
    ),
]


def print_filled(filled: dict[str, Any] | None) -> None:
    """``features: 6 features of 2 views (movies, users) joined as of 'rated_at'`` on stderr
    (stdout stays the result), and a warning counting the unknown entities' rows."""
    if filled is None:
        return
    err.print(f"features: {escape(filled['described'])}", highlight=False)
    unknown = filled["unknown_entities"]
    if unknown:
        per_view = ", ".join(f"{view} {count}" for view, count in unknown.items())
        err.print(
            f"[yellow]warning:[/] {sum(unknown.values())} rows of unknown entities (not in "
            f"the online store: {escape(per_view)}) scored with those views' features missing",
            highlight=False,
        )
