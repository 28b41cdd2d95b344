"""The metadata store: runs, artifacts, lineage, the model registry and the audit log.

One class, ``MetadataStore``, over any SQLAlchemy URL. The default Keel uses is
``sqlite:///<project>/.keel/keel.db``; ``postgresql+psycopg://...`` scales it out. The schema is
migrated with Alembic when the store opens, and every write runs in one transaction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.store import leases, registry_tables, tracking_tables
from keel.store.database import Database
from keel.store.environment import capture_environment, environment_id
from keel.store.leases import Owner, ReapedRun, RunningRun
from keel.store.registry_store import RegistryMethods
from keel.store.tables import artifacts, lineage, model_versions, runs, utc_now
from keel.store.tracking_tables import Condition, Order, TrackedRun
from keel.store.values import check_sha as _check_sha
from keel.store.values import to_json as _to_json
from keel.types import Artifact, LineageEdge, Run

__all__ = ["MetadataStore"]

FinishStatus = Literal["succeeded", "failed", "cached", "cancelled"]
_HEX = re.compile(r"[0-9a-f]+")
_MIN_PREFIX = 6


class MetadataStore(RegistryMethods):
    """Runs, artifacts, lineage, model versions, aliases and the audit log in one database.

    Args:
        url: A SQLAlchemy URL, e.g. ``sqlite:///.keel/keel.db`` or
            ``postgresql+psycopg://user:password@host/keel``. The schema is created or
            upgraded on open.

    Raises:
        ConfigError: The URL is malformed or its database driver is unknown or missing.
        BackendError: The database is unreachable (the message shows the URL, password masked).

    Example:
        >>> store = MetadataStore("sqlite:///:memory:")
        >>> run = store.start_run("ingest", cache_key="k", config_hash="c", code_version="v")
        >>> store.finish_run(run.id, status="succeeded").status
        'succeeded'
        >>> store.close()
    """

    def __init__(self, url: str, *, default_alias: str = registry_tables.DEFAULT_ALIAS) -> None:
        self._db = Database(url)
        self.default_alias = default_alias  # a bare model name: a project's registry.alias
        # Environments this store has already written: a run then costs no lookup for them.
        self._known_environments: set[str] = set()

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return self._db.display_url

    def __repr__(self) -> str:
        return f"MetadataStore({self.url!r})"

    @property
    def database(self) -> Database:
        """The database connection (for the stores that share it: pipeline runs)."""
        return self._db

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connections. The store cannot be used afterwards."""
        self._db.close()

    # -- artifacts ---------------------------------------------------------------------------

    def record_artifact(self, artifact: Artifact) -> None:
        """Record an artifact; recording the same sha256 again changes nothing.

        Args:
            artifact: What ``ArtifactStore.put`` returned.
        """
        sha = _check_sha(artifact.sha256, "artifact.sha256")
        values = {
            "sha256": sha,
            "kind": artifact.kind,
            "uri": artifact.uri,
            "size": artifact.size,
            "metadata": _to_json(artifact.metadata, "artifact.metadata"),
            "recorded_at": utc_now(),
        }
        exists = sa.select(artifacts.c.sha256).where(artifacts.c.sha256 == sha)
        try:
            with self._db.write() as conn:
                if conn.scalar(exists) is None:
                    conn.execute(sa.insert(artifacts).values(**values))
        except sa.exc.IntegrityError:
            # Another writer recorded the same sha256 between our check and insert: fine.
            with self._db.read() as conn:
                if conn.scalar(exists) is None:
                    raise

    def get_artifact(self, sha256: str) -> Artifact:
        """The recorded artifact with this sha256 or unique prefix (at least 6 hex digits).

        Raises:
            NotFoundError: Nothing, or more than one artifact, matches.
            ConfigError: ``sha256`` is not hex or is shorter than 6 digits.
        """
        with self._db.read() as conn:
            sha = _resolve_prefix(conn, artifacts.c.sha256, sha256, what="artifact", full=64)
            row = conn.execute(sa.select(artifacts).where(artifacts.c.sha256 == sha)).mappings()
            found = row.first()
        if found is None:
            raise NotFoundError(f"no artifact {sha} is recorded", field="sha256")
        return _artifact(found)

    def list_artifacts(self, kind: str | None = None, limit: int = 100) -> list[Artifact]:
        """Recorded artifacts, newest first, optionally of one ``kind``."""
        query = sa.select(artifacts).order_by(artifacts.c.recorded_at.desc()).limit(limit)
        if kind is not None:
            query = query.where(artifacts.c.kind == kind)
        with self._db.read() as conn:
            return [_artifact(row) for row in conn.execute(query).mappings()]

    # -- runs and lineage --------------------------------------------------------------------

    def start_run(
        self,
        step: str,
        *,
        cache_key: str,
        config_hash: str,
        code_version: str,
        params: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        owner: Owner | None = None,
        lease_seconds: float | None = None,
    ) -> Run:
        """Record that a step started; the run's status is ``running``.

        Args:
            step: Step name.
            cache_key: Hash of the step's code, inputs and config.
            config_hash: Hash of the configuration the step saw.
            code_version: Keel version plus a hash of the step's source.
            params: Small JSON-able facts about the run.
            environment: What the run runs on; by default this process's
                :func:`~keel.store.environment.capture_environment` (git commit of the cwd).
                The pipeline passes the capture for the project directory.
            tags: Labels to record now (``facts["tags"]`` at finish adds more).
            owner: The process that runs the step; by default this one. If it dies before
                ``finish_run``, the next :meth:`reap_dead_runs` marks the run failed.
            lease_seconds: Start a lease that long (see :meth:`heartbeat`); by default none
                until :func:`~keel.store.leases.keep_alive` renews it.

        Returns:
            The new run, with a fresh uuid4 hex id.
        """
        run = Run(
            id=uuid.uuid4().hex,
            step=step,
            status="running",
            cache_key=cache_key,
            config_hash=config_hash,
            code_version=code_version,
            started_at=utc_now(),
            params=_to_json(params or {}, "params"),
        )
        captured = capture_environment() if environment is None else environment
        env = _to_json(captured, "environment")
        env_id = environment_id(env)
        tag_facts = {"tags": _to_json(tags or {}, "tags")}
        tag_rows = tracking_tables.fact_rows(run.id, tag_facts)
        with self._db.write() as conn:
            if env_id not in self._known_environments:
                tracking_tables.record_environment(conn, env_id, env)
            conn.execute(
                sa.insert(runs).values(
                    id=run.id,
                    step=step,
                    status=run.status,
                    cache_key=cache_key,
                    config_hash=config_hash,
                    code_version=code_version,
                    started_at=run.started_at,
                    params=run.params,
                    environment_id=env_id,
                    summary=tracking_tables.summarize(tag_facts, None),
                    **leases.owner_values(owner or Owner.current(), lease_seconds, run.started_at),
                )
            )
            for table, rows in tag_rows.items():
                conn.execute(sa.insert(table), rows)
        self._known_environments.add(env_id)
        return run

    def finish_run(
        self,
        run_id: str,
        *,
        status: FinishStatus,
        outputs: Mapping[str, str] | None = None,
        inputs: Mapping[str, str] | None = None,
        cpu_seconds: float | None = None,
        peak_memory_mb: float | None = None,
        error: str | None = None,
        params: Mapping[str, Any] | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> Run:
        """Close a running run and record its lineage and tracked facts, in one transaction.

        Args:
            run_id: The id ``start_run`` returned.
            status: ``succeeded``, ``failed``, ``cached`` (reused a cached run's outputs) or
                ``cancelled`` (its pipeline run was cancelled while it ran).
            outputs: Artifact sha256 by output name.
            inputs: Artifact sha256 by input name.
            cpu_seconds: CPU time the step used.
            peak_memory_mb: Peak resident memory.
            error: The error message, for a failed run.
            params: Merged into the params given to ``start_run``.
            facts: What the step reported. ``facts["params"]`` (name -> scalar),
                ``facts["metrics"]`` (name -> number), ``facts["history"]`` (metric -> values
                per iteration) and ``facts["tags"]`` (name -> text) are stored queryably
                (``search_runs``); nested names are joined with ``.``, non-numeric metrics are
                kept only in the facts. The facts without the history are also kept as
                ``params["facts"]``.

        Returns:
            The finished run with its inputs and outputs.

        Raises:
            NotFoundError: No run has this id.
            ConflictError: The run has already finished.
            ConfigError: A bad status or a sha256 that is not 64 hex digits.
        """
        if status not in get_args(FinishStatus):
            msg = f"finish_run: status {status!r} is not one of {', '.join(get_args(FinishStatus))}"
            raise ConfigError(msg, field="status")
        edges = _edges(run_id, inputs or {}, "input") + _edges(run_id, outputs or {}, "output")
        values: dict[str, Any] = {
            "status": status,
            "ended_at": utc_now(),
            "cpu_seconds": cpu_seconds,
            "peak_memory_mb": peak_memory_mb,
            "error": error,
        }
        extra = _to_json(params or {}, "params")
        clean_facts = _to_json(facts or {}, "facts")
        fact_rows = tracking_tables.fact_rows(run_id, clean_facts)
        if facts is not None:
            extra["facts"] = {k: v for k, v in clean_facts.items() if k != "history"}
        with self._db.write() as conn:
            current = _fetch_run_row(conn, run_id)
            if current["status"] != "running":
                msg = (
                    f"run {run_id} already finished with status {current['status']!r}; "
                    "start a new run to record another execution"
                )
                raise ConflictError(msg, field="run_id")
            values["params"] = {**current["params"], **extra}
            values["summary"] = tracking_tables.summarize(clean_facts, current["summary"])
            duration = (values["ended_at"] - current["started_at"]).total_seconds()
            values["duration_seconds"] = max(duration, 0.0)
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))
            if edges:
                conn.execute(sa.insert(lineage), edges)
            tracking_tables.insert_facts(conn, run_id, fact_rows)
            return _load_runs(conn, [run_id])[0]

    def heartbeat(
        self, run_id: str, *, lease_seconds: float = leases.DEFAULT_LEASE_SECONDS
    ) -> bool:
        """Renew a running run's lease: it holds ``lease_seconds`` from now.

        :func:`~keel.store.leases.keep_alive` calls this every few seconds while a step runs;
        a run on another host whose lease lapsed is marked failed by :meth:`reap_dead_runs`.

        Returns:
            False when the run is no longer ``running`` (finished, or reaped as dead).
        """
        if isinstance(self._db.engine.pool, StaticPool):
            # One connection shared by every thread (in-memory SQLite): a heartbeat thread must
            # not use it, and no other process can see the run to judge it anyway.
            return True
        with self._db.write() as conn:
            return leases.renew(conn, run_id, lease_seconds)

    def running_runs(self) -> list[RunningRun]:
        """Every ``running`` run, oldest first, with the verdict on whether its owner lives."""
        with self._db.read() as conn:
            return leases.list_running(conn)

    def reap_dead_runs(
        self, *, reaper: str | None = None, include_unknown: bool = False
    ) -> list[ReapedRun]:
        """Mark failed the running runs whose owner died: its process is gone (same host) or
        its lease expired (another host). Opening a :class:`~keel.project.Project` does this.

        Args:
            reaper: Who is asking, for the error message; default this command and process.
            include_unknown: Also the runs whose owner cannot be checked from here (no owner
                recorded, or another host without a lease): ``keel doctor --fix``.

        Returns:
            The runs marked failed, with the error recorded on each.
        """
        dead = {"dead", "expired", "unknown"} if include_unknown else {"dead", "expired"}
        found = [run for run in self.running_runs() if run.liveness in dead]
        if not found:
            return []
        with self._db.write() as conn:
            return leases.mark_failed(conn, found, reaper=reaper or leases.reaper_name())

    def artifact_references(self) -> dict[str, str | None]:
        """Every sha256 the store refers to: recorded artifacts (with their kind), run inputs
        and outputs, and registered model packages (kind None when only referenced)."""
        found: dict[str, str | None] = {}
        with self._db.read() as conn:
            for sha in conn.scalars(sa.select(lineage.c.sha256).distinct()):
                found[sha] = None
            for sha in conn.scalars(sa.select(model_versions.c.package_sha256).distinct()):
                found[sha] = None
            for sha, kind in conn.execute(sa.select(artifacts.c.sha256, artifacts.c.kind)):
                found[sha] = kind
        return found

    def get_run(self, run_id: str) -> Run:
        """The run with this id or unique prefix (at least 6 hex digits), with its lineage.

        Raises:
            NotFoundError: Nothing, or more than one run, matches.
        """
        with self._db.read() as conn:
            full = _resolve_prefix(conn, runs.c.id, run_id, what="run", full=32)
            _fetch_run_row(conn, full)
            return _load_runs(conn, [full])[0]

    def find_cached_run(self, cache_key: str) -> Run | None:
        """The newest succeeded run with this cache key whose outputs are all recorded.

        Runs with status ``cached`` are never returned: they point at another run's outputs.
        """
        missing_output = (
            sa.select(lineage.c.sha256)
            .select_from(lineage.outerjoin(artifacts, artifacts.c.sha256 == lineage.c.sha256))
            .where(
                lineage.c.run_id == runs.c.id,
                lineage.c.direction == "output",
                artifacts.c.sha256.is_(None),
            )
        )
        query = (
            sa.select(runs.c.id)
            .where(
                runs.c.cache_key == cache_key,
                runs.c.status == "succeeded",
                ~sa.exists(missing_output),
            )
            .order_by(runs.c.started_at.desc())
            .limit(1)
        )
        with self._db.read() as conn:
            run_id = conn.scalar(query)
            return None if run_id is None else _load_runs(conn, [run_id])[0]

    def list_runs(self, step: str | None = None, limit: int = 50) -> list[Run]:
        """Runs newest first, optionally of one step, with their lineage."""
        query = sa.select(runs.c.id).order_by(runs.c.started_at.desc()).limit(limit)
        if step is not None:
            query = query.where(runs.c.step == step)
        with self._db.read() as conn:
            return _load_runs(conn, list(conn.scalars(query)))

    def search_runs(
        self,
        conditions: Sequence[Condition] = (),
        *,
        order: Sequence[Order] = (),
        limit: int = 100,
    ) -> list[TrackedRun]:
        """Runs matching every condition, sorted, with their params, metrics and tags.

        :func:`keel.tracking.parse_filter` and :func:`keel.tracking.parse_sort` build the
        conditions and the order from text like ``metrics.roc_auc > 0.9``. Sorting by a
        metric, param or tag lists only runs that have it (a metric that was not finite counts
        as absent). The default order is newest first.

        Raises:
            ConfigError: ``limit`` is not positive.
        """
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}", field="limit")
        with self._db.read() as conn:
            found = tracking_tables.search(conn, conditions, order, limit)
            return tracking_tables.load_details(conn, _with_edges(conn, found))

    def get_tracked_run(self, run_id: str) -> TrackedRun:
        """A run (id or unique prefix) with its facts, learning curves and environment.

        Raises:
            NotFoundError: Nothing, or more than one run, matches.
        """
        with self._db.read() as conn:
            full = _resolve_prefix(conn, runs.c.id, run_id, what="run", full=32)
            _fetch_run_row(conn, full)
            return tracking_tables.load_details(conn, _load_rows(conn, [full]), full=True)[0]

    def lineage(self, sha256: str) -> list[LineageEdge]:
        """Every edge touching an artifact: the runs that wrote it and the runs that read it."""
        sha = _check_sha(sha256, "sha256")
        query = (
            sa.select(lineage)
            .join(runs, runs.c.id == lineage.c.run_id)
            .where(lineage.c.sha256 == sha)
            .order_by(runs.c.started_at, lineage.c.direction.desc(), lineage.c.name)
        )
        with self._db.read() as conn:
            return [
                LineageEdge(row["run_id"], row["sha256"], row["direction"], row["name"])
                for row in conn.execute(query).mappings()
            ]


