"""LightGBM trainer: the native API, early stopping on the validation set, the text model."""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import ValidationError

from keel.config import LightGBMParams
from keel.errors import ConfigError, NotFittedError
from keel.train.base import (
    OnIteration,
    TrainerBase,
    check_task,
    merge_weights,
    n_classes_of,
    unknown_param,
)

__all__ = ["METRICS", "LightGBMTrainer", "batch_threads", "load_booster", "native_params"]

MODEL_FILE = "model.lgb.txt"
SMALL_BATCH = 64  # rows scored on one thread without the wrapper (the online path)
#: Tree visits (rows x trees) worth a thread of their own in batch scoring: about 2,500 rows
#: of a 200-tree model, ~30 ms of one core. A smaller part is of the order of a scheduler slice:
#: on a busy core its thread may wait longer than it works, and the batch waits for its slowest
#: part (benchmarks/RESULTS.md, "Batch scoring").
WORK_PER_THREAD = 500_000

# scikit-learn style names in keel.yaml -> LightGBM's native parameter names
_NATIVE = {
    "learning_rate": "learning_rate",
    "num_leaves": "num_leaves",
    "max_depth": "max_depth",
    "min_child_samples": "min_data_in_leaf",
    "subsample": "bagging_fraction",
    "subsample_freq": "bagging_freq",
    "colsample_bytree": "feature_fraction",
    "reg_alpha": "lambda_l1",
    "reg_lambda": "lambda_l2",
    "min_split_gain": "min_gain_to_split",
}
# LightGBM's metric names -> Keel's (HISTORY_METRICS), per task; the first stops early
METRICS = {
    "binary": {"binary_logloss": "log_loss", "auc": "roc_auc"},
    "multiclass": {"multi_logloss": "log_loss", "multi_error": "error"},
    "regression": {"rmse": "rmse", "l1": "mae"},
}
_OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}


def check_params(params: Mapping[str, Any]) -> LightGBMParams:
    """``params`` validated as :class:`LightGBMParams`; a ConfigError names a bad key."""
    try:
        return LightGBMParams.model_validate(dict(params))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "params"
        if error["type"] == "extra_forbidden":
            raise unknown_param("lightgbm", name, list(LightGBMParams.model_fields)) from exc
        msg = f"model.params.{name}: {error['msg']} (got {error.get('input')!r})."
        raise ConfigError(msg, field=f"model.params.{name}") from exc


