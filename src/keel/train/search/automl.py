"""AutoML (``model.flavor: auto``): LightGBM, XGBoost, linear, random forest and an MLP compete
under one wall-time budget (``automl.time_budget_seconds``).

The budget is spent in two rounds, successive-halving style:

1. every family trains its default configuration once (a strong baseline for each, and a
   measure of how long one of its fits takes);
2. the rest of the budget goes to the best three families, 60 / 25 / 15 %, each running its own
   TPE study (seeded with the baseline) for its share of the time, with median pruning.

A trial that is still running when its share ends is pruned at its next iteration. The
leaderboard (best validation score per family) is printed and stored; the best family and
parameters become ``best_params``. Families whose extra is not installed are listed as skipped.

With ``executor: ray`` (or ``KEEL_EXECUTOR=ray``) every trial is a Ray task with ``resources:``:
the baselines of round 1 run side by side, ``workers`` at a time (``search.workers``, else as
many as the cluster's CPUs hold), and each family's search in round 2 runs ``workers`` trials at
once. A Ray trial cannot be pruned while it runs (see :mod:`keel.train.search.distributed`): one
still running when its share ends is cancelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from keel.config import KeelConfig, ResourcesConfig, SearchConfig
from keel.errors import ConfigError, KeelError
from keel.train.base import check_task
from keel.train.search.objective import (
    Objective,
    TrialData,
    check_metric,
    decode_params,
    default_metric,
)
from keel.train.search.study import Budget, TrialRecorder, open_study

if TYPE_CHECKING:
    from rich.console import Console

    from keel.store.metadata import MetadataStore

__all__ = ["FAMILIES", "Leaderboard", "family_objective", "run_automl"]

_SHARES = (0.60, 0.25, 0.15)
_BASELINE_SHARE = 0.45  # round 1 stops starting baselines once this much of the budget is gone


def _space(**params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return params


def _lightgbm(task: str) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    base = {
        "n_estimators": 2000,
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_child_samples": 20,
        "colsample_bytree": 0.8,
        "subsample": 1.0,
        "subsample_freq": 1,
        "reg_lambda": 1e-3,
    }
    space = _space(
        learning_rate={"type": "float", "low": 0.01, "high": 0.2, "log": True},
        num_leaves={"type": "int", "low": 8, "high": 128, "log": True},
        min_child_samples={"type": "int", "low": 5, "high": 100, "log": True},
        colsample_bytree={"type": "float", "low": 0.3, "high": 1.0},
        subsample={"type": "float", "low": 0.5, "high": 1.0},
        reg_lambda={"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    )
    return "lightgbm", base, space


def _xgboost(task: str) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    base = {
        "n_estimators": 2000,
        "learning_rate": 0.1,
        "max_depth": 6,
        "min_child_weight": 1.0,
        "subsample": 1.0,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
    }
    space = _space(
        learning_rate={"type": "float", "low": 0.01, "high": 0.2, "log": True},
        max_depth={"type": "int", "low": 3, "high": 10},
        min_child_weight={"type": "float", "low": 0.5, "high": 20.0, "log": True},
        subsample={"type": "float", "low": 0.5, "high": 1.0},
        colsample_bytree={"type": "float", "low": 0.3, "high": 1.0},
        reg_lambda={"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    )
    return "xgboost", base, space


def _linear(task: str) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    if task == "regression":
        base = {"estimator": "sklearn.linear_model.Ridge", "alpha": 1.0}
        return (
            "sklearn",
            base,
            _space(alpha={"type": "float", "low": 1e-3, "high": 100.0, "log": True}),
        )
    base = {"estimator": "sklearn.linear_model.LogisticRegression", "C": 1.0, "max_iter": 500}
    return "sklearn", base, _space(C={"type": "float", "low": 1e-3, "high": 100.0, "log": True})


def _random_forest(task: str) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    kind = "Regressor" if task == "regression" else "Classifier"
    base = {
        "estimator": f"sklearn.ensemble.RandomForest{kind}",
        "n_estimators": 100,
        "min_samples_leaf": 2,
        "max_features": 0.3,
        "max_depth": None,
        "n_jobs": -1,
    }
    space = _space(
        min_samples_leaf={"type": "int", "low": 1, "high": 20, "log": True},
        max_features={"type": "float", "low": 0.1, "high": 0.7},
        max_depth={"type": "categorical", "choices": [None, 8, 16, 32]},
    )
    return "sklearn", base, space


def _mlp(task: str) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    base = {
        "hidden": [64, 32],
        "epochs": 30,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "dropout": 0.1,
        "weight_decay": 1e-5,
    }
    space = _space(
        hidden={"type": "categorical", "choices": ["[64,32]", "[128,64]", "[256,128]", "[64]"]},
        learning_rate={"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
        dropout={"type": "float", "low": 0.0, "high": 0.4},
        weight_decay={"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
    )
    return "mlp", base, space


#: AutoML's model families: name -> (flavor, base parameters, search space) for a task.
FAMILIES = {  # in the order round 1 trains their baselines: usually best, then cheapest
    "lightgbm": _lightgbm,
    "linear": _linear,
    "xgboost": _xgboost,
    "random_forest": _random_forest,
    "mlp": _mlp,
}


def family_objective(
    family: str, task: str, metric: str, direction: str, seed: int, threads: int = 1
) -> Objective:
    """The search objective of one AutoML family for a task (``threads`` per fit)."""
    flavor, base, space = FAMILIES[family](check_task(task))  # families differ per kind
    if "n_jobs" in base:
        base = {**base, "n_jobs": threads}
    return Objective(
        flavor=flavor,
        task=task,
        base_params=base,
        space=space,
        metric=metric,
        direction=direction,
        seed=seed,
        early_stopping_rounds=50 if flavor in ("lightgbm", "xgboost") else 5,
        json_params=("hidden",) if family == "mlp" else (),
        threads=threads,
    )


@dataclass
class Leaderboard:
    """AutoML's result: a row per family (best first) and the winner's flavor and parameters."""

    metric: str
    direction: str
    rows: list[dict[str, Any]]
    best: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """Facts for the tune step's run."""
        return {
            "metric": self.metric,
            "best_family": self.best["family"],
            "best_value": self.best["value"],
            "automl_seconds": round(self.seconds, 2),
            "trials": sum(int(r["trials"]) for r in self.rows),
        }


