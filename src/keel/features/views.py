"""Feature views: what a feature store serves, declared in keel.yaml or in Python.

A view names its entity keys, its event-timestamp column (and optionally a created-timestamp
column, for bitemporal joins), a source, a TTL and its features: source columns (the latest value
at or before a point in time) or aggregations over trailing windows (``count``/``sum``/``mean``/
``min``/``max`` over e.g. ``7d``). :class:`FeatureView` is the Python spelling of the
``feature_views:`` section; both become the same validated :class:`~keel.config.FeatureViewConfig`.

Sources are opened as DuckDB relations: Parquet files and snapshots are scanned in place; CSV,
SQL and DuckDB-query sources are read through :func:`keel.data.read_source` (the same cleaning
as ingestion); a table handed over in Python is registered as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import ValidationError

from keel.config import AggregationConfig, FeatureViewConfig, SourceConfig
from keel.errors import ConfigError, DataValidationError

if TYPE_CHECKING:
    import duckdb

    from keel.project import Project

__all__ = ["FeatureView", "parse_refs"]

_PLACEHOLDER = "0" * 64


class FeatureView:
    """A feature view declared in Python (the same fields as a ``feature_views:`` entry).

    Args:
        name: The view's name, used in ``view:feature`` references.
        entities: The entity key column(s).
        timestamp: The event-timestamp column: when each value became true.
        source: A Parquet path or glob (``.csv`` for CSV), ``snapshot:<sha256>``, a
            :class:`~keel.config.SourceConfig`, or an in-memory Arrow table / pandas DataFrame.
        features: Column names and/or aggregation dicts
            (``{"function": "mean", "column": "cnt", "window": "7d"}``).
        created_timestamp: When each row was written; makes joins bitemporal.
        ttl: How old a value may be and still be used (``"7d"``; ``"0"`` means no bound).
        description: Free text shown by ``keel features list``.

    Raises:
        ConfigError: A field is invalid; the message names it.

    Example:
        >>> view = FeatureView("user_stats", entities=["user_id"], timestamp="ts",
        ...                    source="data/ratings.parquet", ttl="30d",
        ...                    features=["rating", {"function": "count", "window": "7d"}])
    """

    def __init__(
        self,
        name: str,
        *,
        entities: Sequence[str],
        timestamp: str,
        source: Any,
        features: Sequence[str | dict[str, Any] | AggregationConfig],
        created_timestamp: str | None = None,
        ttl: str = "0",
        description: str = "",
    ) -> None:
        self.table: pa.Table | None = None
        spec: dict[str, Any] = {
            "name": name,
            "entities": list(entities),
            "timestamp": timestamp,
            "created_timestamp": created_timestamp,
            "ttl": ttl,
            "features": [
                f.model_dump(exclude_none=True) if isinstance(f, AggregationConfig) else f
                for f in features
            ],
            "description": description,
        }
        if isinstance(source, SourceConfig):
            spec["source"] = source
        elif isinstance(source, str | Path) and str(source).startswith("snapshot:"):
            spec["snapshot"] = str(source).removeprefix("snapshot:")
        elif isinstance(source, str | Path):
            fmt = "csv" if str(source).lower().endswith(".csv") else "parquet"
            spec["source"] = {"path": str(source), "format": fmt}
        else:
            self.table = _as_arrow(source, f"FeatureView '{name}' source")
            spec["snapshot"] = _PLACEHOLDER
        try:
            config = FeatureViewConfig.model_validate(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = f"FeatureView '{name}': {where}: {first['msg']}. Fix that argument."
            raise ConfigError(msg, field=where) from exc
        self.config = config.model_copy(update={"snapshot": None}) if self.table else config

    @classmethod
    def from_config(cls, config: FeatureViewConfig) -> FeatureView:
        """A view from its keel.yaml entry."""
        view = cls.__new__(cls)
        view.table = None
        view.config = config
        return view

    @property
    def name(self) -> str:
        """The view's name."""
        return self.config.name

    @property
    def entities(self) -> list[str]:
        """The entity key columns."""
        return list(self.config.entities)

    def feature_names(self) -> list[str]:
        """The view's features, in declaration order."""
        return self.config.feature_names()

    def columns(self) -> list[str]:
        """Feature names that are plain source columns."""
        return [f for f in self.config.features if isinstance(f, str)]

    def aggregations(self) -> list[AggregationConfig]:
        """Features aggregated over a window."""
        return [f for f in self.config.features if isinstance(f, AggregationConfig)]

    def describe(self) -> dict[str, Any]:
        """The view as plain data (for ``keel features list``)."""
        cfg = self.config
        if self.table is not None:
            source = f"in-memory table ({self.table.num_rows} rows)"
        elif cfg.snapshot is not None:
            source = f"snapshot:{cfg.snapshot}"
        else:
            assert cfg.source is not None
            from keel.data.sources import source_identity

            identity = source_identity(cfg.source)
            sql = cfg.source.format in ("sql", "duckdb")
            source = identity if sql else f"{cfg.source.format}:{identity}"
        return {
            "name": cfg.name,
            "entities": list(cfg.entities),
            "timestamp": cfg.timestamp,
            "created_timestamp": cfg.created_timestamp,
            "ttl": cfg.ttl,
            "source": source,
            "features": self.feature_names(),
            "description": cfg.description,
        }

    def __repr__(self) -> str:
        return (
            f"FeatureView({self.name!r}, entities={self.entities}, features={self.feature_names()})"
        )

    # --- reading -------------------------------------------------------------------------------

    def relation(self, con: duckdb.DuckDBPyConnection, project: Project | None) -> str:
        """Register the source with ``con``; returns SQL usable after FROM. Columns checked."""
        from keel.data.scan import sql

        cfg = self.config
        alias = f"__src_{cfg.name}"
        if self.table is not None:
            con.register(alias, self.table)
            rel = alias
        elif cfg.snapshot is not None:
            if project is None:
                raise ConfigError(f"view '{cfg.name}' reads a snapshot: open it with a project.")
            artifact = project.metadata.get_artifact(cfg.snapshot)
            rel = f"read_parquet({sql(str(project.artifacts.local_path(artifact.sha256)))})"
        else:
            assert cfg.source is not None
            rel = self._source_relation(con, cfg.source, project, alias)
        self._check_columns(con, rel)
        return rel

    def _source_relation(
        self,
        con: duckdb.DuckDBPyConnection,
        source: SourceConfig,
        project: Project | None,
        alias: str,
    ) -> str:
        from keel.data import read_source
        from keel.data.scan import sql

        root = project.root if project is not None else Path.cwd()
        if source.format == "parquet":
            assert source.path is not None
            path = Path(source.path).expanduser()
            path = path if path.is_absolute() else root / path
            return f"read_parquet({sql(str(path))}, union_by_name = true)"
        con.register(alias, read_source(source, root))
        return alias

    def _check_columns(self, con: duckdb.DuckDBPyConnection, rel: str) -> None:
        import duckdb

        cfg = self.config
        try:
            have = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()]
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            msg = f"feature view '{cfg.name}': cannot read its source ({first})."
            raise DataValidationError(msg, field=cfg.name) from exc
        wanted = [*cfg.entities, cfg.timestamp, *self.columns()]
        wanted += [a.column for a in self.aggregations() if a.column is not None]
        if cfg.created_timestamp:
            wanted.append(cfg.created_timestamp)
        missing = [c for c in dict.fromkeys(wanted) if c not in have]
        if missing:
            msg = (
                f"feature view '{cfg.name}': column(s) {missing} are not in its source "
                f"(columns: {have}). Fix the view's entities/timestamp/features."
            )
            raise DataValidationError(msg, field=cfg.name)


