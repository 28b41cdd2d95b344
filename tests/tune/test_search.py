"""Searches on Adult: best trial, pruning, recorded trials, resumption after a kill, parallel
workers sharing the journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from keel.store.metadata import MetadataStore
from keel.train.search import TrialData, run_search
from keel.train.search.study import journal_storage
from tests.tune.conftest import SPACE, objective, search_config


def test_search_finds_a_good_trial_and_records_every_trial(
    adult_data: TrialData, tmp_path: Path
) -> None:
    metadata = MetadataStore(f"sqlite:///{tmp_path / 'keel.db'}")
    result = run_search(
        adult_data,
        objective(),
        search_config(trials=6, pruner="none"),
        study_dir=None,
        study="adult",
        metadata=metadata,
    )
    assert result.completed == 6 and result.pruned == 0 and result.ran == 6
    assert [row["trial"] for row in result.trials] == [1, 2, 3, 4, 5, 6]
    values = [row["value"] for row in result.trials]
    assert result.best_value == max(values) > 0.85
    best_row = result.trials[result.best_trial - 1]
    assert result.best_params == {**objective().base_params, **best_row["params"]}
    runs = metadata.list_runs(step="tune/trial", limit=20)
    assert len(runs) == 6 and {r.status for r in runs} == {"succeeded"}
    facts = next(r for r in runs if r.params["trial"] == result.best_trial).params["facts"]
    assert facts["metrics"]["roc_auc"] == pytest.approx(result.best_value)
    assert facts["params"]["num_leaves"] == best_row["params"]["num_leaves"]
    assert facts["tags"] == {"study": "adult", "trial": str(result.best_trial),
                             "state": "complete", "flavor": "lightgbm"}  # fmt: skip
    tracked = metadata.get_tracked_run(runs[0].id)
    assert tracked.metrics["roc_auc"] > 0.85 and tracked.tags["study"] == "adult"
    assert tracked.history is not None and len(tracked.history["roc_auc"]) >= 1
    metadata.close()


def test_median_pruning_stops_poor_trials_early(adult_data: TrialData) -> None:
    # learning rates down to 1e-3: such trials trail the median at every step
    space = {"learning_rate": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}
    slow = objective(space=space, base_params={"n_estimators": 60}, early_stopping_rounds=None)
    config = search_config(trials=14, space=space, sampler="random")
    pruned = run_search(adult_data, slow, config, study_dir=None, study="p")
    assert pruned.pruned >= 1
    assert pruned.completed + pruned.pruned == 14
    stopped = [r for r in pruned.trials if r["state"] == "pruned"]
    kept = config.model_copy(update={"pruner": "none"})
    unpruned = run_search(adult_data, slow, kept, study_dir=None, study="n")
    assert unpruned.pruned == 0 and unpruned.completed == 14
    assert all(r["seconds"] is not None for r in stopped)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_parameter_stops_the_search_with_its_message(
    adult_data: TrialData, tmp_path: Path, workers: int
) -> None:
    from keel.errors import ConfigError

    space = {"num_leafs": {"type": "int", "low": 4, "high": 8}}
    config = search_config(trials=2, space=space, workers=workers)
    with pytest.raises(ConfigError, match=r"unknown key 'num_leafs'.*Did you mean 'num_leaves'"):
        run_search(adult_data, objective(space=space), config, study_dir=tmp_path, study="bad")


WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from keel.train.search import TrialData, run_search
    from tests.tune.conftest import objective, search_config

    folder = Path(sys.argv[1])
    data = TrialData(*(np.load(folder / f"{n}.npy") for n in ("x", "y", "xv", "yv")))
    slow = objective(base_params={"n_estimators": 300, "learning_rate": 0.01},
                     early_stopping_rounds=None)
    run_search(data, slow, search_config(trials=40, pruner="none"),
               study_dir=folder / "studies", study="killed")
    """
)


