"""Hyper-parameter search (Optuna), AutoML across model families, and trials on Ray.

``search:`` in keel.yaml (or ``model.flavor: auto``) adds a ``tune`` step before ``train``; it
writes the ``best_params`` artifact the ``train`` step trains with. See :mod:`.tune` for the
search loop, :mod:`.study` for persistent, resumable studies, :mod:`.automl` for AutoML and
:mod:`.distributed` for Ray.
"""

from __future__ import annotations

from keel.train.search.objective import Objective, TrialData, TrialOutcome, score_metric
from keel.train.search.tune import SearchResult, run_search

__all__ = ["Objective", "SearchResult", "TrialData", "TrialOutcome", "run_search", "score_metric"]