@dataclass(frozen=True)
class _OnRay:
    """Where AutoML's trials run when the executor is Ray."""

    ray: Any  # the connected ``ray`` module
    address: str | None
    resources: ResourcesConfig
    workers: int


def run_automl(
    data: TrialData,
    config: KeelConfig,
    *,
    metadata: MetadataStore | None = None,
    parent_run: str = "",
    console: Console | None = None,
) -> Leaderboard:
    """Search across model families within ``automl.time_budget_seconds``.

    Args:
        data: Fit and validation arrays.
        config: keel.yaml (``model.task``, ``model.seed``, ``automl``, optional ``search.metric``).
        metadata: Where trials are recorded as ``tune/trial`` runs.
        parent_run: The tune step's run id.
        console: Where the leaderboard is printed.

    Returns:
        The leaderboard and the best family's flavor and parameters.

    Raises:
        KeelError: No family completed a trial within the budget.
    """
    from keel.train.search.distributed import executor_settings, ray_session

    executor, address = executor_settings(config)
    if executor != "ray":
        return _run(data, config, metadata, parent_run, console, None)
    with ray_session(address) as ray:  # one connection for every family's trials
        workers = _ray_workers(config, ray.nodes())
        on_ray = _OnRay(ray, address, config.resources, workers)
        return _run(data, config, metadata, parent_run, console, on_ray)


