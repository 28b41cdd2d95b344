"""Operational health per monitoring window: traffic, errors, latency, log drops and SLOs.

Every server counts each predict and infer request of every model it serves per version and
role (requests, errors: 5xx answers and model failures, never 4xx client mistakes; latency in
the fixed log-spaced buckets of :data:`~keel.registry.deployments.LATENCY_EDGES_MS`) and the
requests its prediction log dropped, and writes them to ``deployment_stats`` every few seconds
(:mod:`keel.serve.operations`). :func:`add_operations` reads a model's rows (outside and under
its deployments) once and gives each window of a ``keel monitor`` report:

- ``latency``: the selection's figures merged over every server, version and role that answered
  clients (shadow copies only when ``--role shadow`` asks): ``requests``, ``errors``,
  ``error_rate``, ``throughput_rps``, ``p50_ms`` ... ``p99_ms``, ``mean_ms``, ``max_ms``,
  ``log_dropped`` (what ``latency.p99_ms > 50`` alert rules read);
- ``operations``: the same figures per version and role;
- ``slo``: each objective of ``monitor.slo`` met or breached (``no_data`` without traffic).

Percentiles are read off merged bucket counts: the upper edge of the bucket holding the rank,
an upper bound within 30 % of the true value; ``mean_ms`` uses each bucket's geometric middle.
A row is stamped with its flush time, so a window's edges are smeared by the flush interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.registry.deployments import LATENCY_EDGES_MS

if TYPE_CHECKING:
    from keel.config.monitor import SloConfig
    from keel.store.database import Database

__all__ = ["Traffic", "TrafficRows", "add_operations", "judge_slo", "read_traffic"]

TrafficRows = Callable[[str, datetime | None, datetime | None], list[dict[str, Any]]]
"""A reader of model ``name``'s stored traffic rows with ``since < bucket <= until``, oldest
first (:func:`keel.store.deployment_store.stats_of`'s rows), e.g.
:meth:`keel.monitor.quickdb.QuickReads.traffic_rows`."""

_BUCKETS = len(LATENCY_EDGES_MS) + 1
_UPPER = np.asarray([*LATENCY_EDGES_MS, LATENCY_EDGES_MS[-1]])
_MIDDLE = _UPPER / np.sqrt(1.3)
_DROP = "drop:"  # rows counting the prediction log's drops (keel.serve.operations.DROP_ROLE)
_FLUSH_SLACK_S = 6.0  # a request is stamped with the flush after it: at most ~5 s later
_QUANTILES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p95_ms", 95.0), ("p99_ms", 99.0))


@dataclass(frozen=True)
class Traffic:
    """A model's stored traffic rows as arrays (one entry per stored row).

    Attributes:
        at: Each row's flush time (seconds since the epoch).
        version: Each row's model version.
        role: Each row's role (``drop:<role>`` rows count log drops in ``requests``).
        requests: Requests counted (or dropped).
        errors: Of them answered 5xx.
        latency: Counts per latency bucket, shape ``(rows, buckets)``.
    """

    at: np.ndarray
    version: np.ndarray
    role: np.ndarray
    requests: np.ndarray
    errors: np.ndarray
    latency: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.at.size)

    def within(self, low: float | None, high: float | None) -> np.ndarray:
        """Rows stamped in ``(low, high]`` (None: unbounded)."""
        keep = np.ones(self.rows, dtype=bool)
        if low is not None:
            keep &= self.at > low
        if high is not None:
            keep &= self.at <= high
        return keep


def read_traffic(
    database: Database | TrafficRows,
    name: str,
    *,
    version: str | None = None,
    role: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Traffic:
    """The stored traffic rows of model ``name`` (optionally one version and role, a range),
    from the metadata database or a reader of its rows."""
    low = None if since is None else datetime.fromtimestamp(since - _FLUSH_SLACK_S, UTC)
    high = None if until is None else datetime.fromtimestamp(until + _FLUSH_SLACK_S, UTC)
    found = database(name, low, high) if callable(database) else _stored(database, name, low, high)
    if version is not None:
        found = [r for r in found if r["version"] == version]
    if role is not None:
        found = [r for r in found if r["role"] in (role, _DROP + role)]
    latency = np.zeros((len(found), _BUCKETS), dtype=np.int64)
    for index, row in enumerate(found):  # one stored row per flush and version, not per request
        for bucket, count in (row["latency"] or {}).items():
            latency[index, min(int(bucket), _BUCKETS - 1)] += int(count)
    return Traffic(
        at=np.asarray([_seconds(r["bucket"]) for r in found], dtype=np.float64),
        version=np.asarray([str(r["version"]) for r in found], dtype=object),
        role=np.asarray([str(r["role"]) for r in found], dtype=object),
        requests=np.asarray([int(r["requests"]) for r in found], dtype=np.int64),
        errors=np.asarray([int(r["errors"]) for r in found], dtype=np.int64),
        latency=latency,
    )


def _stored(
    database: Database, name: str, low: datetime | None, high: datetime | None
) -> list[dict[str, Any]]:
    from keel.store import deployment_store as ds

    with database.read() as conn:
        keys = [ds.model_stats_key(name)]
        keys += [d["id"] for d in ds.list_deployments(conn, name=name, limit=100_000)]
        return ds.stats_of(conn, keys, low, high)


def _seconds(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def figures(traffic: Traffic, keep: np.ndarray, seconds: float | None) -> dict[str, Any] | None:
    """Requests, errors, throughput, latency percentiles and log drops of the kept rows; None
    when they hold no request."""
    drops = np.asarray([str(r).startswith(_DROP) for r in traffic.role], dtype=bool)
    served = keep & ~drops
    requests = int(traffic.requests[served].sum())
    dropped = int(traffic.requests[keep & drops].sum())
    if requests == 0:
        return None
    errors = int(traffic.errors[served].sum())
    counts = traffic.latency[served].sum(axis=0)
    total = int(counts.sum())
    answer: dict[str, Any] = {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests,
        "throughput_rps": None if not seconds else requests / seconds,
        "log_dropped": dropped,
    }
    cumulative = np.cumsum(counts)
    for key, q in _QUANTILES:
        rank = max(1, int(np.ceil(total * q / 100.0)))
        answer[key] = float(_UPPER[int(np.searchsorted(cumulative, rank))]) if total else None
    answer["mean_ms"] = float((counts * _MIDDLE).sum() / total) if total else None
    answer["max_ms"] = float(_UPPER[int(np.flatnonzero(counts)[-1])]) if total else None
    return answer


def by_version(traffic: Traffic, keep: np.ndarray, seconds: float | None) -> list[dict[str, Any]]:
    """:func:`figures` per version and role (log drops beside their role's traffic)."""
    plain = np.asarray([str(r).removeprefix(_DROP) for r in traffic.role], dtype=object)
    out = []
    pairs = sorted({(str(v), str(r)) for v, r in zip(traffic.version[keep], plain[keep],
                                                     strict=True)})  # fmt: skip
    for version, role in pairs:
        found = figures(traffic, keep & (traffic.version == version) & (plain == role), seconds)
        if found is None:  # only drops: the requests were counted by another flush
            found = {"requests": 0, "log_dropped": _dropped(traffic, keep, version, role)}
        out.append({"version": version, "role": role, **found})
    return out


def _dropped(traffic: Traffic, keep: np.ndarray, version: str, role: str) -> int:
    rows = keep & (traffic.version == version) & (traffic.role == _DROP + role)
    return int(traffic.requests[rows].sum())


def judge_slo(slo: SloConfig, latency: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Each objective's target, value and ``met``/``breached``/``no_data``; None: no SLO."""
    targets = slo.targets()
    if not targets:
        return None
    objectives: dict[str, dict[str, Any]] = {}
    for key, target in targets.items():
        value = None if latency is None else latency.get(key)
        status = "no_data" if value is None else ("met" if value <= target else "breached")
        objectives[key] = {"target": target, "value": value, "status": status}
    statuses = {o["status"] for o in objectives.values()}
    overall = "breached" if "breached" in statuses else "met" if statuses == {"met"} else "no_data"
    return {"status": overall, "objectives": objectives}


def add_operations(
    report: dict[str, Any],
    database: Database | TrafficRows,
    slo: SloConfig,
    *,
    window_kind: str,
    window_size: int,
    version: str | None = None,
    role: str | None = None,
    since: float | None = None,
    until: float | None = None,
    now: float | None = None,
    served: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """``report`` (a :func:`keel.monitor.check.check_model` answer) with ``latency``,
    ``operations`` and ``slo`` in each window and for the whole selection.

    Args:
        report: The report to fill in (changed in place and returned).
        database: The project's metadata database, or a reader of its traffic rows.
        slo: keel.yaml's ``monitor.slo``.
        window_kind: ``time``, ``rows`` or ``all`` (the report's windows).
        window_size: A time window's seconds.
        version: Read this version's traffic (None: every version).
        role: Read this role's traffic (None: every role; shadow copies stay out of ``latency``).
        since: Requests at or after this time (seconds since the epoch).
        until: Requests before this time.
        now: The current time (an open time window's throughput counts until now).
        served: The first and last logged request of the selection: the whole selection's
            throughput is over their span when the report has no windows (else the flush
            times, seconds apart, would stretch a burst of requests over them).
    """
    now = now if now is not None else datetime.now(UTC).timestamp()
    traffic = read_traffic(
        database, report["model"], version=version, role=role, since=since, until=until
    )
    answered = np.asarray(
        [role == "shadow" or str(r).removeprefix(_DROP) != "shadow" for r in traffic.role],
        dtype=bool,
    )
    windows: Sequence[dict[str, Any]] = report.get("windows") or []
    for window in windows:
        low, high, seconds = _span(window, window_kind, window_size, now)
        keep = traffic.within(low, high)
        _fill(window, traffic, keep, answered, seconds, slo)
    whole = traffic.within(None, None)
    firsts = [w["first_request"] for w in windows if w.get("first_request") is not None]
    lasts = [w["last_request"] for w in windows if w.get("last_request") is not None]
    if not firsts and served[0] is not None and served[1] is not None:
        firsts, lasts = [served[0]], [served[1]]
    if firsts:
        seconds = max(1.0, max(lasts) - min(firsts))
    elif traffic.rows:
        seconds = max(1.0, float(traffic.at.max() - traffic.at.min()) + _FLUSH_SLACK_S - 1.0)
    else:
        seconds = None
    _fill(report, traffic, whole, answered, seconds, slo)
    return report


def _fill(
    target: dict[str, Any],
    traffic: Traffic,
    keep: np.ndarray,
    answered: np.ndarray,
    seconds: float | None,
    slo: SloConfig,
) -> None:
    latency = figures(traffic, keep & answered, seconds)
    target["latency"] = latency
    target["operations"] = by_version(traffic, keep, seconds)
    target["slo"] = judge_slo(slo, latency)


def _span(
    window: Mapping[str, Any], kind: str, size: int, now: float
) -> tuple[float | None, float | None, float | None]:
    """A window's flush-time range and its length in seconds (for throughput)."""
    if kind == "time" and window.get("start"):
        start = datetime.fromisoformat(str(window["start"]).replace("Z", "+00:00")).timestamp()
        end = start + size
        return start, end, max(1.0, min(end, now) - start)
    first, last = window.get("first_request"), window.get("last_request")
    if first is None or last is None:
        return None, None, None
    return float(first) - 1.0, float(last) + _FLUSH_SLACK_S, max(1.0, float(last) - float(first))
