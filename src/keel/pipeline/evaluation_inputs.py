"""What the evaluate step hands :mod:`keel.evaluate` besides the model's predictions: the
columns to slice, audit and search (checked against the test data), and for
``evaluate.challenger_vs_champion`` the champion (the version holding ``registry.alias``): its
predictions on the same rows, and its package hash in the step's cache key (a new champion
means a new comparison)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, NotFoundError
from keel.project import Project
from keel.types import Artifact

if TYPE_CHECKING:
    import numpy as np

__all__ = ["champion_key", "champion_predictions", "evaluation_columns", "numeric_groupings"]

MANY_VALUES = 20
"""A numeric slice or sensitive column with more distinct values than this gets a warning."""


def evaluation_columns(
    project: Project, table: Any, inputs: list[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``evaluate.slices``, ``data.sensitive`` and worst-slice search columns (default: the
    model ``inputs``) of the test table, each as column -> values.

    Raises:
        ConfigError: A named column is not in the test data (names the field and the column).
    """
    cfg = project.config
    finder = cfg.evaluate.slice_finder
    wanted = {
        "evaluate.slices": cfg.evaluate.slices,
        "data.sensitive": cfg.data.sensitive,
        "evaluate.slice_finder.columns": finder.columns or [],
    }
    for field, names in wanted.items():
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise ConfigError(
                f"{field}: {', '.join(map(repr, missing))} not in the test data (columns: "
                f"{', '.join(table.column_names)}). Name existing columns.",
                field=field,
            )
    search = finder.columns if finder.columns is not None else inputs

    def columns(names: list[str]) -> dict[str, Any]:
        return {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}

    found = [n for n in search if n in table.column_names]
    return columns(cfg.evaluate.slices), columns(cfg.data.sensitive), columns(found)


def numeric_groupings(slices: dict[str, Any], sensitive: dict[str, Any]) -> list[str]:
    """A warning per ``evaluate.slices`` or ``data.sensitive`` column that is a number with
    more than :data:`MANY_VALUES` distinct values: every value is its own group, most of them
    small, so per-group metrics and fairness gaps measure small groups' noise."""
    import numpy as np

    warnings = []
    for name in dict.fromkeys([*slices, *sensitive]):
        values = slices[name] if name in slices else sensitive[name]
        if values.dtype.kind not in "iuf":
            continue
        distinct, counts = np.unique(values[~np.isnan(values)] if values.dtype.kind == "f"
                                     else values, return_counts=True)  # fmt: skip
        if len(distinct) <= MANY_VALUES:
            continue
        fields = [f for f, cols in (("evaluate.slices", slices), ("data.sensitive", sensitive))
                  if name in cols]  # fmt: skip
        warnings.append(
            f"{' and '.join(fields)}: {name!r} is a number with {len(distinct)} distinct values "
            f"in the test data, each its own group (the smallest {int(counts.min())} row(s)), "
            "so its per-group metrics and gaps mostly measure small groups' noise. Audit a "
            f"column of a few ranges of {name} instead (a CASE in a duckdb source's query, or "
            "a custom step); the model can keep reading it."
        )
    return warnings


def _champion(project: Project) -> Any:
    from keel.registry.registry import Registry

    cfg = project.config
    registry = Registry(project.metadata.database, cfg.registry)
    try:
        return registry.resolve(f"{cfg.model.name}@{cfg.registry.alias}")
    except NotFoundError:
        return None


def champion_key(project: Project, inputs: dict[str, Artifact]) -> str:
    """The champion's package sha256 when the comparison is configured, else ''."""
    if project.config.evaluate.challenger_vs_champion is None:
        return ""
    found = _champion(project)
    return "" if found is None else str(found.package_sha256)


def champion_predictions(ctx: Any, table: Any, classes: list[str]) -> tuple[str, np.ndarray] | None:
    """``(NAME@VERSION, raw predictions on table)`` of the alias holder, or None when the
    comparison is not configured or no version holds the alias yet.

    Raises:
        ConfigError: The champion predicts other classes than the challenger's ``classes``.
    """
    project = ctx.project
    if project.config.evaluate.challenger_vs_champion is None:
        return None
    found = _champion(project)
    if found is None:
        return None
    import numpy as np

    from keel.pipeline.steps import coerce_inputs
    from keel.registry.verify import load_package  # only with a champion: ~0.04 s of imports

    package = load_package(project, found.package_sha256)
    if list(package.classes) != list(classes):
        field = "evaluate.challenger_vs_champion"
        raise ConfigError(
            f"{field}: champion {found.name}@{found.version} predicts classes "
            f"{package.classes}, this model {classes}; they cannot be compared on the same "
            "labels. Remove the comparison for this run, or move the alias by hand.",
            field=field,
        )
    coerced = coerce_inputs(ctx, package.pipeline, table, "test (champion)")
    prediction = package.model.predict(package.pipeline.transform(coerced))
    return f"{found.name}@{found.version}", np.asarray(prediction)
