"""Hyper-parameter search with Optuna: TPE, random or grid sampling, pruning, resumable studies.

A search trains one model per trial through :func:`keel.train.fit` on a fixed fit/validation
split and scores it on the validation rows with ``search.metric``. Each trial is recorded as a
``tune/trial`` run (facts ``params``, ``metrics``, ``history``, ``tags``); the best trial's
parameters become the ``best_params`` artifact that the ``train`` step trains with.

Studies persist in ``.keel/studies/<key>.journal`` where the key hashes the search space, the
model and the data snapshot, so a search that was killed resumes where it stopped: completed
trials count towards the budget and a trial that was running when the process died is run again
with the same parameters. Parallel trials run in worker processes (``search.workers``) that
share the study through Optuna's journal storage (see :mod:`keel.train.search.study` for why not
SQLite), or as Ray tasks with ``executor: ray`` (:mod:`keel.train.search.distributed`).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from keel import errors
from keel.config import SearchConfig
from keel.errors import BackendError, KeelError
from keel.train.search.objective import (
    Objective,
    TrialData,
    TrialOutcome,
    parse_space,
    suggest,
    train_trial,
)
from keel.train.search.study import (
    Budget,
    TrialRecorder,
    budget_for,
    done_trials,
    journal_storage,
    open_study,
    recover_interrupted,
    trial_facts,
)

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from keel.store.metadata import MetadataStore

__all__ = ["SearchResult", "optimize", "reported", "run_search"]


@dataclass
class SearchResult:
    """How a search went: the best trial and every trial of the study."""

    study: str
    metric: str
    direction: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    completed: int
    pruned: int
    failed: int
    resumed_from: int
    ran: int
    seconds: float
    trials: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """Facts for the tune step's run (without the per-trial rows)."""
        return {
            "study": self.study,
            "metric": self.metric,
            "best_value": self.best_value,
            "best_trial": self.best_trial,
            "completed": self.completed,
            "pruned": self.pruned,
            "failed": self.failed,
            "resumed_from": self.resumed_from,
            "trials_run": self.ran,
        }