def _resolve_prefix(
    conn: sa.Connection, column: sa.Column[str], value: str, *, what: str, full: int
) -> str:
    """The one id in ``column`` that is ``value`` or starts with it."""
    key = value.strip().lower() if isinstance(value, str) else ""
    if not _MIN_PREFIX <= len(key) <= full or not _HEX.fullmatch(key):
        msg = (
            f"{what} id {value!r} is not valid: give the full {full}-hex-digit id or a prefix "
            f"of at least {_MIN_PREFIX} hex digits"
        )
        raise ConfigError(msg, field=what)
    if len(key) == full:
        return key
    found = list(conn.scalars(sa.select(column).where(column.startswith(key)).limit(3)))
    if not found:
        raise NotFoundError(f"no {what} id starts with {key!r}", field=what)
    if len(found) > 1:
        shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
        msg = f"{what} id prefix {key!r} is ambiguous (matches {shown}); give more digits"
        raise NotFoundError(msg, field=what)
    return found[0]


def _fetch_run_row(conn: sa.Connection, run_id: str) -> sa.RowMapping:
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
    if row is None:
        raise NotFoundError(f"no run with id {run_id!r}; `keel runs` lists them", field="run_id")
    return row


# Built once: an expanding IN parameter keeps the compiled statement cached, where an
# ``in_(list)`` would coerce every id on every call (a list of 100 runs paid ~2 ms for it).
_RUNS_BY_ID = sa.select(runs).where(runs.c.id.in_(sa.bindparam("ids", expanding=True)))
_EDGES_BY_RUN = (
    sa.select(
        lineage.c.run_id, lineage.c.direction, lineage.c.name, lineage.c.sha256, artifacts.c.kind
    )
    .select_from(lineage.outerjoin(artifacts, artifacts.c.sha256 == lineage.c.sha256))
    .where(lineage.c.run_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(lineage.c.name)
)


def _load_runs(conn: sa.Connection, run_ids: list[str]) -> list[Run]:
    """Runs in the order of ``run_ids``, with inputs and outputs from the lineage table."""
    return [run for run, _, _ in _load_rows(conn, run_ids)]


def _load_rows(
    conn: sa.Connection, run_ids: list[str]
) -> list[tuple[Run, sa.RowMapping, dict[str, str]]]:
    """Like ``_load_runs``, each run with its table row (for the tracking columns) and its
    input snapshots by name."""
    if not run_ids:
        return []
    rows = {row["id"]: row for row in conn.execute(_RUNS_BY_ID, {"ids": run_ids}).mappings().all()}
    return _with_edges(conn, [rows[run_id] for run_id in run_ids if run_id in rows])


def _with_edges(
    conn: sa.Connection, rows: Sequence[sa.RowMapping]
) -> list[tuple[Run, sa.RowMapping, dict[str, str]]]:
    """Runs from their table rows, in order, with their lineage and input snapshots."""
    if not rows:
        return []
    edges: dict[tuple[str, str], dict[str, str]] = {}
    snapshots: dict[str, dict[str, str]] = {}
    ids = [row["id"] for row in rows]
    for run_id, direction, name, sha, kind in conn.execute(_EDGES_BY_RUN, {"ids": ids}):
        edges.setdefault((run_id, direction), {})[name] = sha
        if direction == "input" and kind == "snapshot":
            snapshots.setdefault(run_id, {})[name] = sha
    return [(_run(row, edges), row, snapshots.get(row["id"], {})) for row in rows]


def _run(row: sa.RowMapping, edges: dict[tuple[str, str], dict[str, str]]) -> Run:
    return Run(
        id=row["id"],
        step=row["step"],
        status=row["status"],
        cache_key=row["cache_key"],
        config_hash=row["config_hash"],
        code_version=row["code_version"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        cpu_seconds=row["cpu_seconds"],
        peak_memory_mb=row["peak_memory_mb"],
        error=row["error"],
        params=dict(row["params"]),
        inputs=edges.get((row["id"], "input"), {}),
        outputs=edges.get((row["id"], "output"), {}),
    )


def _edges(run_id: str, named: Mapping[str, str], direction: str) -> list[dict[str, str]]:
    return [
        {
            "run_id": run_id,
            "direction": direction,
            "name": name,
            "sha256": _check_sha(sha, f"{direction} {name!r}"),
        }
        for name, sha in named.items()
    ]


def _artifact(row: sa.RowMapping) -> Artifact:
    return Artifact(
        kind=row["kind"],
        uri=row["uri"],
        sha256=row["sha256"],
        size=int(row["size"]),
        metadata=dict(row["metadata"]),
    )
