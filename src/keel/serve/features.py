"""Online features on the request path: ``POST /v1/features`` lookups and entity-only requests.

A model trained with feature views (``features.views``; its lineage names them) takes requests
that carry only entity keys: :func:`fill_views` fills the missing view features from the online
store before the feature pipeline runs, then drops the keys that only served the lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.errors import BackendError, ConfigError, DataValidationError, NotFoundError

__all__ = ["fill_views", "lookup", "unmaterialized"]


def fill_views(
    store: Any, used: dict[str, Any], instances: list[Any], key_only: Sequence[str]
) -> None:
    """Fill each instance's missing view features from the online store, in place.

    Raises:
        NotFoundError: The project no longer declares feature views.
        DataValidationError: An entity key is missing or of the wrong type (names it).
    """
    if store is None:
        raise NotFoundError(
            "this model was trained with feature views but the project declares none; "
            "restore its feature_views: in keel.yaml.",
            field="features",
        )
    for view, spec in used["views"].items():
        names = spec["features"]
        lacking = [
            row for row in instances if isinstance(row, dict) and any(f not in row for f in names)
        ]
        if not lacking:
            continue
        try:
            found = store.online(lacking, [f"{view}:{f}" for f in names])
        except ConfigError as exc:
            raise DataValidationError(exc.message, field=exc.field) from exc
        for row, values in zip(lacking, found, strict=True):
            for feature in names:
                row.setdefault(feature, values[feature])
    for row in instances:  # entity keys that only served the lookup
        if isinstance(row, dict):
            for key in key_only:
                row.pop(key, None)


def unmaterialized(store: Any, models: Mapping[str, Any]) -> list[str]:
    """A warning for each served model trained with feature views that the online store lacks
    (never materialized, or the project no longer declares them): its requests of entity keys
    only would be refused, although the server reports itself ready."""
    warnings = []
    for name, model in models.items():
        if not model.fills:
            continue
        views = sorted(model.fills["views"])
        if store is None:
            missing = views
        else:
            try:
                missing = [v for v in views if store.online_store.meta(v) is None]
            except (BackendError, ConfigError):
                continue  # the first request says what is wrong with the store
        if missing:
            warnings.append(
                f"{name}@{model.version} was trained with feature views ({', '.join(views)}) "
                f"and the online store has no {', '.join(missing)}: requests of entity keys "
                "only are refused until `keel features materialize`"
                + (" (declare them under feature_views: first)." if store is None else ".")
            )
    return warnings


def lookup(store: Any, request: Any, max_entities: int) -> list[dict[str, Any]]:
    """``{"features": [...], "entities": [...]}`` -> one dict of values per entity.

    Raises:
        NotFoundError: The project declares no feature views.
        DataValidationError: A malformed request or an unknown feature (names it).
    """
    if store is None:
        raise NotFoundError(
            "this project declares no feature views: declare them under feature_views: in "
            "keel.yaml (entities, timestamp, source, features; see docs/keel-yaml.md"
            "#feature-views), run 'keel features materialize', then restart the server.",
            field="features",
        )
    features = request.get("features") if isinstance(request, dict) else None
    entities = request.get("entities") if isinstance(request, dict) else None
    if not isinstance(features, list) or not features:
        raise DataValidationError(
            'request needs "features": a non-empty list of "view:feature".', field="features"
        )
    if not isinstance(entities, list) or not entities or len(entities) > max_entities:
        raise DataValidationError(
            f'request needs "entities": a list of 1 to {max_entities} objects of entity keys.',
            field="entities",
        )
    try:
        return list(store.online(entities, features))
    except ConfigError as exc:
        raise DataValidationError(exc.message, field=exc.field) from exc
