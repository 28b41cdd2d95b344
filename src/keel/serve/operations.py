"""Operational counts of every served model, written to ``deployment_stats`` from a thread.

The server counts each predict and infer request in its :class:`~keel.serve.routing.Traffic`
(requests, 5xx errors, latency in the fixed log-spaced buckets), keyed by the model's active
deployment or, without one, by :func:`~keel.store.deployment_store.model_stats_key`: so
``keel monitor`` reports latency, error rate and throughput per version for every model, not
only for those under a canary. Requests the prediction log dropped (a full queue) are counted
here per model, version and role.

:class:`Operations` drains both every :data:`~keel.serve.routing.FLUSH_EVERY_S` seconds from one
daemon thread (one row per key, version and role that saw traffic: the table grows with traffic
intervals, never with requests), and once an hour deletes the served models' rows older than
``monitor.stats_retention_days`` and merges the rows of past hours into one per key, version,
role and hour (:func:`~keel.store.deployment_store.rollup_stats`): at most 24 rows a day per
version and role after the current hour. Rows under a deployment's id are not merged (a
canary's checks read them by flush time) but are deleted past retention too, except those an
active deployment's current interval still reads. Log drops are stored as rows whose role is
``drop:<role>`` and whose ``requests`` counts the dropped requests, under the model key only,
so the rollout controller (which reads deployment ids) never sees them. What became of a
shadow's copies (made, shed, dropped and why: :class:`~keel.serve.routing.Copies`) is stored
the same way, role by role (:data:`~keel.registry.deployments.COVERAGE_ROLES`), under
:func:`~keel.registry.deployments.coverage_key` (``c-<deployment id>``: neither the controller
nor ``keel monitor`` reads them as traffic), and merged by the hour and pruned as model keys are.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from keel.serve.routing import FLUSH_EVERY_S, Traffic

__all__ = ["DROP_ROLE", "Operations"]

log = logging.getLogger("keel.serve")
DROP_ROLE = "drop:"
"""Prefix of the role of the rows counting the prediction log's drops."""
PRUNE_EVERY_S = 3600.0


class Operations:
    """Per-version traffic and log drops of a server, flushed to the metadata database.

    Args:
        database: The project's metadata database; None: counted, never written.
        traffic: The server's counts (shared with the deployment controller, which drains it
            too when it runs: each drain writes what it took).
        served: The names of the models served now (their old rows are pruned).
        retention_days: Rows older than this are deleted.
        every: Seconds between flushes.
    """

    def __init__(
        self,
        database: Any,
        traffic: Traffic,
        served: Callable[[], Iterable[str]],
        *,
        retention_days: int = 30,
        every: float = FLUSH_EVERY_S,
    ) -> None:
        self.database = database
        self.traffic = traffic
        self.served = served
        self.retention = timedelta(days=retention_days)
        self.every = every
        self.server = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self._drops: dict[tuple[str, str, str], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned = -PRUNE_EVERY_S

    def key(self, name: str) -> str:
        """The stats key of a model outside deployments (cached)."""
        found = self._keys.get(name)
        if found is None:  # imported here: importing keel.serve.app must not pull SQLAlchemy
            from keel.store.deployment_store import model_stats_key

            found = self._keys[name] = model_stats_key(name)
        return found

    def dropped(self, name: str, version: str, role: str) -> None:
        """Count one request the prediction log dropped."""
        key = (self.key(name), version, DROP_ROLE + role)
        with self._lock:
            self._drops[key] = self._drops.get(key, 0) + 1

    def start(self) -> None:
        """Start the flushing thread (nothing without a database)."""
        if self.database is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keel-opstats", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread and write what is counted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
            self._write()

    def flush(self) -> int:
        """Write the counts since the last flush (and prune once an hour); rows written."""
        if self.database is None:
            return 0
        from keel.store.deployment_store import add_stats
        from keel.store.tables import utc_now

        with self._lock:
            drops, self._drops = self._drops, {}
        rows = self.traffic.drain()
        rows += [
            {"deployment_id": key, "version": version, "role": role, "requests": count,
             "errors": 0, "latency": {}, "compared": 0, "disagreed": 0, "rejected": 0}
            for (key, version, role), count in drops.items()
        ]  # fmt: skip
        now = utc_now()
        prune = now.timestamp() - self._pruned >= PRUNE_EVERY_S
        if not rows and not prune:
            return 0
        written = 0
        if rows:
            with self.database.write() as conn:
                stamped = [{**r, "server": self.server, "bucket": now} for r in rows]
                written = add_stats(conn, stamped)
        if prune:
            self._pruned = now.timestamp()
            self._maintain(now)
        return written

    def _maintain(self, now: datetime) -> None:
        """Delete the served models' rows past retention; merge older hours into one row each."""
        from keel.errors import ConflictError
        from keel.store.deployment_store import (
            prune_deployment_stats,
            prune_stats,
            rollup_stats,
        )

        names = list(self.served())
        keys = [self.key(name) for name in names]
        if not keys:
            return
        hour = now.replace(minute=0, second=0, microsecond=0)
        try:
            with self.database.write() as conn:
                keys += _copy_keys(conn, names)  # shadows' copy counts: no controller reads them
                prune_stats(conn, keys, now - self.retention)
                prune_deployment_stats(conn, names, now - self.retention)
                rollup_stats(conn, keys, hour)
        except ConflictError:  # another server of the project did it meanwhile
            return

    def _write(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # a database hiccup loses one interval's counts, never serving
            log.warning("could not write the traffic counts: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._write()


def _copy_keys(conn: Any, names: Iterable[str]) -> list[str]:
    """The keys of the rows counting the copies of the shadow deployments of ``names``."""
    from keel.registry.deployments import coverage_key
    from keel.store.deployment_store import list_deployments

    return [
        coverage_key(d["id"])
        for name in names
        for d in list_deployments(conn, name=name, limit=100_000)
        if d["kind"] == "shadow"
    ]