def optimize(
    study: optuna.Study,
    objective: Objective,
    data: TrialData,
    budget: Budget,
    *,
    recorder: TrialRecorder,
    renumber: int = 0,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Ask, train, tell until the budget is spent; returns the number of trials run.

    Pruning: intermediate validation values are reported to the study; the pruner's verdict
    raises ``optuna.TrialPruned`` inside the trainer's iteration callback. A KeelError (a bad
    parameter name, say) stops the search: every trial would fail the same way.
    """
    import optuna

    space = parse_space(objective.space)
    # without a pruner nothing reads intermediate values: skip their journal appends (the
    # learning curves are recorded with each trial's run all the same)
    prunes = not isinstance(study.pruner, optuna.pruners.NopPruner)
    ran = 0
    while not budget.exhausted(ran):
        trial = study.ask()
        number = trial.number + 1 - renumber  # as keel_numbers() counts
        params = suggest(trial, space)
        run_id = recorder.start(number, params)
        if run_id is not None:
            trial.set_user_attr("run_id", run_id)
        try:
            state, outcome, extra = _evaluate(study, trial, objective, data, params, budget, prunes)
        except KeelError as exc:
            facts = trial_facts(objective, number, params, "fail", None, recorder.study)
            recorder.finish(run_id, "fail", None, facts | {"error": exc.message})
            raise
        except KeyboardInterrupt:  # the trial stays running: the next search re-runs it
            recorder.abandon(run_id or "")
            raise
        facts = trial_facts(objective, number, params, state, outcome, recorder.study) | extra
        recorder.finish(run_id, state, outcome, facts)
        ran += 1
        if on_trial is not None:
            on_trial({"trial": number, "state": state, "value": outcome and outcome.value})
    return ran


def _evaluate(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Objective,
    data: TrialData,
    params: dict[str, Any],
    budget: Budget,
    prunes: bool,
) -> tuple[str, TrialOutcome | None, dict[str, Any]]:
    """Train one trial and tell the study how it went: ``(state, outcome, extra facts)``."""
    import optuna
    from optuna.trial import TrialState

    def report(step: int, value: float | None) -> None:
        # not at step 1: a model without iterations (scikit-learn) reports once, after its
        # fit, and stopping it then would only throw the finished fit away
        if step > 1 and budget.deadline is not None and time.monotonic() >= budget.deadline:
            raise optuna.TrialPruned("the search's time budget ran out")
        if value is not None and prunes and reported(step):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at iteration {step}")

    try:
        outcome = train_trial(objective, data, params, report=report)
    except optuna.TrialPruned as exc:
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned", None, {"pruned": str(exc)}
    except KeelError:
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # a diverging fit must not end a 100-trial search
        study.tell(trial, state=TrialState.FAIL)
        return "fail", None, {"error": f"{type(exc).__name__}: {exc}"}
    if not math.isfinite(outcome.value):
        study.tell(trial, state=TrialState.FAIL)
        return "fail", outcome, {"error": f"{objective.metric} is {outcome.value}"}
    study.tell(trial, outcome.value)
    return "complete", outcome, {}


def keel_numbers(trials: list[optuna.trial.FrozenTrial]) -> dict[int, int]:
    """Optuna trial number -> the 1-based number Keel shows. A trial interrupted by a kill and
    its re-run share one number, so numbering continues where the killed search stopped."""
    out, interrupted = {}, 0
    for trial in sorted(trials, key=lambda t: t.number):
        out[trial.number] = trial.number + 1 - interrupted
        interrupted += bool(trial.user_attrs.get("interrupted"))
    return out


def reported(step: int) -> bool:
    """Whether iteration ``step`` reports to the study: 1, 2, 4 ... 64, then every 50th. Each
    report is a durable journal append (an fsync), so every boosting round would cost more than
    the round; pruners compare trials at equal steps, and these are the same for every trial."""
    return step & (step - 1) == 0 if step <= 64 else step % 50 == 0


def run_search(
    data: TrialData,
    objective: Objective,
    config: SearchConfig,
    *,
    study_dir: Path | None,
    study: str,
    metadata: MetadataStore | None = None,
    parent_run: str = "",
    console: Console | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    resources: Any = None,
) -> SearchResult:
    """Run (or resume) a search and return its best trial.

    Args:
        data: Fit and validation arrays.
        objective: What each trial trains and how it is scored.
        config: ``search:`` from keel.yaml (budget, sampler, pruner, workers).
        study_dir: Where the study's journal lives (``.keel/studies``); None keeps the study in
            memory (no resumption, one worker).
        study: The study's name (see :func:`study_key`).
        metadata: Where trials are recorded as ``tune/trial`` runs (None: not recorded).
        parent_run: The run id of the ``tune`` step.
        console: Where progress is drawn.
        executor: ``local`` (processes) or ``ray`` (Ray tasks).
        ray_address: The Ray cluster (``executor: ray``); None starts or joins a local one.
        resources: What each trial asks of Ray (:class:`keel.config.ResourcesConfig`).

    Returns:
        The best trial and a row per trial of the study.

    Raises:
        ConfigError: The search space does not fit the flavor (e.g. an unknown parameter).
        KeelError: No trial completed.
    """
    started = time.perf_counter()
    space = parse_space(objective.space)
    storage = journal_storage(study_dir / f"{study}.journal") if study_dir else None
    optuna_study = open_study(config, objective, study, storage)
    recorder = TrialRecorder(metadata, study, parent_run)
    renumber = recover_interrupted(optuna_study, recorder)
    done = done_trials(optuna_study)
    budget = budget_for(config, done, space)
    if done and console is not None and not console.quiet:
        _announce(console, optuna_study, done)
    with _progress(console, done, budget) as on_trial:
        if executor == "ray":
            from keel.train.search.distributed import optimize_on_ray

            ran = optimize_on_ray(
                optuna_study, objective, data, budget, recorder=recorder, renumber=renumber,
                workers=config.workers, address=ray_address, resources=resources,
                on_trial=on_trial,
            )  # fmt: skip
        elif config.workers > 1 and storage is not None and study_dir is not None:
            ran = _optimize_in_processes(
                study_dir, study, config, objective, data, budget, metadata, parent_run, renumber
            )
        else:
            ran = optimize(
                optuna_study, objective, data, budget, recorder=recorder,
                renumber=renumber, on_trial=on_trial,
            )  # fmt: skip
    return _result(optuna_study, objective, done, ran, time.perf_counter() - started)


def _announce(console: Console, study: optuna.Study, done: int) -> None:
    waiting = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING")
    again = f", re-running {waiting} interrupted" if waiting else ""
    console.print(
        f"  tune: study {study.study_name} has {done} trials; resuming at trial {done + 1}{again}"
    )


@contextmanager
def _progress(
    console: Console | None, done: int, budget: Budget
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    if console is None or console.quiet:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = None if budget.trials is None else done + budget.trials
    columns = [
        TextColumn("  tune"),
        BarColumn(),
        TextColumn("{task.completed} trials  best {task.fields[best]}"),
        TimeElapsedColumn(),
    ]
    best: list[float] = []
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("tune", total=total, completed=done, best="-")

        def on_trial(row: dict[str, Any]) -> None:
            if row.get("value") is not None:
                best.append(float(row["value"]))
            shown = f"{max(best):.4f}/{min(best):.4f}" if best else "-"
            progress.update(task, advance=1, best=shown.split("/")[0])

        yield on_trial


def _result(
    study: optuna.Study, objective: Objective, done: int, ran: int, seconds: float
) -> SearchResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    numbers = keel_numbers(trials)
    rows = [
        {
            "trial": numbers[t.number],
            "state": t.state.name.lower(),
            "value": t.value,
            "params": dict(t.params),
            "seconds": (t.duration.total_seconds() if t.duration else None),
            "interrupted": bool(t.user_attrs.get("interrupted")),
        }
        for t in trials
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise KeelError(
            f"no trial of study {study.study_name} completed ({len(trials)} trials: "
            f"{sum(t.state == TrialState.PRUNED for t in trials)} pruned, "
            f"{sum(t.state == TrialState.FAIL for t in trials)} failed). See "
            "'keel runs list' for the tune/trial errors; widen the search space or raise "
            "search.trials / search.timeout_seconds."
        )
    best = study.best_trial
    return SearchResult(
        study=study.study_name,
        metric=objective.metric,
        direction=objective.direction,
        best_params={**objective.base_params, **best.params},
        best_value=float(best.value if best.value is not None else math.nan),
        best_trial=numbers[best.number],
        completed=len(complete),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        resumed_from=done,
        ran=ran,
        seconds=seconds,
        trials=rows,
    )


# --- parallel trials in worker processes ----------------------------------------------------


def _optimize_in_processes(
    study_dir: Path,
    study: str,
    config: SearchConfig,
    objective: Objective,
    data: TrialData,
    budget: Budget,
    metadata: MetadataStore | None,
    parent_run: str,
    renumber: int,
) -> int:
    """Run the budget across ``config.workers`` processes sharing the journal; each worker
    runs a fixed share of the trials, so together they run exactly the budget."""
    with tempfile.TemporaryDirectory(dir=study_dir, prefix=f"{study}.") as tmp:
        folder = Path(tmp)
        for name in ("x", "y", "x_valid", "y_valid", "sample_weight"):
            if getattr(data, name) is not None:
                np.save(folder / f"{name}.npy", getattr(data, name), allow_pickle=False)
        spec = {
            "study_dir": str(study_dir),
            "study": study,
            "config": config.model_dump(mode="json"),
            "objective": objective.to_json(),
            "db_url": metadata.url if metadata is not None else None,
            "parent_run": parent_run,
            "renumber": renumber,
            "seconds": None if budget.deadline is None else budget.deadline - time.monotonic(),
        }
        shares = {i: budget.share(config.workers, i) for i in range(config.workers)}
        procs = {
            i: _spawn(folder, spec | {"trials": n, "worker": i}, objective.threads)
            for i, n in shares.items()
            if n != 0
        }
        try:
            return _wait(procs, folder, study)
        finally:  # interrupted: stop the workers too (their trials resume next time)
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _spawn(folder: Path, spec: dict[str, Any], threads: int | None) -> subprocess.Popen[bytes]:
    path = folder / f"worker-{spec['worker']}.json"
    path.write_bytes(orjson.dumps(spec))
    command = [sys.executable, "-m", "keel.train.search.tune", str(path)]
    with (folder / f"worker-{spec['worker']}.log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, env=_worker_env(threads))


def _wait(procs: dict[int, subprocess.Popen[bytes]], folder: Path, study: str) -> int:
    """Wait for every worker; re-raise the first one's error, else the trials they ran."""
    failed = [(i, code) for i, proc in procs.items() if (code := proc.wait()) != 0]
    for index, code in failed:
        error = folder / f"worker-{index}.error"
        if error.exists():  # a KeelError in the worker: the same error here
            found = orjson.loads(error.read_bytes())
            raise getattr(errors, found["type"], KeelError)(found["message"])
        tail = (folder / f"worker-{index}.log").read_text(errors="replace")[-2000:]
        raise BackendError(
            f"search worker {index} of study {study} exited with code {code}: "
            f"{_worker_message(tail)}",
            details={"log": tail},
        )
    return sum(int((folder / f"worker-{i}.done").read_text() or 0) for i in procs)


