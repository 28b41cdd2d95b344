"""Data-parallel LightGBM and XGBoost on Ray Train (``resources.workers > 1``; extra ``ray``).

The driver deals the training rows round-robin into ``workers`` shards and puts each into
Ray's object store once; each Ray Train worker reads only its own shard (zero-copy on the same
node) plus the whole validation set. Ray Data is not used: for arrays already in memory it adds
a conversion to blocks and back to pandas per worker (measured: +7 s on a 15 s fit of 1M rows).

Every worker holds the full validation set, so each computes the same validation metrics from
the same (synchronised) trees and early stopping stops at the same round everywhere. LightGBM
trains with ``tree_learner: data_parallel`` over the network Ray Train sets up; XGBoost's
collective (Rabit) is set up by Ray Train around the loop. Each worker trains with as many
threads as it reserved CPUs (``resources.cpus``): more threads than reserved CPUs spin-wait
against each other (measured: 2 workers x 2 threads on 2 cores took 105 s instead of 15 s).

Nothing is reported per iteration: ``ray.train.report`` is a barrier across workers and a
checkpoint per round is a directory written to storage, both of which cost more than a boosting
round. Rank 0 returns the model file and the learning curves from its loop (Ray Train's
``Result.return_value``: no checkpoint, no shared storage needed); ``on_iteration`` is replayed
from the curves afterwards. The result is the same trainer class the single-machine fit returns
(same file format), so registry, serving and predict are unchanged.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from keel.config import ResourcesConfig
from keel.errors import ConfigError, KeelError
from keel.train.base import (
    FitResult,
    OnIteration,
    Trainer,
    check_task,
    fit_result,
    merge_weights,
    n_classes_of,
)

__all__ = ["DATA_PARALLEL_FLAVORS", "check_data_parallel", "fit_data_parallel"]

#: Flavors that train data-parallel on Ray Train.
DATA_PARALLEL_FLAVORS = ("lightgbm", "xgboost")

_HEALTH_CHECK = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# LightGBM writes its network settings into the model's parameter section; the address and port
# change with every run and would make the same fit give a different model file (and sha256).
_NETWORK_PARAMS = ("[machines:", "[local_listen_port:", "[machine_list_filename:")


def fit_data_parallel(
    x: np.ndarray,
    y: np.ndarray,
    *,
    flavor: str,
    task: str,
    params: Mapping[str, Any],
    seed: int,
    x_valid: np.ndarray | None = None,
    y_valid: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    early_stopping_rounds: int | None = None,
    workers: int,
    resources: ResourcesConfig | None = None,
    address: str | None = None,
    on_iteration: OnIteration | None = None,
) -> FitResult:
    """Train LightGBM or XGBoost data-parallel on ``workers`` Ray Train workers.

    Args:
        x: Feature matrix; its rows are split across the workers.
        y: Encoded labels ``0..k-1`` or values.
        flavor: ``lightgbm`` or ``xgboost``.
        task: ``binary``, ``multiclass`` or ``regression``.
        params: The flavor's hyper-parameters, as for :func:`keel.train.fit`.
        seed: The fit's seed.
        x_valid: Validation features, given whole to every worker.
        y_valid: Validation targets.
        sample_weight: Per-row weights of ``x``.
        early_stopping_rounds: Stop after this many rounds without improvement.
        workers: Ray Train workers; each reserves ``resources`` (cpus, gpus, memory).
        resources: What one worker asks for; 1 CPU when None.
        address: Ray cluster to join (``ray://host:10001``, ``auto``); None starts a local one
            unless a connection is already open.
        on_iteration: Called per round with the validation metrics, after the fit (replayed
            from the learning curves: workers report once, at the end).

    Returns:
        The same :class:`FitResult` as :func:`keel.train.fit`, with ``facts["workers"]``.

    Raises:
        ConfigError: A flavor other than lightgbm / xgboost, a bad parameter, Ray missing or
            unreachable, or a worker group the cluster cannot hold (raised at once, naming
            the request and the cluster's capacity).
    """
    from keel.train.search.distributed import check_worker_group, ray_session

    check_data_parallel(flavor, workers)
    checked = check_task(task)
    if (x_valid is None) != (y_valid is None):
        raise ConfigError("pass both x_valid and y_valid, or neither.", field="x_valid")
    request = resources or ResourcesConfig()
    k = n_classes_of(checked, y, y_valid)
    plan = _plan(flavor, checked, params, seed, k, request, early_stopping_rounds)
    weights = merge_weights(sample_weight, plan.pop("class_weight"), y, checked, k)
    started = time.monotonic()
    with ray_session(address) as ray:
        check_worker_group(request, workers, ray.nodes())
        files, history = _train(ray, flavor, plan, x, y, weights, x_valid, y_valid, workers,
                                request)  # fmt: skip
    seconds = time.monotonic() - started
    model = _trainer(flavor, checked, params, seed, files, history, k)
    model.facts_ = {
        f"{flavor}_version": str(importlib.import_module(flavor).__version__),
        "train_rows": len(y),
        "validation_rows": 0 if y_valid is None else len(y_valid),
        "workers": workers,
        "worker_resources": request.model_dump(mode="json"),
        "ray_train_seconds": round(seconds, 3),
        "worker_fit_seconds": round(float(history["seconds"]), 3),
    }
    if on_iteration is not None:
        for i in range(len(next(iter(history["curves"].values()), []))):
            on_iteration(i + 1, {name: values[i] for name, values in history["curves"].items()})
    return fit_result(model, flavor, task, params)


def check_data_parallel(flavor: str, workers: int) -> None:
    """Raise unless ``flavor`` can train on ``workers`` Ray Train workers.

    Raises:
        ConfigError: ``workers > 1`` with a flavor other than lightgbm / xgboost; the message
            names the flavor and the two ways out.
    """
    if workers > 1 and flavor not in DATA_PARALLEL_FLAVORS:
        raise ConfigError(
            f"resources.workers: {workers} trains data-parallel on Ray Train, which Keel does for "
            f"{' and '.join(DATA_PARALLEL_FLAVORS)} only; model.flavor is '{flavor}'. Set "
            "resources.workers: 1 to train it on one machine, or choose model.flavor: lightgbm "
            "or xgboost.",
            field="resources.workers",
        )


def _plan(
    flavor: str,
    task: str,
    params: Mapping[str, Any],
    seed: int,
    k: int,
    request: ResourcesConfig,
    stopping: int | None,
) -> dict[str, Any]:
    """What every worker needs besides its rows: native parameters, rounds, metric names.

    Validated here, on the driver, so a bad key fails before a worker group starts."""
    threads = max(1, int(request.cpus))
    if flavor == "lightgbm":
        from keel.train import lightgbm as lgb_trainer

        checked = lgb_trainer.check_params(params)
        native = lgb_trainer.native_params(task, checked, k, seed)
        native |= {"num_threads": threads, "tree_learner": "data_parallel", "pre_partition": True}
        rounds, names = checked.n_estimators, lgb_trainer.METRICS[task]
        class_weight = checked.class_weight
    else:
        from keel.train import xgboost as xgb_trainer

        given = xgb_trainer._check(params)
        native = xgb_trainer.native_params(task, given, k, seed) | {"nthread": threads}
        rounds, names = int(given["n_estimators"]), xgb_trainer.METRICS[task]
        class_weight = given["class_weight"]
    return {"native": native, "rounds": rounds, "names": dict(names), "stopping": stopping,
            "threads": threads, "class_weight": class_weight}  # fmt: skip


def _train(
    ray: Any,
    flavor: str,
    plan: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    x_valid: np.ndarray | None,
    y_valid: np.ndarray | None,
    workers: int,
    request: ResourcesConfig,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Run the worker group; returns rank 0's model files and learning curves."""
    from ray.train import RunConfig, ScalingConfig

    # Every workers-th row (a deterministic round-robin, not contiguous blocks): LightGBM takes
    # each feature's bin boundaries from one worker's rows, which must look like all the rows
    # even when the data is ordered (by time, by label). Histograms are summed over all shards.
    shards = [
        ray.put((x[i::workers], y[i::workers], None if weights is None else weights[i::workers]))
        for i in range(workers)
    ]
    valid = ray.put(None if x_valid is None else (x_valid, y_valid))
    per_worker: dict[str, float] = {"CPU": request.cpus}
    if request.gpus:
        per_worker["GPU"] = request.gpus
    if request.memory_bytes() is not None:
        per_worker["memory"] = float(request.memory_bytes() or 0)
    config = {**plan, "shards": shards, "valid": valid}
    trainer_class = _ray_trainer(flavor)
    # Ray Train keeps run state under storage_path (no checkpoints here): a temporary directory
    # instead of ~/ray_results, removed after the fit.
    with tempfile.TemporaryDirectory(prefix="keel-ray-train-") as storage, _driver_settings():
        trainer = trainer_class(
            _LOOPS[flavor],
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker=per_worker),
            run_config=RunConfig(name="keel-fit", storage_path=storage),
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            raise _worker_error(exc) from exc
    outcome = result.return_value
    if not isinstance(outcome, dict):
        raise KeelError("Ray Train finished without a model from worker 0.")
    return dict(outcome.pop("files")), outcome


def _ray_trainer(flavor: str) -> Any:
    if flavor == "lightgbm":
        from ray.train.lightgbm import LightGBMTrainer

        return LightGBMTrainer
    try:
        from ray.train.xgboost import XGBoostTrainer
    except ModuleNotFoundError as exc:
        msg = f"model.flavor 'xgboost' needs the 'xgboost' extra ({exc.name} is not installed)."
        raise ConfigError(msg, field="model.flavor") from exc
    return XGBoostTrainer


@contextmanager
def _driver_settings() -> Iterator[None]:
    """Ray Train's driver side, tuned for short fits and without side effects on the caller.

    Ray Train's controller polls its workers every 2 s (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``)
    and each phase (start, report, finish) waits for a poll: measured here, a fit of a few
    seconds took 12 s at 2 s and 7 s at 0.2 s (0.05 s gained nothing more). The variable is
    set for this run unless the user set it; Ray hands it to the controller at ``fit()``.
    ``fit()`` also installs a SIGINT handler that stays after the run (a later Ctrl-C in
    ``keel run`` would reach a dead actor); the previous handler is put back. Creating Ray
    Data's default context warns about deprecated options Ray sets itself: not the user's to
    act on, so deprecation warnings from that one module are ignored.
    """
    import os
    import signal
    import threading
    import warnings

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    ours = _HEALTH_CHECK not in os.environ
    if ours:
        os.environ[_HEALTH_CHECK] = "0.2"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    module=r"ray\.data\.context")  # fmt: skip
            yield
    finally:
        if ours:
            os.environ.pop(_HEALTH_CHECK, None)
        if main:
            signal.signal(signal.SIGINT, previous)


def _worker_error(exc: Exception) -> KeelError:
    """A Keel error carrying the worker's own message, not Ray's wrapper traceback."""
    failures = getattr(exc, "worker_failures", None) or {}
    cause = next(iter(failures.values()), exc)
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(cause).__name__
    if "XGBoostError" in {t.__name__ for t in type(cause).__mro__}:  # as the local trainer says
        return ConfigError(f"model.params rejected by XGBoost: {last}", field="model.params")
    return KeelError(f"data-parallel training failed on a Ray Train worker: {last}")


def _outcome(
    files: Mapping[str, bytes], curves: dict[str, list[float]], best: int, seconds: float
) -> dict[str, Any] | None:
    """What the loop returns: Ray Train hands rank 0's return value to the driver (through
    Ray's object transfer, so it works across nodes without shared storage); others send none."""
    import ray.train

    if ray.train.get_context().get_world_rank() != 0:
        return None
    return {"files": dict(files), "curves": curves, "best_iteration": best, "seconds": seconds}


def _shard(config: Mapping[str, Any]) -> tuple[Any, Any]:
    import ray
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    return ray.get(config["shards"][rank]), ray.get(config["valid"])


def _lightgbm_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """One worker's LightGBM fit on its rows, over the network Ray Train set up."""
    import lightgbm as lgb
    from ray.train.lightgbm import get_network_params

    from keel.train.lightgbm import MODEL_FILE

    started = time.monotonic()
    (x, y, w), valid = _shard(config)
    train_set = lgb.Dataset(x, label=y, weight=w, free_raw_data=True)
    valid_sets, callbacks, evals = [], [], {}  # type: ignore[var-annotated]
    if valid is not None:
        valid_sets.append(lgb.Dataset(valid[0], label=valid[1], reference=train_set))
        callbacks.append(lgb.record_evaluation(evals))
        if config["stopping"]:
            callbacks.append(lgb.early_stopping(config["stopping"], first_metric_only=True,
                                                verbose=False))  # fmt: skip
    booster = lgb.train(
        {**config["native"], **get_network_params()},
        train_set,
        num_boost_round=config["rounds"],
        valid_sets=valid_sets,
        valid_names=["validation"][: len(valid_sets)],
        callbacks=callbacks,
    )
    best = int(booster.best_iteration or booster.current_iteration())
    text = booster.model_to_string(num_iteration=best)
    text = "\n".join(line for line in text.split("\n") if not line.startswith(_NETWORK_PARAMS))
    recorded = evals.get("validation", {})
    names: dict[str, str] = config["names"]
    curves = {keel: [float(v) for v in recorded[n]] for n, keel in names.items() if n in recorded}
    return _outcome({MODEL_FILE: text.encode()}, curves, best, time.monotonic() - started)


def _xgboost_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """One worker's XGBoost fit on its rows, inside the collective Ray Train set up."""
    import xgboost as xgb

    from keel.train.xgboost import MODEL_FILE

    started = time.monotonic()
    (x, y, w), valid = _shard(config)
    names: dict[str, str] = config["names"]
    train = xgb.DMatrix(x, label=y, weight=w, nthread=config["threads"])
    evals, callbacks, recorded = [], [], {}  # type: ignore[var-annotated]
    if valid is not None:
        evals.append((xgb.DMatrix(valid[0], label=valid[1], nthread=config["threads"]),
                      "validation"))  # fmt: skip
        if config["stopping"]:
            callbacks.append(xgb.callback.EarlyStopping(
                rounds=config["stopping"], metric_name=next(iter(names)),
                data_name="validation", maximize=False, save_best=True))  # fmt: skip
    booster = xgb.train(config["native"], train, num_boost_round=config["rounds"], evals=evals,
                        evals_result=recorded, callbacks=callbacks, verbose_eval=False)  # fmt: skip
    history = recorded.get("validation", {})
    curves = {keel: [float(v) for v in history[n]] for n, keel in names.items() if n in history}
    model = {MODEL_FILE: bytes(booster.save_raw(raw_format="ubj"))}
    return _outcome(model, curves, int(booster.num_boosted_rounds()), time.monotonic() - started)


_LOOPS = {"lightgbm": _lightgbm_loop, "xgboost": _xgboost_loop}


def _trainer(
    flavor: str,
    task: str,
    params: Mapping[str, Any],
    seed: int,
    files: Mapping[str, bytes],
    history: Mapping[str, Any],
    k: int,
) -> Trainer:
    """The single-machine trainer class, loaded from the worker's model file."""
    from keel.train import trainer_for

    trainer_class = trainer_for(flavor)
    model = trainer_class.load(files)
    # load() reads only the file; restore what the fit knew, as the local trainer keeps it
    model.task, model.params, model.seed = task, dict(params), seed
    model.history_ = {name: list(values) for name, values in history["curves"].items()}
    model.best_iteration_ = int(history["best_iteration"])
    model.n_classes_ = k  # type: ignore[attr-defined]
    return model
