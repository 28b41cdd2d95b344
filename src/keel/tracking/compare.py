"""Runs side by side: params, metrics, data and environment, with the differences marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.errors import ConfigError
from keel.store.metadata import MetadataStore
from keel.store.tracking_tables import TrackedRun

__all__ = ["compare_runs", "compare_tracked"]

_MAX_RUNS = 20


def compare_runs(store: MetadataStore, refs: Sequence[str]) -> dict[str, Any]:
    """Compare runs given by id or unique prefix; see :func:`compare_tracked`.

    Raises:
        ConfigError: Fewer than two or more than 20 runs, or a malformed id.
        NotFoundError: A run id matches nothing (or more than one run).
    """
    if not 2 <= len(refs) <= _MAX_RUNS:
        msg = f"compare needs 2 to {_MAX_RUNS} runs, got {len(refs)}: give run ids or prefixes"
        raise ConfigError(msg, field="runs")
    return compare_tracked([store.get_tracked_run(ref) for ref in refs])


def compare_tracked(runs: Sequence[TrackedRun]) -> dict[str, Any]:
    """Side-by-side rows for a few tracked runs.

    Returns:
        ``{"runs": [id, ...], "run": [rows], "params": [rows], "metrics": [rows],
        "data": [rows], "environment": [rows]}`` where a row is ``{"name", "values": [one per
        run, None when absent], "differs": bool}``; rows are sorted by name within a section.
    """
    envs = [t.environment or {} for t in runs]
    attributes: dict[str, list[Any]] = {
        "step": [t.run.step for t in runs],
        "status": [t.run.status for t in runs],
        "duration_seconds": [t.duration_seconds for t in runs],
        "cpu_seconds": [t.run.cpu_seconds for t in runs],
        "peak_memory_mb": [t.run.peak_memory_mb for t in runs],
        "code_version": [t.run.code_version for t in runs],
        "config_hash": [t.run.config_hash for t in runs],
    }
    environment = {
        "git_commit": [(env.get("git") or {}).get("commit") for env in envs],
        "python": [env.get("python") for env in envs],
        "platform": [env.get("platform") for env in envs],
        **{
            f"packages.{name}": [env.get("packages", {}).get(name) for env in envs]
            for name in sorted({n for env in envs for n in env.get("packages", {})})
        },
    }
    return {
        "runs": [t.run.id for t in runs],
        "run": _rows(attributes, sort=False),
        "params": _rows(_union([t.params for t in runs])),
        "metrics": _rows(_union([t.metrics for t in runs])),
        "data": _rows(_union([t.snapshots for t in runs])),
        "environment": _rows(environment, sort=False),
    }


def _union(dicts: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = sorted({name for d in dicts for name in d})
    return {name: [d.get(name) for d in dicts] for name in names}


def _rows(table: dict[str, list[Any]], *, sort: bool = True) -> list[dict[str, Any]]:
    names = sorted(table) if sort else list(table)
    return [
        {"name": name, "values": table[name], "differs": len({repr(v) for v in table[name]}) > 1}
        for name in names
    ]
