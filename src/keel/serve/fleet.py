"""The numbers of a fleet of workers (``keel serve --workers N``) as those of one server.

Each worker counts in its own process, so without help a Prometheus scrape of the shared port
would see whichever worker accepted it. Here each worker publishes a snapshot of its own
metrics to a file in the server's directory (``.keel/run/serve-<supervisor pid>/worker-<i>.json``,
written to a temporary file and renamed, so a reader never sees half of one) from a daemon
thread, once a second and at shutdown: never on the request path. ``/metrics`` collects its own
live metrics and adds its peers' snapshots (:class:`FleetRegistry`):

- counters add up; histograms add bucket by bucket (and their counts and sums);
- ``*_created`` timestamps take the earliest;
- gauges (in-flight predictions) are not added: each worker's value is exported with a
  ``worker`` label.

A peer's numbers are at most :data:`PUBLISH_EVERY_S` (plus a write) old; the answering
worker's own are live. When a worker dies the supervisor adds its last snapshot's counters to
``retired.json`` and deletes its file (:func:`retire`), so the fleet's counters never go down
when a worker is replaced; a worker killed with SIGKILL loses at most its last second of counts.
The supervisor removes the directory when it stops, and stale directories of supervisors that
are gone when the next one starts (:func:`prepare`).

Per-token rate limits hold for the server, not per worker: each of N workers enforces
``1/N`` of a token's rate with a bucket of ``1/N`` of its burst (:func:`join_fleet` sets
:attr:`keel.serve.auth.Authenticator.share`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

__all__ = [
    "FLEET_ENV",
    "PUBLISH_EVERY_S",
    "WORKERS_ENV",
    "Fleet",
    "FleetRegistry",
    "join_fleet",
    "merge",
    "prepare",
    "retire",
]

log = logging.getLogger("keel.serve")

FLEET_ENV = "KEEL_FLEET_DIR"
"""Environment variable naming the directory a worker publishes its snapshot to."""
WORKERS_ENV = "KEEL_WORKERS"
"""Environment variable saying how many workers share the port."""
PUBLISH_EVERY_S = 1.0
"""Seconds between a worker's snapshots: the most a peer's numbers lag in ``/metrics``."""
RETIRED = "retired.json"
_SUMMED = frozenset({"counter", "histogram", "summary"})

Family = dict[str, Any]
"""A metric family as stored: ``{"name", "type", "help", "samples": [[name, labels, value]]}``."""


def snapshot(metrics: Iterable[Metric]) -> list[Family]:
    """Metric families as JSON-ready values."""
    return [
        {
            "name": m.name,
            "type": m.type,
            "help": m.documentation,
            "samples": [[s.name, dict(s.labels), float(s.value)] for s in m.samples],
        }
        for m in metrics
    ]


def _write(path: Path, families: list[Family]) -> None:
    """Replace ``path`` atomically (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), "families": families}))
    os.replace(temporary, path)