def _state(path: Path) -> tuple[int, bool]:
    """Completed trials, and whether a trial with all its parameters is running."""
    if not path.exists():
        return 0, False
    try:
        study = optuna.load_study(study_name="killed", storage=journal_storage(path))
    except KeyError:
        return 0, False
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    running = any(
        t.state == optuna.trial.TrialState.RUNNING and len(t.params) == len(SPACE) for t in trials
    )
    return done, running


def test_a_killed_search_resumes_at_the_next_trial(adult_data: TrialData, tmp_path: Path) -> None:
    for name, array in zip(("x", "y", "xv", "yv"), (adult_data.x, adult_data.y,
                           adult_data.x_valid, adult_data.y_valid), strict=True):  # fmt: skip
        np.save(tmp_path / f"{name}.npy", array)
    (tmp_path / "worker.py").write_text(WORKER)
    journal = tmp_path / "studies" / "killed.journal"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        # kill mid-trial, after 3 trials: the fourth is training (300 rounds at a low rate)
        while time.monotonic() < deadline and proc.poll() is None:
            done, running = _state(journal)
            if done >= 3 and running:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = _state(journal)[0]
    assert 3 <= done < 40, "the worker should have been killed mid-search"
    study = optuna.load_study(study_name="killed", storage=journal_storage(journal))
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert len(running) == 1, "the kill should interrupt a running trial"
    interrupted = running[0].params

    fast = objective()  # same study key in real use; the budget is what matters here
    slow = objective(base_params={"n_estimators": 300, "learning_rate": 0.01},
                     early_stopping_rounds=None)  # fmt: skip
    assert slow != fast
    result = run_search(adult_data, slow, search_config(trials=done + 2, pruner="none"),
                        study_dir=tmp_path / "studies", study="killed")  # fmt: skip
    assert result.resumed_from == done and result.ran == 2
    numbers = [r["trial"] for r in result.trials if not r["interrupted"]]
    assert numbers == list(range(1, done + 3)), "numbering continues at the next trial"
    (killed,) = [r for r in result.trials if r["interrupted"]]
    assert killed["trial"] == done + 1 and killed["state"] == "fail"
    rerun = next(r for r in result.trials if r["trial"] == done + 1 and not r["interrupted"])
    assert rerun["params"] == interrupted and rerun["state"] == "complete"


def test_parallel_workers_share_the_journal_without_lock_errors(
    adult_data: TrialData, tmp_path: Path
) -> None:
    metadata = MetadataStore(f"sqlite:///{tmp_path / 'keel.db'}")
    config = search_config(trials=6, workers=2)
    result = run_search(adult_data, objective(), config, study_dir=tmp_path / "studies",
                        study="par", metadata=metadata)  # fmt: skip
    assert result.ran == 6 and result.completed + result.pruned == 6 and result.failed == 0
    assert sorted(r["trial"] for r in result.trials) == [1, 2, 3, 4, 5, 6]
    runs = metadata.list_runs(step="tune/trial", limit=20)
    assert len(runs) == 6 and all(r.status == "succeeded" for r in runs)
    assert not list((tmp_path / "studies").glob("par.*/")), "worker files are cleaned up"
    more = config.model_copy(update={"trials": 8, "workers": 1})
    again = run_search(adult_data, objective(), more, study_dir=tmp_path / "studies",
                       study="par", metadata=metadata)  # fmt: skip
    assert again.resumed_from == 6 and again.ran == 2
    metadata.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_trials_fit_with_the_sample_weights(
    adult_data: TrialData, tmp_path: Path, workers: int
) -> None:
    """Weights reach every trial, in-process and in worker processes: zero weight on all
    positive rows leaves a model with nothing to rank, a validation AUC of 0.5."""
    from dataclasses import replace

    weights = np.where(adult_data.y == 1, 0.0, 1.0)
    data = replace(adult_data, sample_weight=weights)
    config = search_config(trials=2, workers=workers)
    weighted = run_search(data, objective(), config, study_dir=tmp_path / "w", study="w")
    plain = run_search(adult_data, objective(), config, study_dir=tmp_path / "p", study="p")
    assert plain.best_value > 0.8
    assert weighted.best_value == pytest.approx(0.5)