def parse_refs(
    refs: Sequence[str], views: dict[str, FeatureView]
) -> list[tuple[FeatureView, list[str]]]:
    """``["view:feature", "view:*", ...]`` -> views with their requested features, in order.

    Raises:
        ConfigError: A reference is malformed, or names an unknown view or feature.
    """
    if isinstance(refs, str):
        refs = [refs]
    if not refs:
        raise ConfigError("no features requested; pass e.g. ['view:feature'].", field="features")
    chosen: dict[str, list[str]] = {}
    for ref in refs:
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise ConfigError(
                f"feature reference {ref!r} is not 'view:feature' (or 'view:*').", field="features"
            )
        name, feature = ref.split(":")
        view = views.get(name)
        if view is None:
            known = ", ".join(sorted(views)) or "none declared"
            msg = f"unknown feature view '{name}' in {ref!r}. Views: {known}."
            raise ConfigError(msg, field="features")
        names = view.feature_names()
        if feature != "*" and feature not in names:
            msg = f"view '{name}' has no feature '{feature}'. Its features: {', '.join(names)}."
            raise ConfigError(msg, field="features")
        wanted = chosen.setdefault(name, [])
        for f in names if feature == "*" else [feature]:
            if f not in wanted:
                wanted.append(f)
    return [(views[name], feats) for name, feats in chosen.items()]


def _as_arrow(data: Any, what: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, list | dict):
        try:
            return pa.Table.from_pylist(data) if isinstance(data, list) else pa.table(data)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise DataValidationError(f"{what}: cannot make a table of it ({exc}).") from exc
    msg = f"{what} must be an Arrow table, a pandas DataFrame, a list of dicts or a dict of lists."
    raise DataValidationError(msg)
