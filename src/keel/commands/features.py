"""`keel features` commands: list feature views, materialize them, look values up, impact."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.features.store import FeatureStore

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `keel` app."""
    group = typer.Typer(
        help="Feature views: list, materialize to the online store, get values, impact.",
        no_args_is_help=True,
    )
    group.command("list")(list_)
    group.command("materialize")(materialize)
    group.command("get")(get)
    group.command("impact")(impact)
    app.add_typer(group, name="features")


def _store(project: Any) -> FeatureStore:
    from keel.features.store import FeatureStore

    return FeatureStore(project)


def list_(project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """The feature views declared in keel.yaml (feature_views:)."""
    views = _store(project).list_views()
    if fmt is Format.json:
        emit_json({"views": views})
        return
    if not views:
        out.print("no feature views declared; add a feature_views: section to keel.yaml")
        return
    table = Table(show_edge=False)
    for column in ("view", "entities", "timestamp", "ttl", "features", "source"):
        table.add_column(column)
    for view in views:
        table.add_row(
            view["name"],
            ", ".join(view["entities"]),
            view["timestamp"]
            + (f" (created: {view['created_timestamp']})" if view["created_timestamp"] else ""),
            view["ttl"],
            escape(", ".join(view["features"])),
            escape(view["source"]),
        )
    out.print(table)


def materialize(
    views: Annotated[
        list[str] | None, typer.Argument(help="Views to materialize (default: all).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="Point in time of the values, ISO 8601 (default: now, UTC)."),
    ] = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Copy each view's latest values per entity to the online store (SQLite or Redis)."""
    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError as exc:
            msg = f"--at {at!r} is not an ISO 8601 time, e.g. 2024-05-01T12:00:00."
            raise ConfigError(msg, field="at") from exc
    store = _store(project)
    try:
        done = store.materialize(views, at=when)
    finally:
        store.close()
    if fmt is Format.json:
        emit_json({"materialized": done})
        return
    for item in done:
        out.print(
            f"{item['view']}: {item['entities']} entities x {item['features']} features "
            f"as of {item['at']} ({item['seconds']:.2f}s)",
            highlight=False,
        )


def get(
    view: Annotated[str, typer.Argument(help="The feature view.")],
    entity: Annotated[
        list[str],
        typer.Option("--entity", "-e", help="An entity key as KEY=VALUE (repeat for composites)."),
    ],
    feature: Annotated[
        list[str] | None,
        typer.Option("--feature", help="Only these features (default: all of the view)."),
    ] = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Look up one entity's values in the online store."""
    row: dict[str, Any] = {}
    for item in entity:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--entity {item!r} is not KEY=VALUE.", field="entity")
        row[key.strip()] = value
    store = _store(project)
    refs = [f"{view}:{f}" for f in feature] if feature else [f"{view}:*"]
    try:
        found = store.online([row], refs)[0]
    finally:
        store.close()
    if fmt is Format.json:
        emit_json(found)
        return
    for name, value in found.items():
        out.print(f"{escape(name):>24}: {escape(str(value))}", highlight=False)


def impact(
    view: Annotated[str, typer.Argument(help="The feature view.")],
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Model versions (and the aliases pointing at them) trained with a feature view."""
    used = _store(project).impact(view)
    if fmt is Format.json:
        emit_json({"view": view, "models": used})
        return
    if not used:
        out.print(f"no registered model version was trained with feature view '{view}'")
        return
    table = Table(show_edge=False)
    for column in ("model", "version", "aliases", "features", "package"):
        table.add_column(column)
    for item in used:
        table.add_row(
            item["model"],
            str(item["version"]),
            ", ".join(item["aliases"]),
            escape(", ".join(item["features"])),
            item["package_sha256"][:12],
        )
    out.print(table)
