"""Optuna studies on disk: journal storage, samplers, pruners, budgets, interrupted trials,
and the ``tune/trial`` runs that record each trial.

Why the journal and not SQLite (Optuna's usual RDB storage)? SQLite serialises writers on one
database lock, so parallel worker processes that report intermediate values for pruning queue
behind each other and fail with ``database is locked`` under load, and every read is a query
over all trials. The journal is an append-only log of study operations guarded by a file lock
held only for the append; each process replays the log into memory, so reads are free and a
writer waits at most for another process's single append.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from keel.config import SearchConfig, SearchParam
from keel.train.search.objective import Objective, TrialOutcome, grid_of, parse_space

if TYPE_CHECKING:
    import optuna

    from keel.store.metadata import MetadataStore

__all__ = [
    "DEFAULT_TRIALS",
    "Budget",
    "TrialRecorder",
    "budget_for",
    "done_trials",
    "journal_storage",
    "open_study",
    "recover_interrupted",
    "study_key",
    "trial_facts",
]

DEFAULT_TRIALS = 20


def study_key(*parts: Any) -> str:
    """A short stable hash of what defines a study: space, model, data snapshot, features."""
    data = orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return hashlib.sha256(data).hexdigest()[:16]


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal storage on an append-only file (see the module docstring for why)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=_journal_lock(path)))


def _journal_lock(path: Path) -> Any:
    """The journal's append lock. Optuna's own locks are files created and deleted around each
    append: a process killed while holding one leaves it behind, and every later process waits
    out a 30 s grace period before breaking it. ``flock`` locks die with their process."""
    from optuna.storages.journal import JournalFileOpenLock

    try:
        import fcntl
    except ImportError:  # not POSIX: Optuna's open(O_EXCL) lock
        return JournalFileOpenLock(str(path))

    class FlockLock(JournalFileOpenLock):
        """An exclusive ``flock`` on ``<journal>.flock``, released by the kernel on exit."""

        def __init__(self, file: str) -> None:
            super().__init__(file)
            self._flock_path = f"{file}.flock"
            self._fd: int | None = None

        def acquire(self) -> bool:
            fd = os.open(self._flock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd
            return True

        def release(self) -> None:
            fd, self._fd = self._fd, None
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    return FlockLock(str(path))


def _sampler(config: SearchConfig, space: Mapping[str, SearchParam], seed: int) -> Any:
    import optuna

    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "grid":
        return _GridSampler(grid_of(space), seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: parallel workers do not all propose the point next to the best one
        return optuna.samplers.TPESampler(
            seed=seed, constant_liar=config.workers > 1, n_startup_trials=5
        )


def _grid_size(space: Mapping[str, SearchParam]) -> int:
    return math.prod(len(v) for v in grid_of(space).values()) if space else 1


def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its stop-the-study call, which only works inside
        ``study.optimize`` (we ask and tell, and cap the budget at the grid's size instead)."""

        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            return None

    return GridSampler


def _GridSampler(grid: dict[str, list[Any]], seed: int) -> Any:
    return _grid_sampler_class()(grid, seed=seed)


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=16)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=8, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(
    config: SearchConfig,
    objective: Objective,
    name: str,
    storage: optuna.storages.BaseStorage | None,
    *,
    worker: int = 0,
) -> optuna.Study:
    """Create or load the study ``name`` (in memory when ``storage`` is None)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(objective.space)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=_sampler(config, space, objective.seed + worker),
        pruner=_pruner(config.pruner),
        direction="maximize" if objective.direction == "maximize" else "minimize",
        load_if_exists=True,
    )


def recover_interrupted(study: optuna.Study, recorder: TrialRecorder | None = None) -> int:
    """Mark trials left running by a killed process as failed (their runs too) and queue
    their parameters again; returns how many interrupted trials the study has in all (for
    trial numbering). Call it before any worker of this search starts."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"rerun_of": trial.number})
        if recorder is not None and trial.user_attrs.get("run_id"):
            recorder.abandon(str(trial.user_attrs["run_id"]))
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return sum(1 for t in failed if t.user_attrs.get("interrupted"))