def _worker_env(threads: int | None) -> dict[str, str]:
    # the trial's thread limit from the start: OpenMP reads it when it loads
    return {**os.environ, "OMP_NUM_THREADS": str(threads or 1)}


def _worker_message(tail: str) -> str:
    lines = [line for line in tail.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _worker_main(spec_path: str) -> int:
    """Entry point of a worker process: ``python -m keel.train.search.tune SPEC.json``."""
    from keel.store.metadata import MetadataStore

    path = Path(spec_path)
    spec = orjson.loads(path.read_bytes())
    folder = path.parent
    arrays = {
        n: np.load(folder / f"{n}.npy", allow_pickle=False)
        for n in ("x", "y", "x_valid", "y_valid", "sample_weight")
        if (folder / f"{n}.npy").exists()
    }
    data = TrialData(**arrays)
    config = SearchConfig.model_validate(spec["config"])
    objective = Objective.from_json(spec["objective"])
    storage = journal_storage(Path(spec["study_dir"]) / f"{spec['study']}.journal")
    study = open_study(config, objective, spec["study"], storage, worker=int(spec["worker"]))
    seconds = spec["seconds"]
    budget = Budget(spec["trials"], None if seconds is None else time.monotonic() + seconds)
    metadata = MetadataStore(spec["db_url"]) if spec["db_url"] else None
    try:
        recorder = TrialRecorder(metadata, spec["study"], spec["parent_run"])
        ran = optimize(
            study, objective, data, budget, recorder=recorder, renumber=int(spec["renumber"])
        )
    except KeelError as exc:
        error = {"type": type(exc).__name__, "message": exc.message}
        (folder / f"worker-{spec['worker']}.error").write_bytes(orjson.dumps(error))
        return 1
    finally:
        if metadata is not None:
            metadata.close()
    (folder / f"worker-{spec['worker']}.done").write_text(str(ran))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1]))
