"""``model.flavor: ridge``: L2-regularised linear models in NumPy, saved as JSON.

Regression is ridge regression (closed form); binary and multiclass are L2 logistic / softmax
regression fitted by a fixed number of full-batch gradient steps, so the same data and seed give
the same weights. Features are standardised with the training mean and scale, which are saved
with the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
import orjson

from keel.train.base import OnIteration, TrainerBase, check_task, n_classes_of, score, unknown_param

__all__ = ["RidgeTrainer"]

_DEFAULTS: dict[str, Any] = {"alpha": 1.0, "steps": 300, "learning_rate": 0.5}


class RidgeTrainer(TrainerBase):
    """A linear model per task kind; ``params``: ``alpha`` (L2), ``steps``, ``learning_rate``."""

    flavor: ClassVar[str] = "ridge"
    model_file: ClassVar[str] = "ridge.json"

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
        kind = check_task(self.task)
        for name in self.params:
            if name not in _DEFAULTS:
                raise unknown_param(self.flavor, name, list(_DEFAULTS))
        params = {**_DEFAULTS, **self.params}
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        z = (x - self.mean_) / self.scale_
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        if kind == "regression":
            self.coef_, self.intercept_ = _ridge(z, y.astype(np.float64), weights, params["alpha"])
        else:
            k = n_classes_of(kind, y, y_valid)
            self.coef_, self.intercept_ = _softmax(z, y.astype(np.int64), weights, k, params)
        self.kind_ = kind
        if x_valid is not None and y_valid is not None:
            metrics = score(kind, y_valid, self.predict(x_valid))
            self.history_ = {name: [value] for name, value in metrics.items()}
            self.best_iteration_ = 1
            if on_iteration is not None:
                on_iteration(1, metrics)
        self.facts_ = {"rows": len(y), "features": int(x.shape[1])}
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        raw = z @ self.coef_ + self.intercept_
        if self.kind_ == "regression":
            return np.asarray(raw[:, 0], dtype=np.float64)
        proba = _softmax_rows(raw)
        return np.asarray(proba[:, 1] if self.kind_ == "binary" else proba, dtype=np.float64)

    def save(self) -> dict[str, bytes]:
        state = {
            "format": "keel-example-ridge/1",
            "task": self.kind_,
            "params": dict(self.params),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_.tolist(),
        }
        return {self.model_file: orjson.dumps(state, option=orjson.OPT_SORT_KEYS)}

    @classmethod
    def load(cls, files: Mapping[str, bytes]) -> Self:
        state = orjson.loads(files[cls.model_file])
        trainer = cls(task=state["task"], params=state["params"])
        trainer.kind_ = state["task"]
        trainer.mean_ = np.asarray(state["mean"], dtype=np.float64)
        trainer.scale_ = np.asarray(state["scale"], dtype=np.float64)
        trainer.coef_ = np.asarray(state["coef"], dtype=np.float64)
        trainer.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        return trainer


def _ridge(
    z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    design = np.hstack([z, np.ones((len(z), 1))])
    penalty = alpha * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    gram = design.T @ (design * weights[:, None]) + penalty
    solution = np.linalg.solve(gram, design.T @ (weights * y))
    return solution[:-1, None], solution[-1:]


def _softmax(
    z: np.ndarray, y: np.ndarray, weights: np.ndarray, k: int, params: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    onehot = np.eye(k)[y]
    coef, intercept = np.zeros((z.shape[1], k)), np.zeros(k)
    share = weights / weights.sum()
    for _ in range(int(params["steps"])):
        error = (_softmax_rows(z @ coef + intercept) - onehot) * share[:, None]
        coef -= params["learning_rate"] * (z.T @ error + params["alpha"] / len(z) * coef)
        intercept -= params["learning_rate"] * error.sum(axis=0)
    return coef, intercept


def _softmax_rows(raw: np.ndarray) -> np.ndarray:
    shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
