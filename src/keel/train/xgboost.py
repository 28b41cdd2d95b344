"""XGBoost trainer (extra ``xgboost``): the native API, early stopping, UBJSON model file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np

from keel.errors import ConfigError, NotFittedError
from keel.train.base import (
    OnIteration,
    TrainerBase,
    check_task,
    merge_weights,
    n_classes_of,
    unknown_param,
)

__all__ = ["METRICS", "XGBoostTrainer", "native_params"]

MODEL_FILE = "model.xgb.ubj"

#: scikit-learn style names Keel accepts -> XGBoost's native names, with defaults
_NATIVE: dict[str, tuple[str, Any]] = {
    "learning_rate": ("eta", 0.1),
    "max_depth": ("max_depth", 6),
    "min_child_weight": ("min_child_weight", 1.0),
    "subsample": ("subsample", 1.0),
    "colsample_bytree": ("colsample_bytree", 1.0),
    "reg_alpha": ("alpha", 0.0),
    "reg_lambda": ("lambda", 1.0),
    "gamma": ("gamma", 0.0),
    "max_bin": ("max_bin", 256),
    "tree_method": ("tree_method", "hist"),
    "grow_policy": ("grow_policy", "depthwise"),
    "max_leaves": ("max_leaves", 0),
}
_OWN = {"n_estimators": 400, "class_weight": None}
# XGBoost's metric names -> Keel's, per task; the first stops early
METRICS = {
    "binary": {"logloss": "log_loss", "auc": "roc_auc"},
    "multiclass": {"mlogloss": "log_loss", "merror": "error"},
    "regression": {"rmse": "rmse", "mae": "mae"},
}
_OBJECTIVES = {
    "binary": "binary:logistic",
    "multiclass": "multi:softprob",
    "regression": "reg:squarederror",
}


class XGBoostTrainer(TrainerBase):
    """Gradient-boosted trees with XGBoost, saved as UBJSON (XGBoost's own safe format).

    ``params``: ``n_estimators``, ``class_weight: balanced`` and the scikit-learn style names
    in ``_NATIVE`` (``learning_rate``, ``max_depth``, ``subsample``...).
    """

    flavor: ClassVar[str] = "xgboost"
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
        import xgboost as xgb

        task = check_task(self.task)
        k = n_classes_of(task, y, y_valid)
        params = _check(self.params)
        names = METRICS[task]
        native = native_params(task, params, k, self.seed)
        weights = merge_weights(sample_weight, params["class_weight"], y, task, k)
        train = xgb.DMatrix(x, label=y, weight=weights)
        evals: list[Any] = []
        callbacks: list[Any] = []
        recorded: dict[str, Any] = {}
        if x_valid is not None and y_valid is not None:
            evals.append((xgb.DMatrix(x_valid, label=y_valid), "validation"))
            if early_stopping_rounds:
                first = next(iter(names))
                callbacks.append(
                    xgb.callback.EarlyStopping(
                        rounds=early_stopping_rounds,
                        metric_name=first,
                        data_name="validation",
                        maximize=False,
                        save_best=True,
                    )
                )
        if on_iteration is not None:
            callbacks.insert(0, _reporter(on_iteration, names))
        try:
            booster = xgb.train(
                native,
                train,
                num_boost_round=int(params["n_estimators"]),
                evals=evals,
                evals_result=recorded,
                callbacks=callbacks,
                verbose_eval=False,
            )
        except xgb.core.XGBoostError as exc:
            raise ConfigError(
                f"model.params rejected by XGBoost: {exc}", field="model.params"
            ) from exc
        history = recorded.get("validation", {})
        self.history_ = {
            keel: [float(v) for v in history[xgb_name]]
            for xgb_name, keel in names.items()
            if xgb_name in history
        }
        self.best_iteration_ = int(booster.num_boosted_rounds())
        self.booster_ = booster
        self.n_classes_ = k
        self.facts_ = {
            "train_rows": len(y),
            "validation_rows": 0 if y_valid is None else len(y_valid),
            "xgboost_version": xgb.__version__,
        }
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(positive), class probabilities (n, k), or values, by task."""
        import xgboost as xgb

        booster = getattr(self, "booster_", None)
        if booster is None:
            raise NotFittedError("this XGBoost trainer is not fitted; call fit() or load().")
        return np.asarray(booster.predict(xgb.DMatrix(x)), dtype=np.float64)

    def save(self) -> dict[str, bytes]:
        """``{"model.xgb.ubj": the booster as UBJSON}`` (kept iterations only)."""
        booster = getattr(self, "booster_", None)
        if booster is None:
            raise NotFittedError("this XGBoost trainer is not fitted; nothing to save.")
        return {MODEL_FILE: bytes(booster.save_raw(raw_format="ubj"))}

    @classmethod
    def load(cls, files: Mapping[str, bytes]) -> Self:
        """A trainer from its UBJSON model; the task is read from the saved objective."""
        import json

        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(files[MODEL_FILE]))
        learner = json.loads(booster.save_config())["learner"]
        objective = learner["objective"]["name"]
        task = next(t for t, o in _OBJECTIVES.items() if o == objective)
        trainer = cls(task=task, params={}, seed=0)
        trainer.booster_ = booster
        classes = int(learner["learner_model_param"]["num_class"])
        trainer.n_classes_ = classes if task == "multiclass" else n_classes_of(task)
        trainer.best_iteration_ = int(booster.num_boosted_rounds())
        return trainer


def _check(given: Mapping[str, Any]) -> dict[str, Any]:
    """Keel's defaults overlaid with ``given``; a ConfigError names an unknown key."""
    params = {**_OWN, **{name: default for name, (_, default) in _NATIVE.items()}}
    for name, value in given.items():
        if name not in params:
            raise unknown_param("xgboost", name, list(params))
        params[name] = value
    return params


def native_params(task: str, params: Mapping[str, Any], k: int, seed: int) -> dict[str, Any]:
    """XGBoost's own parameters: objective, metrics (the first stops early), seed."""
    native: dict[str, Any] = {
        "objective": _OBJECTIVES[task],
        "eval_metric": list(METRICS[task]),
        "seed": seed,
        "nthread": 0,
        "verbosity": 0,
    }
    if task == "multiclass":
        native["num_class"] = k
    native.update({_NATIVE[n][0]: params[n] for n in _NATIVE})
    return native


def _reporter(on_iteration: OnIteration, names: Mapping[str, str]) -> Any:
    """A callback forwarding each round's validation metrics to ``on_iteration``."""
    import xgboost as xgb

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            latest = evals_log.get("validation", {})
            on_iteration(
                epoch + 1, {names[m]: float(v[-1]) for m, v in latest.items() if m in names}
            )
            return False

    return Report()
