"""Online features on the request path: ``POST /v1/features`` lookups and entity-only requests.

A model trained with feature views (``features.views``; its lineage names them) takes requests
that carry only entity keys: :func:`fill_views` fills the missing view features from the online
store before the feature pipeline runs, then drops the keys that only served the lookup. An
entity the online store has no row for (never materialized, or deleted since) is scored with
its view features missing, imputed as in training, and reported: :func:`fill_views` returns an
:class:`UnknownEntity` per such instance and view, which the answer carries as an
``unknown_entity`` warning and ``keel_unknown_entities_total{model,view}`` counts. Refusing
instead would break every client during a partial materialization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keel.errors import BackendError, ConfigError, DataValidationError, NotFoundError
from keel.validate.coerce import Finding

__all__ = ["UnknownEntity", "fill_views", "lookup", "unmaterialized"]


@dataclass(frozen=True)
class UnknownEntity:
    """An instance whose entity a view's online store has no row for: its features were
    missing (imputed as in training), not looked up.

    Attributes:
        index: The instance's index in the request.
        view: The feature view.
        keys: The view's entity keys as the request gave them.
        features: The view features that were missing.
    """

    index: int
    view: str
    keys: dict[str, Any]
    features: tuple[str, ...]

    def finding(self) -> Finding:
        """The ``unknown_entity`` warning of the answer (``field`` names the first key)."""
        first = next(iter(self.keys))
        where = f"instances[{self.index}].{first}"
        value = self.keys[first] if len(self.keys) == 1 else self.keys
        given = ", ".join(f"{key} = {val!r}" for key, val in self.keys.items())
        message = (
            f"{where}: no entity {given} in feature view '{self.view}' of the online store "
            f"(not materialized, or deleted): {', '.join(self.features)} scored as missing "
            "(imputed as in training)."
        )
        return Finding(where, "unknown_entity", "warning", value, message)


def fill_views(
    store: Any, used: dict[str, Any], instances: list[Any], key_only: Sequence[str]
) -> list[UnknownEntity]:
    """Fill each instance's missing view features from the online store, in place.

    An entity the online store has no row for gets None values (the pipeline imputes them,
    as for any missing value) and an :class:`UnknownEntity` in the result, in instance order
    per view: the answer warns and the server counts it. Instances that carry all the view
    features are not looked up.

    Returns:
        The instances scored without their view features (empty when every entity was found).

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
    unknown: list[UnknownEntity] = []
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
        empty: list[Any] = []  # all None: an unknown entity, or a known one of nulls
        for row, values in zip(lacking, found, strict=True):
            blank = True
            for feature in names:
                value = values[feature]
                blank = blank and value is None
                row.setdefault(feature, value)
            if blank:
                empty.append(row)
        if empty:
            unknown.extend(_unknown(store, view, names, instances, empty))
    for row in instances:  # entity keys that only served the lookup
        if isinstance(row, dict):
            for key in key_only:
                row.pop(key, None)
    return unknown


def _unknown(
    store: Any, view: str, names: Sequence[str], instances: list[Any], empty: list[Any]
) -> list[UnknownEntity]:
    """Which of ``empty`` (rows looked up in ``view`` that got only None values) the online
    store has no row for: read again, for these rows only (a known entity can hold nulls)."""
    keys = store.views[view].entities
    _, rows = store.online_store.read(view, keys, empty, names[:1])
    missing = {id(row) for row, values in zip(empty, rows, strict=True) if values is None}
    return [
        UnknownEntity(i, view, {key: row[key] for key in keys}, tuple(names))
        for i, row in enumerate(instances)
        if id(row) in missing
    ]


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