class LightGBMTrainer(TrainerBase):
    """Gradient-boosted trees with LightGBM; saved as LightGBM's text model (no pickle).

    ``params`` takes the scikit-learn style names of :class:`keel.config.LightGBMParams`;
    ``class_weight: balanced`` weighs classes equally.
    """

    flavor: ClassVar[str] = "lightgbm"
    model_file: ClassVar[str] = MODEL_FILE

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        x_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        early_stopping_rounds: int | None = None,
        on_iteration: OnIteration | None = None,
    ) -> Self:
        """Boost up to ``n_estimators`` rounds; keep the best one when stopping early."""
        import lightgbm as lgb

        task = check_task(self.task)
        params = check_params(self.params)
        k = n_classes_of(task, y, y_valid)
        names = METRICS[task]
        weights = merge_weights(sample_weight, params.class_weight, y, task, k)
        train_set = lgb.Dataset(x, label=y, weight=weights, free_raw_data=True)
        callbacks: list[Any] = []
        valid_sets: list[Any] = []
        evals: dict[str, Any] = {}
        if x_valid is not None and y_valid is not None:
            valid_sets.append(lgb.Dataset(x_valid, label=y_valid, reference=train_set))
            callbacks.append(lgb.record_evaluation(evals))
            if early_stopping_rounds:
                callbacks.append(
                    lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)
                )
        if on_iteration is not None:
            callbacks.append(_reporter(on_iteration, names))
        booster = lgb.train(
            native_params(task, params, k, self.seed),
            train_set,
            num_boost_round=params.n_estimators,
            valid_sets=valid_sets,
            valid_names=["validation"][: len(valid_sets)],
            callbacks=callbacks,
        )
        best = booster.best_iteration or booster.current_iteration()
        recorded = evals.get("validation", {})
        self.history_ = {
            keel: [float(v) for v in recorded[lgb_name]]
            for lgb_name, keel in names.items()
            if lgb_name in recorded
        }
        self.best_iteration_ = int(best)
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self.n_classes_ = k
        self.facts_ = {
            "train_rows": len(y),
            "validation_rows": 0 if y_valid is None else len(y_valid),
            "lightgbm_version": lgb.__version__,
        }
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(positive), class probabilities (n, k), or values, by task.

        Up to ``SMALL_BATCH`` rows (a request, a served batch) are scored on the calling
        thread through LightGBM's C API with a prediction configuration made once per booster
        and thread (:class:`_Fast`), equal to ``Booster.predict``; larger ones go through
        ``Booster.predict`` on :func:`batch_threads` threads (the same numbers on any count).
        """
        booster = self._booster()
        if 0 < len(x) <= SMALL_BATCH and np.ndim(x) == 2:
            fast = _fast(booster, int(np.shape(x)[1]))
            if fast is not None:
                return fast.predict(x)
        threads = batch_threads(len(x), int(booster.num_trees()))
        return np.asarray(booster.predict(x, num_threads=threads), dtype=np.float64)

    @property
    def one_row_on_caller(self) -> bool:
        """Whether one row is scored on the calling thread alone (the single-row path, one
        OpenMP thread): a latency measure needs no thread pinning around it."""
        booster = self._booster()
        return _fast(booster, int(booster.num_feature())) is not None

    def save(self) -> dict[str, bytes]:
        """``{"model.lgb.txt": LightGBM's text model}``, truncated at the kept iteration."""
        return {MODEL_FILE: self._booster().model_to_string().encode()}

    @classmethod
    def load(cls, files: Mapping[str, bytes]) -> Self:
        """A trainer from its text model; the task is read from the model's objective."""
        booster = load_booster(files[MODEL_FILE].decode())
        objective = _objective_line(booster)
        task = next((t for t, o in _OBJECTIVES.items() if objective.startswith(o)), "regression")
        trainer = cls(task=task, params={}, seed=0)
        trainer.booster_ = booster
        multi = task == "multiclass"
        trainer.n_classes_ = booster.num_model_per_iteration() if multi else n_classes_of(task)
        trainer.best_iteration_ = booster.current_iteration()
        return trainer

    def _booster(self) -> Any:
        booster = getattr(self, "booster_", None)
        if booster is None:
            raise NotFittedError("this LightGBM trainer is not fitted; call fit() or load().")
        return booster


class _Fast:
    """One booster's online predictor for one thread: a single-row fast configuration
    (``LGBM_BoosterPredictForMatSingleRowFastInit``, parsed once, one OpenMP thread) and, for
    a few rows, ``LGBM_BoosterPredictForMat`` with a fixed parameter string, skipping the
    Python predictor ``Booster.predict`` builds on every call. Not shared between threads."""

    def __init__(self, booster: Any, features: int) -> None:
        import ctypes

        from lightgbm import basic

        self._lib = getattr(basic, "_LIB")  # noqa: B009 (not in lightgbm's exported names)
        self._ctypes, self._check = ctypes, basic._safe_call
        if features != booster.num_feature():  # Booster.predict names the mismatch
            raise ValueError(f"{features} features for a model of {booster.num_feature()}")
        self.features = features
        self._booster = booster._handle  # the booster outlives this (a weak key holds it)
        self._iterations = ctypes.c_int(booster.best_iteration)  # as Booster.predict passes
        self._params = basic._c_str("num_threads=1")
        self.per_row = booster.num_model_per_iteration()
        self.handle = ctypes.c_void_p()
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                self._booster, ctypes.c_int(basic._C_API_PREDICT_NORMAL), ctypes.c_int(0),
                self._iterations, ctypes.c_int(basic._C_API_DTYPE_FLOAT64),
                ctypes.c_int32(features), self._params, ctypes.byref(self.handle),
            )
        )  # fmt: skip
        self._float64 = ctypes.c_int(basic._C_API_DTYPE_FLOAT64)
        self._row_major = ctypes.c_int(basic._C_API_IS_ROW_MAJOR)
        self._normal = ctypes.c_int(basic._C_API_PREDICT_NORMAL)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``Booster.predict(x)`` for a few rows: shape (n,) or (n, classes)."""
        ctypes = self._ctypes
        data = np.ascontiguousarray(x, dtype=np.float64)
        rows = data.shape[0]
        out = np.empty(rows * self.per_row, dtype=np.float64)
        length = ctypes.c_int64(0)
        # the buffers' addresses as void pointers: ``ndarray.ctypes.data_as`` builds a helper
        # object per call (~3 us of a single-row request's ~30 us in the model)
        pointer = ctypes.c_void_p(data.__array_interface__["data"][0])
        into = ctypes.c_void_p(out.__array_interface__["data"][0])
        if rows == 1:
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self.handle, pointer, ctypes.byref(length), into
                )
            )
        else:
            self._check(
                self._lib.LGBM_BoosterPredictForMat(
                    self._booster, pointer, self._float64, ctypes.c_int32(rows),
                    ctypes.c_int32(self.features), self._row_major, self._normal,
                    ctypes.c_int(0), self._iterations, self._params, ctypes.byref(length), into,
                )
            )  # fmt: skip
        if length.value != out.size:
            raise ValueError(f"LightGBM wrote {length.value} predictions for {out.size}")
        return out if self.per_row == 1 else out.reshape(rows, self.per_row)

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle is not None and handle.value is not None:
            self._lib.LGBM_FastConfigFree(handle)


_LOCAL = threading.local()  # per thread: booster -> its _Fast (a fast handle is not shared)


def _fast(booster: Any, features: int) -> _Fast | None:
    """This thread's fast predictor for ``booster``, made once; None when this LightGBM build
    lacks the C entry points or refuses the shape (``Booster.predict`` then answers, or says
    what is wrong)."""
    cache: weakref.WeakKeyDictionary[Any, _Fast] | None = getattr(_LOCAL, "boosters", None)
    if cache is None:
        cache = _LOCAL.boosters = weakref.WeakKeyDictionary()
    fast = cache.get(booster)
    if fast is None or fast.features != features:
        from lightgbm.basic import LightGBMError

        try:
            fast = cache[booster] = _Fast(booster, features)
        except (AttributeError, OSError, ValueError, LightGBMError):
            return None
    return fast


def batch_threads(rows: int, trees: int) -> int:
    """The threads ``Booster.predict`` scores ``rows`` rows of a ``trees``-tree model on.

    One per :data:`WORK_PER_THREAD` tree visits, at least one, at most the cores this process
    may run on (its CPU affinity) and OpenMP's own limit (``OMP_NUM_THREADS``, which pins a
    server's workers to one): a small batch stays on the calling thread's core.

    Example:
        >>> batch_threads(1_000, 200), batch_threads(1_000_000, 200) == _cores()
        (1, True)
    """
    return max(1, min(rows * max(trees, 1) // WORK_PER_THREAD, _cores()))


def _cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        cores = os.cpu_count() or 1
    limit = _openmp_limit()
    return max(1, min(cores, limit) if limit else cores)


def _openmp_limit() -> int | None:
    """The calling thread's OpenMP thread count, which LightGBM uses unless told: the cores,
    ``OMP_NUM_THREADS``, or a ``threadpoolctl`` limit around the call (tuning trials, a server's
    worker threads); None when no OpenMP runtime can be asked."""
    get = _omp_get_max_threads()
    return None if get is None else int(get())


@functools.cache
def _omp_get_max_threads() -> Any:
    import ctypes

    for name in ("libgomp.so.1", "libomp.so", "libomp.dylib", "vcomp140.dll"):
        try:
            return ctypes.CDLL(name).omp_get_max_threads
        except (OSError, AttributeError):
            continue
    return None


def native_params(task: str, params: LightGBMParams, k: int, seed: int) -> dict[str, Any]:
    """LightGBM's own parameters: objective, metrics (the first stops early), determinism."""
    native: dict[str, Any] = {
        "objective": _OBJECTIVES[task],
        "metric": list(METRICS[task]),
        "first_metric_only": True,
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 0,
    }
    if task == "multiclass":
        native["num_class"] = k
    for name, native_name in _NATIVE.items():
        native[native_name] = getattr(params, name)
    return native


def load_booster(text: str) -> Any:
    """A LightGBM Booster from its text model (no pickle)."""
    import lightgbm as lgb

    return lgb.Booster(model_str=text)


def _objective_line(booster: Any) -> str:
    for line in booster.model_to_string().splitlines()[:20]:
        if line.startswith("objective="):
            return str(line.split("=", 1)[1])
    return ""


def _reporter(on_iteration: OnIteration, names: Mapping[str, str]) -> Any:
    def report(env: Any) -> None:
        values = {
            names[metric]: float(value)
            for _, metric, value, _ in env.evaluation_result_list
            if metric in names
        }
        on_iteration(env.iteration + 1, values)

    # run after record_evaluation (order 20) and before early stopping (order 30) raises
    report.order = 25  # type: ignore[attr-defined]
    return report
