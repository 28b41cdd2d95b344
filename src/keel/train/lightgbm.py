"""LightGBM trainer: native API, early stopping on a stratified validation split, text model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from keel.config import ModelConfig

__all__ = ["load_booster", "train_lightgbm"]

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


def train_lightgbm(
    x: np.ndarray,
    y: np.ndarray,
    config: ModelConfig,
    *,
    on_iteration: Callable[[int, int], None] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Train a binary LightGBM model with early stopping on a held-out validation split.

    Args:
        x: Feature matrix (rows, features), float64.
        y: Labels, 0/1.
        config: The model section of keel.yaml.
        on_iteration: Called with (iteration, total) after each boosting round (progress bars).

    Returns:
        The model as LightGBM's text format, and training facts (best iteration, validation
        AUC and log loss, rows used).
    """
    import lightgbm as lgb
    from sklearn.model_selection import train_test_split

    params = config.params
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=config.validation_fraction, random_state=config.seed, stratify=y
    )
    native: dict[str, Any] = {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "verbosity": -1,
        "seed": config.seed,
        "deterministic": True,
        "num_threads": 0,
    }
    for name, native_name in _NATIVE.items():
        native[native_name] = getattr(params, name)
    weights = _balanced_weights(y_fit) if params.class_weight == "balanced" else None
    train_set = lgb.Dataset(x_fit, label=y_fit, weight=weights, free_raw_data=True)
    valid_set = lgb.Dataset(x_val, label=y_val, reference=train_set)
    callbacks: list[Any] = []
    if config.early_stopping_rounds:
        callbacks.append(lgb.early_stopping(config.early_stopping_rounds, verbose=False))
    if on_iteration is not None:

        def report(env: Any) -> None:
            on_iteration(env.iteration + 1, env.end_iteration)

        callbacks.append(report)
    evals: dict[str, Any] = {}
    callbacks.append(lgb.record_evaluation(evals))
    booster = lgb.train(
        native,
        train_set,
        num_boost_round=params.n_estimators,
        valid_sets=[valid_set],
        valid_names=["validation"],
        callbacks=callbacks,
    )
    best = booster.best_iteration or booster.current_iteration()
    history = evals.get("validation", {})
    facts = {
        "best_iteration": int(best),
        "validation_auc": float(history["auc"][best - 1]) if "auc" in history else None,
        "validation_logloss": float(history["binary_logloss"][best - 1])
        if "binary_logloss" in history
        else None,
        "train_rows": len(y_fit),
        "validation_rows": len(y_val),
        "lightgbm_version": lgb.__version__,
    }
    return booster.model_to_string(num_iteration=best), facts


def load_booster(text: str) -> Any:
    """A LightGBM Booster from its text model (no pickle)."""
    import lightgbm as lgb

    return lgb.Booster(model_str=text)


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y.astype(np.int64), minlength=2).astype(np.float64)
    per_class = len(y) / (2.0 * np.maximum(counts, 1.0))
    return np.asarray(per_class[y.astype(np.int64)], dtype=np.float64)
