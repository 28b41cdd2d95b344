"""Online features on the request path: ``POST /v1/features`` lookups and entity-only requests.

A model trained with feature views (``features.views``; its lineage names them) takes requests
that carry only entity keys: :func:`fill_views` fills the missing view features from the online
store before the feature pipeline runs, then drops the keys that only served the lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.errors import ConfigError, DataValidationError, NotFoundError

__all__ = ["fill_views", "lookup"]


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
