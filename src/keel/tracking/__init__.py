"""Experiment tracking: query, show and compare recorded runs.

Runs are recorded by the pipeline (and by search trials) in the metadata store; a run's
``facts["params"]``, ``["metrics"]``, ``["history"]`` and ``["tags"]`` are stored in narrow,
indexed tables (see ``keel.store.tracking_tables``), with the environment, duration, CPU seconds
and peak memory of every run. This package is the query layer over them:

>>> from keel.tracking import find_runs
>>> find_runs(store, 'metrics.roc_auc > 0.9 and step = "train"', sort="metrics.roc_auc desc")
"""

from __future__ import annotations

from keel.store.environment import capture_environment
from keel.store.tracking_tables import Condition, Order, TrackedRun
from keel.tracking.compare import compare_runs, compare_tracked
from keel.tracking.filter import FILTER_HELP, SORT_HELP, parse_filter, parse_sort
from keel.tracking.records import find_runs, history_summary, run_record, show_run

__all__ = [
    "FILTER_HELP",
    "SORT_HELP",
    "Condition",
    "Order",
    "TrackedRun",
    "capture_environment",
    "compare_runs",
    "compare_tracked",
    "find_runs",
    "history_summary",
    "parse_filter",
    "parse_sort",
    "run_record",
    "show_run",
]
