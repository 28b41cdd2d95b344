"""Tracked runs as plain data: what ``keel runs list/show`` print and ``keel.runs()`` returns."""

from __future__ import annotations

from typing import Any

from keel.store.metadata import MetadataStore
from keel.store.tracking_tables import TrackedRun
from keel.tracking.filter import parse_filter, parse_sort

__all__ = ["find_runs", "history_summary", "run_record", "show_run"]


def find_runs(
    store: MetadataStore,
    filter: str | None = None,
    *,
    sort: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Runs matching a filter expression, sorted, as plain dicts (see :func:`run_record`).

    Args:
        store: The metadata store.
        filter: E.g. ``metrics.roc_auc > 0.9 and step = "train"`` (see ``keel.tracking.filter``).
        sort: E.g. ``metrics.roc_auc desc``; default newest first.
        limit: At most this many runs.

    Raises:
        ConfigError: A malformed filter or sort, or a limit below 1.
    """
    found = store.search_runs(parse_filter(filter), order=parse_sort(sort), limit=limit)
    return [run_record(tracked) for tracked in found]


def show_run(store: MetadataStore, ref: str) -> dict[str, Any]:
    """One run in full: facts, learning-curve summary and curves, environment, lineage.

    ``lineage`` lists, per input, the run that wrote it (``from_run``) and, per output, the
    runs that read it (``read_by``).

    Raises:
        NotFoundError: No run, or more than one, matches ``ref``.
        ConfigError: ``ref`` is not a hex id or prefix of at least 6 digits.
    """
    tracked = store.get_tracked_run(ref)
    record = run_record(tracked)
    curves = tracked.history or {}
    record["history"] = {name: history_summary(values) for name, values in curves.items()}
    record["curves"] = curves
    record["environment"] = tracked.environment
    record["lineage"] = _lineage(store, tracked)
    return record


def run_record(tracked: TrackedRun) -> dict[str, Any]:
    """The run's fields, params, metrics, tags, snapshots, inputs, outputs and warnings as
    JSON-able data."""
    run = tracked.run
    return {
        "id": run.id,
        "step": run.step,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "duration_seconds": tracked.duration_seconds,
        "cpu_seconds": run.cpu_seconds,
        "peak_memory_mb": run.peak_memory_mb,
        "error": run.error,
        "code_version": run.code_version,
        "cache_key": run.cache_key,
        "config_hash": run.config_hash,
        "reused_run": run.params.get("reused_run"),
        "params": tracked.params,
        "metrics": tracked.metrics,
        "tags": tracked.tags,
        "snapshots": tracked.snapshots,
        "inputs": run.inputs,
        "outputs": run.outputs,
        # what the step said with ctx.warn (a cached run repeats the reused run's)
        "warnings": [str(w) for w in run.params.get("warnings", [])],
    }


def history_summary(values: list[float | None]) -> dict[str, Any]:
    """Iterations, first, last, min and max (with their 1-based iterations) of one curve."""
    finite = [(i, v) for i, v in enumerate(values, start=1) if v is not None]
    if not finite:
        return {"iterations": len(values), "first": None, "last": None, "min": None, "max": None}
    low = min(finite, key=lambda item: item[1])
    high = max(finite, key=lambda item: item[1])
    return {
        "iterations": len(values),
        "first": finite[0][1],
        "last": finite[-1][1],
        "min": low[1],
        "min_iteration": low[0],
        "max": high[1],
        "max_iteration": high[0],
    }


def _lineage(store: MetadataStore, tracked: TrackedRun) -> dict[str, Any]:
    run = tracked.run
    upstream = {}
    for name, sha in run.inputs.items():
        writers = [e.run_id for e in store.lineage(sha) if e.direction == "output"]
        upstream[name] = {"sha256": sha, "from_run": writers[0] if writers else None}
    downstream = {}
    for name, sha in run.outputs.items():
        readers = [e.run_id for e in store.lineage(sha) if e.direction == "input"]
        downstream[name] = {"sha256": sha, "read_by": readers}
    return {"inputs": upstream, "outputs": downstream}
