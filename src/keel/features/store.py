"""The feature store: point-in-time joins of feature views offline, lookups online.

``FeatureStore(project).historical(entities, features=["view:feature", ...])`` joins the views
onto entity rows without leaking the future (the semantics and the SQL are in
:mod:`keel.features.pit`); :meth:`FeatureStore.materialize` computes the same join at "now"
into the online store (:mod:`keel.features.online`), so offline and online features agree by
construction; :meth:`FeatureStore.online` reads it back.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from keel.data.scan import fetch_table, quote_ident
from keel.errors import ConfigError, NotFoundError
from keel.features.pit import connect, entity_timestamp, join_views, load_entities
from keel.features.views import FeatureView, _as_arrow, parse_refs

if TYPE_CHECKING:
    from keel.features.online import OnlineStore
    from keel.project import Project
    from keel.types import Artifact

__all__ = ["FeatureStore", "join_feature_views", "training_views", "views_hint"]


class FeatureStore:
    """Feature views of a project: point-in-time joins offline, low-latency lookups online.

    Args:
        project: A :class:`~keel.project.Project`, its directory, or None for the nearest one;
            pass ``project=False`` to use only ``views`` (no keel.yaml, no online store file).
        views: Extra views declared in Python (:class:`~keel.features.views.FeatureView`).
        online_url: The online store (``sqlite:///path`` or ``redis://...``); default
            ``$KEEL_ONLINE_STORE``, else ``sqlite:///<project>/.keel/online.db``.

    Example:
        >>> store = FeatureStore("my-project")
        >>> train = store.historical(labels_df, features=["user_stats:rating_mean_30d"])
        >>> store.materialize()
        >>> store.online([{"user_id": 7}], ["user_stats:rating_mean_30d"])
    """

    def __init__(
        self,
        project: Any = None,
        *,
        views: Sequence[FeatureView] = (),
        online_url: str | None = None,
    ) -> None:
        from keel.project import Project

        self.project: Project | None
        if project is False:
            self.project = None
        else:
            self.project = project if isinstance(project, Project) else Project(project)
        self.views: dict[str, FeatureView] = {}
        if self.project is not None:
            for cfg in self.project.config.feature_views:
                self.views[cfg.name] = FeatureView.from_config(cfg)
        for view in views:
            if view.name in self.views:
                raise ConfigError(f"feature view '{view.name}' is declared twice.", field="views")
            self.views[view.name] = view
        self._online_url = online_url
        self._online: OnlineStore | None = None
        self._plans: dict[tuple[str, ...], list[tuple[FeatureView, list[str]]]] = {}

    def list_views(self) -> list[dict[str, Any]]:
        """The declared views as plain data."""
        return [view.describe() for view in self.views.values()]

    def view(self, name: str) -> FeatureView:
        """One view by name. NotFoundError lists the declared ones."""
        found = self.views.get(name)
        if found is None:
            known = ", ".join(sorted(self.views)) or "none declared in keel.yaml"
            raise NotFoundError(f"unknown feature view '{name}'. Views: {known}.", field="view")
        return found

    # --- offline ---------------------------------------------------------------------------

    def historical(
        self,
        entities: Any,
        features: Sequence[str],
        *,
        timestamp: str | None = None,
        full_names: bool = False,
    ) -> Any:
        """Point-in-time-correct features for each entity row (see the module docstring).

        Args:
            entities: Entity keys + an event-timestamp column (Arrow table, pandas DataFrame,
                list of dicts).
            features: ``"view:feature"`` (or ``"view:*"``) references.
            timestamp: The entities' timestamp column; default the only date/timestamp column.
            full_names: Name feature columns ``view__feature`` instead of ``feature``.

        Returns:
            The entity rows in their order with the feature columns appended: a pandas
            DataFrame when ``entities`` is one, else an Arrow table.

        Raises:
            ConfigError: A reference names an unknown view or feature, or names collide.
            DataValidationError: A key or the timestamp column is missing from the entities, or
                a view's source lacks a declared column.
        """
        table = _as_arrow(entities, "entities")
        joined = self._historical_table(table, features, timestamp, full_names)
        if type(entities).__name__ == "DataFrame":
            return joined.to_pandas()
        return joined

    def _historical_table(
        self, table: pa.Table, features: Sequence[str], timestamp: str | None, full_names: bool
    ) -> pa.Table:
        plan = parse_refs(features, self.views)
        ts = timestamp or entity_timestamp(table)
        keys = [k for view, _ in plan for k in view.entities]
        out = table
        with connect() as con:
            load_entities(con, table, keys, ts)
            values = join_views(con, plan, self.project)
            for view, names in plan:
                for name in names:
                    column = f"{view.name}__{name}" if full_names else name
                    if column in out.column_names:
                        msg = (
                            f"feature '{view.name}:{name}' would be column '{column}', which "
                            "the entity rows (or another view) already have. Rename the entity "
                            "column, or pass full_names=True for 'view__feature' columns."
                        )
                        raise ConfigError(msg, field="features")
                    out = out.append_column(column, values[view.name, name])
        return out

    # --- online ----------------------------------------------------------------------------

    @property
    def online_store(self) -> OnlineStore:
        """The online store (opened on first use)."""
        if self._online is None:
            from keel.features.online import open_online_store

            self._online = open_online_store(self._online_url, self.project)
        return self._online

    def materialize(
        self, views: Sequence[str] | None = None, *, at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Copy each view's values as of ``at`` (default now; naive means UTC) for every entity to
        the online store.

        The values are :meth:`historical` at ``at`` for every entity key in the source, so
        online and offline agree. Returns one summary per view (rows, features, seconds).
        """
        from keel.features.online import materialize_view

        names = list(views) if views else list(self.views)
        when = at or datetime.now(UTC)
        if when.tzinfo is not None:  # naive times are UTC already
            when = when.astimezone(UTC).replace(tzinfo=None)
        done = []
        for name in names:
            view = self.view(name)
            with connect() as con:
                rel = view.relation(con, self.project)
                key_list = ", ".join(quote_ident(k) for k in view.entities)
                keys = fetch_table(con, f"SELECT DISTINCT {key_list} FROM {rel}")
            entities = keys.append_column(
                "__keel_at", pa.array(np.full(keys.num_rows, when, dtype="datetime64[us]"))
            )
            table = self._historical_table(
                entities, [f"{name}:*"], "__keel_at", full_names=False
            ).drop_columns(["__keel_at"])
            done.append(materialize_view(self.online_store, view, table, when))
        return done

    def online(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        *,
        full_names: bool = False,
    ) -> list[dict[str, Any]]:
        """The materialized values for each entity row: a dict of its keys and the features.

        Unknown entities get None values.

        Raises:
            ConfigError: A reference names an unknown view or feature.
            DataValidationError: An entity row lacks a key of a requested view.
            NotFoundError: A requested view has not been materialized.
        """
        plan = self._plans.get(tuple(features))
        if plan is None:
            plan = parse_refs(features, self.views)
            self._plans[tuple(features)] = plan
        store = self.online_store
        results: list[dict[str, Any]] = [{} for _ in entity_rows]
        for view, names in plan:
            typed, values = store.read(view.name, view.entities, entity_rows, names)
            for result, keys, found in zip(results, typed, values, strict=True):
                for key, value in zip(view.entities, keys, strict=True):
                    result[key] = value
                for name in names:
                    value = None if found is None else found.get(name)
                    result[f"{view.name}__{name}" if full_names else name] = value
        return results

    def close(self) -> None:
        """Close the online store connection."""
        if self._online is not None:
            self._online.close()
            self._online = None

    # --- lineage ---------------------------------------------------------------------------

    def impact(self, view: str) -> list[dict[str, Any]]:
        """Model versions (with their aliases) whose packages were trained with ``view``."""
        if self.project is None:
            raise ConfigError("impact needs a project (its registry).")
        if view not in self.views:
            self.view(view)
        found = []
        meta = self.project.metadata
        for model in meta.list_models():
            for version in meta.list_versions(model["name"]):
                used = training_views(self.project, version.package_sha256)
                if used is None or view not in used["views"]:
                    continue
                found.append(
                    {
                        "model": version.name,
                        "version": version.version,
                        "aliases": list(version.aliases),
                        "features": [r for r in used["refs"] if r.split(":")[0] == view],
                        "package_sha256": version.package_sha256,
                        "created_at": version.created_at.isoformat(),
                    }
                )
        return found


def training_views(project: Project, package_sha256: str) -> dict[str, Any] | None:
    """The feature views a model package was trained with, from its lineage; None if none.

    The training-set step stores ``feature_views`` (refs, views with their entity keys, the
    entity timestamp) in the metadata of the snapshots it writes; the package's lineage names
    those snapshots.
    """
    manifest = orjson.loads(project.artifacts.get(package_sha256))
    for sha in _shas_in(manifest.get("lineage", {})):
        try:
            artifact = project.metadata.get_artifact(sha)
        except (NotFoundError, ConfigError):
            continue
        found = artifact.metadata.get("feature_views")
        if isinstance(found, dict):
            return found
    return None


def views_hint(project: Project, package_sha256: str, missing: Sequence[str]) -> str | None:
    """Why a file for a model trained with feature views lacks ``missing`` columns, and what to
    do; None when the model has no views or none of ``missing`` is a view feature.

    The server fills a request's view features from the online store, and ``keel predict``,
    ``explain`` and ``monitor --input`` fill a file's (:mod:`keel.serve.viewfill`) unless told
    ``--features file`` or neither fill works; then the file must carry them, as the training
    rows did after the point-in-time join.
    """
    used = training_views(project, package_sha256)
    if used is None:
        return None
    views = used["views"]
    theirs = [m for m in missing if any(m in spec["features"] for spec in views.values())]
    if not theirs:
        return None
    keys = sorted({k for spec in views.values() for k in spec["entities"]})
    refs = ", ".join(f'"{v}:*"' for v in sorted(views))
    ts = used.get("entity_timestamp") or "TIMESTAMP"
    return (
        f"{len(theirs)} of them come from the feature views the model was trained with "
        f"({', '.join(sorted(views))}): for rows of entity keys ({', '.join(keys)}) they are "
        f"filled from the online store, or as of {ts!r} when the file has it (--features "
        f"auto|as-of|online); to carry them in the file, join them first: "
        f"keel.FeatureStore(PROJECT).historical(rows, features=[{refs}], timestamp={ts!r}) "
        f"(point in time, as training did; rows hold the keys and {ts!r})."
    )


def _shas_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _shas_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _shas_in(item)
    elif isinstance(value, str) and len(value) == 64:
        yield value


# --- the training-set step -------------------------------------------------------------------


def join_feature_views(ctx: Any) -> dict[str, Artifact]:
    """Join ``features.views`` point-in-time onto the train and test snapshots.

    Each snapshot's rows are entity rows (keys + ``features.entity_timestamp``); the joined
    tables become the ``train_snapshot``/``test_snapshot`` the later steps read, and their
    metadata records the views and references for the model package's lineage.
    """
    from keel.data import read_snapshot

    project = ctx.project
    cfg = project.config.features
    store = FeatureStore(project)
    plan = parse_refs(cfg.views, store.views)
    refs = [f"{view.name}:{name}" for view, names in plan for name in names]
    outputs = {}
    for split in ("train", "test"):
        source = ctx.inputs[f"{split}_snapshot"]
        table = read_snapshot(project.artifacts, source)
        ts = cfg.entity_timestamp or _default_timestamp(plan, table)
        joined = store._historical_table(table, refs, ts, full_names=False)
        info = {
            "refs": refs,
            "entity_timestamp": ts,
            "views": {v.name: {"entities": v.entities, "features": n} for v, n in plan},
        }
        outputs[f"{split}_snapshot"] = _put_table(project, joined, split, source, info)
        ctx.facts[f"{split}_rows"] = joined.num_rows
    ctx.facts.update(views=len(plan), features=len(refs), refs=refs)
    return outputs


def _default_timestamp(plan: list[tuple[FeatureView, list[str]]], table: pa.Table) -> str:
    for view, _ in plan:
        if view.config.timestamp in table.column_names:
            return view.config.timestamp
    msg = (
        "features.views: the training data has no column named like a view's timestamp "
        f"(columns: {table.column_names}). Set features.entity_timestamp to the column that "
        "holds each row's point in time."
    )
    raise ConfigError(msg, field="features.entity_timestamp")


def _put_table(
    project: Project, table: pa.Table, split: str, parent: Artifact, info: dict[str, Any]
) -> Artifact:
    import pyarrow.parquet as pq

    from keel.data.snapshots import schema_fingerprint

    with tempfile.TemporaryDirectory(prefix="keel-views-") as tmp:
        path = Path(tmp) / "snapshot.parquet"
        pq.write_table(table, path, row_group_size=122_880)
        metadata = {
            "rows": table.num_rows,
            "columns": table.column_names,
            "schema_fingerprint": schema_fingerprint(table.schema),
            "split": split,
            "source": "feature_views:" + ",".join(sorted(info["views"])),
            "parent": parent.sha256,
            "feature_views": info,
        }
        return project.artifacts.put(path, kind="snapshot", metadata=metadata)


def views_fingerprint(project: Project, inputs: Mapping[str, Any]) -> str:
    """A cache key part that changes when a referenced view's source data may have changed."""
    import hashlib

    from keel.data import source_fingerprint

    digest = hashlib.sha256()
    wanted = {ref.split(":")[0] for ref in project.config.features.views}
    for cfg in project.config.feature_views:
        if cfg.name not in wanted:
            continue
        part = cfg.snapshot or (
            source_fingerprint(cfg.source, project.root) if cfg.source is not None else ""
        )
        digest.update(f"{cfg.name}={part}\n".encode())
    return digest.hexdigest()