def _ray_workers(config: KeelConfig, nodes: list[dict[str, Any]]) -> int:
    """``search.workers`` when a ``search:`` section sets it, else as many trials as the
    alive nodes' CPUs hold at ``resources.cpus`` each."""
    if config.search is not None and "workers" in config.search.model_fields_set:
        return config.search.workers
    cpus = sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes if n.get("Alive", True))
    return max(1, int(cpus // config.resources.cpus))


def _run(
    data: TrialData,
    config: KeelConfig,
    metadata: MetadataStore | None,
    parent_run: str,
    console: Console | None,
    on_ray: _OnRay | None,
) -> Leaderboard:
    started = time.monotonic()
    budget = config.automl.time_budget_seconds
    task, seed = config.model.task, config.model.seed
    search = config.search or SearchConfig()
    metric = search.metric or default_metric(task)
    direction = check_metric(metric, task, search.direction)
    threads = max(1, int(config.resources.cpus))
    runs: dict[str, _FamilyRun] = {}
    rows: dict[str, dict[str, Any]] = {}
    families = sorted(config.automl.families, key=list(FAMILIES).index)
    round_end = started + budget * _BASELINE_SHARE
    for family in families:
        objective = family_objective(family, task, metric, direction, seed, threads)
        missing = _missing_extra(objective.flavor)
        if missing:
            rows[family] = _row(family, f"skipped: {missing}")
            continue
        runs[family] = _FamilyRun(family, objective, search, data, metadata, parent_run, on_ray)
    if on_ray is None:
        started_runs = _baselines(list(runs.values()), budget, round_end)
    else:
        started_runs = _baselines_on_ray(list(runs.values()), data, on_ray, round_end)
    for name in list(runs):
        if name in started_runs:
            rows[name] = runs[name].row()
        else:
            rows[name] = _row(name, "skipped: out of time for a baseline")
            del runs[name]
    ranked = sorted(
        (f for f in runs if runs[f].best_value() is not None),
        key=lambda f: runs[f].best_value() or 0.0,
        reverse=direction == "maximize",
    )
    end = started + budget
    left = end - time.monotonic()
    for name, share in zip(ranked, _SHARES, strict=False):
        if time.monotonic() >= end:
            break
        runs[name].search(deadline=min(time.monotonic() + left * share, end))
        rows[name] = runs[name].row()
    return _leaderboard(metric, direction, rows, runs, time.monotonic() - started, console)


class _FamilyRun:
    """One family's in-memory study: a baseline trial, then TPE for a share of the budget."""

    def __init__(
        self,
        family: str,
        objective: Objective,
        search: SearchConfig,
        data: TrialData,
        metadata: MetadataStore | None,
        parent_run: str,
        on_ray: _OnRay | None = None,
    ) -> None:
        from keel.train.search.study import study_key

        self.family, self.objective, self.data = family, objective, data
        self.on_ray = on_ray
        name = f"automl-{family}-{study_key(objective.to_json())}"
        config = search.model_copy(update={"sampler": "tpe", "pruner": "median", "workers": 1})
        self.study = open_study(config, objective, name, None)
        self.recorder = TrialRecorder(metadata, name, parent_run)
        self.seconds = 0.0
        self.trials = 0

    def enqueue_defaults(self) -> None:
        """Make the family's default parameters the study's next trial."""
        defaults = {
            k: v for k, v in self.objective.base_params.items() if k in self.objective.space
        }
        for name in self.objective.json_params:  # sampled as JSON text, e.g. "[64,32]"
            if name in defaults:
                defaults[name] = orjson.dumps(defaults[name]).decode()
        self.study.enqueue_trial(defaults)

    def baseline(self, deadline: float) -> None:
        self.enqueue_defaults()
        self._optimize(Budget(1, deadline))

    def search(self, deadline: float) -> None:
        self._optimize(Budget(None, deadline))

    def _optimize(self, budget: Budget) -> None:
        from keel.train.search.tune import optimize

        started = time.monotonic()
        try:
            if self.on_ray is None:
                self.trials += optimize(
                    self.study, self.objective, self.data, budget, recorder=self.recorder
                )
            else:
                from keel.train.search.distributed import optimize_on_ray

                self.trials += optimize_on_ray(
                    self.study,
                    self.objective,
                    self.data,
                    budget,
                    recorder=self.recorder,
                    renumber=0,
                    workers=self.on_ray.workers,
                    address=self.on_ray.address,
                    resources=self.on_ray.resources,
                )
        finally:
            self.seconds += time.monotonic() - started

    def best_value(self) -> float | None:
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return self.study.best_value if done else None

    def best_params(self) -> dict[str, Any]:
        params = {**self.objective.base_params, **self.study.best_params}
        return decode_params(params, self.objective.json_params)

    def row(self) -> dict[str, Any]:
        value = self.best_value()
        return {
            "family": self.family,
            "flavor": self.objective.flavor,
            "status": "ok" if value is not None else "no trial completed",
            "value": value,
            "trials": self.trials,
            "seconds": round(self.seconds, 2),
            "params": self.best_params() if value is not None else {},
        }


def _baselines(runs: list[_FamilyRun], budget: float, deadline: float) -> set[str]:
    """Round 1 in this process: each family's default trial in turn until ``deadline``;
    returns the families whose baseline started. A baseline may take up to twice its fair
    share of the round; a fit that overruns that is pruned (stopped)."""
    started: set[str] = set()
    for run in runs:
        if time.monotonic() >= deadline:
            break
        started.add(run.family)
        run.baseline(deadline=time.monotonic() + 2 * budget * _BASELINE_SHARE / len(runs))
    return started


def _baselines_on_ray(
    runs: list[_FamilyRun], data: TrialData, on_ray: _OnRay, deadline: float
) -> set[str]:
    """Round 1 on Ray: every family's default trial, ``workers`` at a time, until ``deadline``;
    returns the families whose baseline started. Trials still running at the deadline are
    cancelled (recorded as pruned)."""
    from keel.train.search.distributed import RayTrials, trial_task

    ray = on_ray.ray
    task = trial_task(ray, on_ray.resources)
    data_ref = ray.put(data)
    queue = list(runs)
    pending: dict[Any, tuple[_FamilyRun, RayTrials, float]] = {}
    started: set[str] = set()
    while queue or pending:
        while queue and len(pending) < on_ray.workers and time.monotonic() < deadline:
            run = queue.pop(0)
            run.enqueue_defaults()
            runner = RayTrials(run.study, run.objective, run.recorder, 0, None)
            trial, params = runner.ask()
            ref = task.remote(run.objective.to_json(), data_ref, params)
            runner.pending[ref] = (trial, params)
            pending[ref] = (run, runner, time.monotonic())
            started.add(run.family)
        if not pending:
            break
        left = max(deadline - time.monotonic(), 0.0)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
        finished = ready or list(pending)  # none ready: the round is over, cancel the rest
        for ref in finished:
            run, runner, since = pending.pop(ref)
            if ready:
                runner.tell(ref, ray.get(ref))
            else:
                ray.cancel(ref, force=True)
                runner.tell(ref, {"error": "round 1 of the time budget ran out"}, pruned=True)
            run.trials += 1
            run.seconds += time.monotonic() - since
        if not ready:
            break
    return started


def _row(family: str, status: str) -> dict[str, Any]:
    flavor = FAMILIES[family]("binary")[0]
    return {"family": family, "flavor": flavor, "status": status, "value": None, "trials": 0,
            "seconds": 0.0, "params": {}}  # fmt: skip


def _missing_extra(flavor: str) -> str | None:
    from keel.train import trainer_for

    try:
        trainer_for(flavor)
    except ConfigError as exc:
        return exc.message.split(" Install")[0]
    return None


def _leaderboard(
    metric: str,
    direction: str,
    rows: dict[str, dict[str, Any]],
    runs: dict[str, _FamilyRun],
    seconds: float,
    console: Console | None,
) -> Leaderboard:
    scored = [r for r in rows.values() if r["value"] is not None]
    others = [r for r in rows.values() if r["value"] is None]
    scored.sort(key=lambda r: float(r["value"]), reverse=direction == "maximize")
    if not scored:
        raise KeelError(
            f"AutoML: no model family completed a trial in {seconds:.0f} s "
            f"({'; '.join(str(r['family']) + ': ' + str(r['status']) for r in others)}). Raise "
            "automl.time_budget_seconds in keel.yaml."
        )
    top = scored[0]
    best = {"family": top["family"], "flavor": top["flavor"], "params": top["params"],
            "value": top["value"]}  # fmt: skip
    board = Leaderboard(metric, direction, scored + others, best, seconds)
    if console is not None:
        console.print(render_leaderboard(board))
    return board


def render_leaderboard(board: Leaderboard) -> Any:
    """The leaderboard as a rich table (best first)."""
    from rich.table import Table

    table = Table(title=f"AutoML leaderboard ({board.metric}, validation)", show_edge=False)
    for column in ("rank", "family", board.metric, "trials", "seconds", "status"):
        table.add_column(column, justify="right" if column in ("rank", "trials") else "left")
    for rank, row in enumerate(board.rows, start=1):
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        shown = str(rank) if row["value"] is not None else "-"
        table.add_row(shown, row["family"], value, str(row["trials"]), f"{row['seconds']:.1f}",
                      row["status"])  # fmt: skip
    return table
