"""One side of the search benchmarks, in its own process; prints one JSON line.

usage: python search_sides.py SIDE TRIALS WORKDIR [WORKERS]

Sides: ``keel`` (``run_search`` with its journal study and every trial recorded as a run in a
SQLite metadata store), ``optuna-memory`` (plain Optuna, in-memory storage), ``optuna-sqlite``
(plain Optuna, SQLite storage; with WORKERS > 1, that many processes share the database),
``keel-ray`` (Keel with ``executor: ray``, WORKERS tasks at a time), ``keel-local`` (Keel in
process, no study on disk, no run records: the floor the Ray side is compared with).

Every side runs the same LightGBM trials on the same Adult fit/validation split: the same space,
200 rounds at most with early stopping after 20, seeded samplers, no pruning (so every side does
the same work), one OpenMP thread per trial.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ADULT = REPO / "examples" / "adult"
BASE = {"n_estimators": 200, "learning_rate": 0.1}
SPACE = {
    "num_leaves": {"type": "int", "low": 8, "high": 128, "log": True},
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
    "min_child_samples": {"type": "int", "low": 5, "high": 100},
    "colsample_bytree": {"type": "float", "low": 0.4, "high": 1.0},
}
NATIVE = {"min_child_samples": "min_data_in_leaf", "colsample_bytree": "feature_fraction"}


def data(workdir: Path) -> tuple[np.ndarray, ...]:
    """Adult's training file through Keel's feature pipeline, split 90/10 (cached as .npy)."""
    cached = workdir / "adult-xy.npz"
    if not cached.exists():
        from sklearn.model_selection import train_test_split

        from keel.config import load_config
        from keel.data import read_source
        from keel.features.pipeline import FeaturePipeline
        from keel.validate.schema import infer_schema
        from keel.validate.statistics import compute_statistics

        config = load_config(ADULT, env="")
        table = read_source(config.data.train, ADULT)
        schema = infer_schema(compute_statistics(table), target="income", sensitive=[],
                              drop=[], max_null_fraction=0.05)  # fmt: skip
        inputs = {n: schema.columns[n].type for n in schema.features()}
        x = FeaturePipeline(inputs=inputs).fit(table).transform(table)
        y = (np.asarray(table.column("income").to_pylist(), dtype=object) == ">50K").astype(int)
        parts = train_test_split(x, y, test_size=0.1, random_state=0, stratify=y)
        workdir.mkdir(parents=True, exist_ok=True)
        np.savez(cached, x=parts[0], xv=parts[1], y=parts[2], yv=parts[3])
    loaded = np.load(cached, allow_pickle=False)
    return loaded["x"], loaded["y"], loaded["xv"], loaded["yv"]


def plain_objective(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray) -> Any:
    """What a user writes with Optuna alone: lgb.train + roc_auc_score."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    def objective(trial: Any) -> float:
        params = {
            "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 100),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        }
        native = {NATIVE.get(k, k): v for k, v in params.items()}
        # the same training as Keel's LightGBM trainer: log loss and AUC per round, early
        # stopping on the log loss
        native |= {"objective": "binary", "metric": ["binary_logloss", "auc"], "seed": 0,
                   "first_metric_only": True, "verbosity": -1, "deterministic": True}  # fmt: skip
        train = lgb.Dataset(x, label=y)
        valid = lgb.Dataset(xv, label=yv, reference=train)
        stop = lgb.early_stopping(20, first_metric_only=True, verbose=False)
        booster = lgb.train(native, train, num_boost_round=BASE["n_estimators"],
                            valid_sets=[valid], callbacks=[stop])  # fmt: skip
        return float(roc_auc_score(yv, booster.predict(xv, num_iteration=booster.best_iteration)))

    return objective


def sampler(seed: int) -> Any:
    """TPE as Keel configures it (5 random start-up trials), so both sides sample the same."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def _optuna_worker(args: tuple[str, int, str, int]) -> int:
    url, trials, name, seed = args
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=url,
                              sampler=sampler(seed))  # fmt: skip
    study.optimize(plain_objective(*data(Path(url.split("///")[1]).parent)), n_trials=trials)
    return trials


def optuna_side(side: str, trials: int, workdir: Path, workers: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    arrays = data(workdir)
    started = time.perf_counter()
    if side == "optuna-memory":
        study = optuna.create_study(direction="maximize", sampler=sampler(0))
        study.optimize(plain_objective(*arrays), n_trials=trials)
        return _summary(study.trials, started, errors=[])
    db = workdir / f"optuna-{workers}.db"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="bench", storage=url, direction="maximize")
    errors: list[str] = []
    if workers == 1:
        _optuna_worker((url, trials, "bench", 0))
    else:
        share = [trials // workers + (i < trials % workers) for i in range(workers)]
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = [pool.apply_async(_optuna_worker, ((url, n, "bench", i),))
                       for i, n in enumerate(share)]  # fmt: skip
            for result in results:
                try:
                    result.get()
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
    study = optuna.load_study(study_name="bench", storage=url)
    return _summary(study.trials, started, errors)


def keel_side(side: str, trials: int, workdir: Path, workers: int) -> dict[str, Any]:
    import shutil

    from keel.config import ResourcesConfig, SearchConfig
    from keel.store.metadata import MetadataStore
    from keel.train.search import Objective, TrialData, run_search

    x, y, xv, yv = data(workdir)
    objective = Objective(flavor="lightgbm", task="binary", base_params=dict(BASE), space=SPACE,
                          metric="roc_auc", direction="maximize", seed=0,
                          early_stopping_rounds=20)  # fmt: skip
    sampler = "random" if side in ("keel-ray", "keel-local") else "tpe"
    config = SearchConfig.model_validate({"trials": trials, "space": SPACE, "pruner": "none",
                                          "sampler": sampler, "workers": workers})  # fmt: skip
    folder = workdir / f"{side}-{workers}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    local = side == "keel-local"
    metadata = None if local else MetadataStore(f"sqlite:///{folder / 'keel.db'}")
    ray_started = None
    if side == "keel-ray":
        import ray

        before = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_started = time.perf_counter() - before
    started = time.perf_counter()
    result = run_search(TrialData(x, y, xv, yv), objective, config,
                        study_dir=None if local else folder / "studies", study="bench",
                        metadata=metadata, executor="ray" if side == "keel-ray" else "local",
                        resources=ResourcesConfig(cpus=1))  # fmt: skip
    seconds = time.perf_counter() - started
    out = {"seconds": seconds, "trials": result.completed + result.pruned + result.failed,
           "failed": result.failed, "best": result.best_value, "errors": [],
           "ray_init_s": ray_started}  # fmt: skip
    if metadata is not None:
        out["runs_recorded"] = len(metadata.list_runs(step="tune/trial", limit=100_000))
        metadata.close()
    return out


def _summary(trials: list[Any], started: float, errors: list[str]) -> dict[str, Any]:
    import optuna

    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"seconds": time.perf_counter() - started, "trials": len(done),
            "failed": len(trials) - len(done), "best": max(t.value for t in done) if done else None,
            "errors": errors}  # fmt: skip


def main() -> None:
    import lightgbm  # noqa: F401  (both sides: libraries load before the clock starts)
    import optuna  # noqa: F401
    import sklearn.metrics  # noqa: F401

    side, trials, workdir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    run = optuna_side if side.startswith("optuna") else keel_side
    data(workdir)  # cached arrays: built before the clocks start
    cpu = _cpu_seconds()
    result = run(side, trials, workdir, workers)
    # CPU seconds (this process and its workers) move less than wall time on a shared machine
    result["cpu_s"] = _cpu_seconds() - cpu
    print(json.dumps({"side": side, "workers": workers, **result}))


def _cpu_seconds() -> float:
    import resource

    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