def _read(path: Path) -> list[Family]:
    """The families of a snapshot; none when it is gone or unreadable (a worker replaced)."""
    try:
        families = json.loads(path.read_text())["families"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return families if isinstance(families, list) else []


def merge(parts: Iterable[tuple[str | None, Iterable[Family]]]) -> list[Metric]:
    """Families of several workers as one server's.

    Args:
        parts: (worker label, families) pairs; counters and histograms add up, gauges keep
            one sample per worker labelled ``worker``; a label of None (the retired workers'
            counts) contributes no gauges.
    """
    merged: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for worker, families in parts:
        for family in families:
            name, kind = str(family["name"]), str(family["type"])
            _, _, values = merged.setdefault(name, (kind, str(family["help"]), {}))
            summed = kind in _SUMMED
            if not summed and worker is None:
                continue
            for sample_name, labels, value in family["samples"]:
                labels = dict(labels) if summed else {**labels, "worker": worker}
                key = (str(sample_name), tuple(sorted(labels.items())))
                if key not in values or not summed:
                    values[key] = float(value)
                elif str(sample_name).endswith("_created"):
                    values[key] = min(values[key], float(value))
                else:
                    values[key] += float(value)
    answer = []
    for name, (kind, help_text, values) in merged.items():
        metric = Metric(name, help_text, kind)
        for (sample_name, labels), value in values.items():
            metric.add_sample(sample_name, dict(labels), value)
        answer.append(metric)
    return answer


class Fleet:
    """One worker's part in its fleet: publishes its snapshot, reads its peers'.

    Args:
        directory: The server's directory (shared by its workers).
        index: This worker's index.
        own: This worker's own metric families (never the merged ones).
        every: Seconds between snapshots.
    """

    def __init__(
        self,
        directory: Path,
        index: int,
        own: Callable[[], Iterable[Metric]],
        *,
        every: float = PUBLISH_EVERY_S,
    ) -> None:
        self.directory = directory
        self.index = index
        self.own = own
        self.every = every
        self.path = directory / f"worker-{index}.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: list[Family] | None = None
        self._failing = False

    def publish(self) -> None:
        """Write this worker's snapshot now (not when it is the one written last: idle)."""
        families = snapshot(self.own())
        if families != self._written or not self.path.exists():
            _write(self.path, families)
            self._written = families

    def start(self) -> None:
        """Publish once a second from a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keel-fleet", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop publishing, after a last snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._publish()

    def collect(self, own: list[Metric]) -> list[Metric]:
        """``own`` (live) with the peers' and the retired workers' snapshots added."""
        parts: list[tuple[str | None, Iterable[Family]]] = [(str(self.index), snapshot(own))]
        try:
            peers = sorted(self.directory.glob("worker-*.json"))
        except OSError:
            peers = []
        for path in peers:
            if path != self.path:
                parts.append((path.stem.removeprefix("worker-"), _read(path)))
        parts.append((None, _read(self.directory / RETIRED)))
        return merge(parts)

    def _publish(self) -> None:
        try:
            self.publish()
        except OSError as exc:  # a full disk costs the fleet view, never serving
            if not self._failing:  # once per outage, not once a second
                log.warning("could not publish this worker's metrics to %s: %s", self.path, exc)
            self._failing = True
        else:
            self._failing = False

    def _run(self) -> None:
        self._publish()
        while not self._stop.wait(self.every):
            self._publish()


class FleetRegistry(CollectorRegistry):
    """A collector registry that, once a worker joined a fleet, collects the fleet's numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.fleet: Fleet | None = None

    def collect(self) -> Iterator[Metric]:
        fleet = self.fleet
        if fleet is None:
            yield from super().collect()
            return
        yield from fleet.collect(list(super().collect()))

    def collect_own(self) -> Iterator[Metric]:
        """This process's metrics only (what a worker publishes)."""
        yield from super().collect()


def join_fleet(app: Any, index: int) -> Fleet | None:
    """Make the server ``app`` (a :class:`~keel.serve.app.ServerApp`) one worker of the fleet
    the supervisor started (``KEEL_FLEET_DIR``, ``KEEL_WORKERS``); None outside one.

    ``/metrics`` then reports the fleet's numbers and each token's rate limit is shared
    among the workers. The caller closes the answer at shutdown (a last snapshot).
    """
    from keel.settings import load_settings

    settings = load_settings()
    directory = settings.fleet_dir
    workers = int(settings.workers or "1")
    for auth in {id(a): a for a in (app.auth, app.change_auth) if a}.values():
        auth.share = max(1, workers)
    registry = app.metrics.registry
    if not directory or not isinstance(registry, FleetRegistry):
        return None
    fleet = Fleet(Path(directory), index, registry.collect_own)
    registry.fleet = fleet
    fleet.start()
    return fleet


def prepare(run_dir: Path, pid: int | None = None) -> Path:
    """The directory of the server supervised by ``pid`` (default: this process) under
    ``run_dir``, created empty; directories of supervisors that are gone are removed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob("serve-*"):
        owner = stale.name.removeprefix("serve-")
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = run_dir / f"serve-{pid or os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def retire(directory: Path, index: int) -> None:
    """Fold dead worker ``index``'s counters into the retired totals and delete its snapshot."""
    path = directory / f"worker-{index}.json"
    gone = _read(path)
    if gone:
        retired = directory / RETIRED
        totals = merge([(None, _read(retired)), (None, gone)])
        _write(retired, snapshot(totals))
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