def done_trials(study: optuna.Study) -> int:
    """Trials that count towards the budget: complete, pruned, or failed by an error."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
    )


@dataclass
class Budget:
    """How many trials this invocation may run, until when."""

    trials: int | None
    deadline: float | None

    def exhausted(self, ran: int) -> bool:
        """True once the trial count or the wall time is spent."""
        return (self.trials is not None and ran >= self.trials) or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )

    def share(self, workers: int, index: int) -> int | None:
        """Worker ``index``'s share of the trials (all workers together run exactly ``trials``)."""
        if self.trials is None:
            return None
        return self.trials // workers + (1 if index < self.trials % workers else 0)


def budget_for(config: SearchConfig, done: int, space: Mapping[str, SearchParam]) -> Budget:
    """Trials still to run (the study's target minus what it has done) and the deadline."""
    target: int | None = config.trials
    if target is None and config.timeout_seconds is None:
        target = DEFAULT_TRIALS
    if config.sampler == "grid":
        size = _grid_size(space)
        target = size if target is None else min(target, size)
    deadline = None
    if config.timeout_seconds is not None:
        deadline = time.monotonic() + config.timeout_seconds
    return Budget(None if target is None else max(target - done, 0), deadline)


class TrialRecorder:
    """Records each trial as a ``tune/trial`` run in the metadata store.

    Args:
        metadata: The project's metadata store (or None to record nothing).
        study: The study key, recorded as a tag and in each run's cache key.
        parent_run: The ``tune`` step run the trials belong to.
    """

    def __init__(self, metadata: MetadataStore | None, study: str, parent_run: str = "") -> None:
        self.metadata = metadata
        self.study = study
        self.parent_run = parent_run

    def start(self, number: int, params: Mapping[str, Any]) -> str | None:
        """Open a run for trial ``number``; returns its id (None when not recording)."""
        if self.metadata is None:
            return None
        from keel.version import __version__

        run = self.metadata.start_run(
            "tune/trial",
            cache_key=f"trial:{self.study}:{number}",
            config_hash=self.study,
            code_version=f"keel-{__version__}",
            params={"study": self.study, "trial": number, "parent_run": self.parent_run},
        )
        return run.id

    def abandon(self, run_id: str) -> None:
        """Close the run of a trial whose process died (it stays ``running`` otherwise)."""
        if self.metadata is None:
            return
        from keel.errors import ConflictError, NotFoundError

        try:
            self.metadata.finish_run(
                run_id, status="failed", error="interrupted: the search process stopped"
            )
        except (ConflictError, NotFoundError):  # already closed, or recorded elsewhere
            return

    def finish(
        self, run_id: str | None, state: str, outcome: TrialOutcome | None, facts: dict[str, Any]
    ) -> None:
        """Close a trial's run with its facts (``params``, ``metrics``, ``history``, ``tags``)."""
        if self.metadata is None or run_id is None:
            return
        from keel.types import jsonable

        facts = jsonable(facts)
        status: Literal["failed", "succeeded"] = "failed" if state == "fail" else "succeeded"
        error = facts.get("error") if state == "fail" else None
        # stores with tracking keep params/metrics/history/tags queryable (and the rest as
        # params["facts"]); older ones take the facts as params
        tracked = "facts" in _finish_parameters(self.metadata)
        kwargs: dict[str, Any] = {"facts": facts} if tracked else {"params": {"facts": facts}}
        self.metadata.finish_run(run_id, status=status, error=error, **kwargs)


def _finish_parameters(metadata: MetadataStore) -> tuple[str, ...]:

    return tuple(inspect.signature(metadata.finish_run).parameters)


def trial_facts(
    objective: Objective,
    number: int,
    params: Mapping[str, Any],
    state: str,
    outcome: TrialOutcome | None,
    study: str,
) -> dict[str, Any]:
    """The tracking facts of one trial (interface: params, metrics, history, tags)."""
    from keel.train.base import scalar_params

    facts: dict[str, Any] = {
        "params": scalar_params({**objective.base_params, **params}),
        "tags": {
            "study": study,
            "trial": str(number),
            "state": state,
            "flavor": objective.flavor,
        },
    }
    if outcome is not None:
        metrics = {
            k: v for k, v in outcome.facts.get("metrics", {}).items() if isinstance(v, float)
        }
        facts["metrics"] = {objective.metric: outcome.value, **metrics}
        facts["history"] = outcome.history
        facts["best_iteration"] = outcome.best_iteration
        facts["seconds"] = round(outcome.seconds, 4)
    return facts
