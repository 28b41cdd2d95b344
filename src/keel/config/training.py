"""keel.yaml ``model:``, ``split:``, ``search:``, ``automl:`` and ``resources:``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from keel.config.base import Frozen

__all__ = [
    "AutoMLConfig",
    "LightGBMParams",
    "ModelConfig",
    "ResourcesConfig",
    "SearchConfig",
    "SearchParam",
    "SplitConfig",
]


class LightGBMParams(Frozen):
    """LightGBM hyper-parameters Keel accepts (scikit-learn names)."""

    n_estimators: int = Field(default=400, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    max_depth: int = -1
    min_child_samples: int = Field(default=20, ge=1)
    subsample: float = Field(default=1.0, gt=0, le=1)
    subsample_freq: int = Field(default=0, ge=0)
    colsample_bytree: float = Field(default=1.0, gt=0, le=1)
    reg_alpha: float = Field(default=0.0, ge=0)
    reg_lambda: float = Field(default=0.0, ge=0)
    min_split_gain: float = Field(default=0.0, ge=0)
    class_weight: Literal["balanced"] | None = None


class ModelConfig(Frozen):
    """The model to train and register.

    ``params`` are checked here for ``lightgbm`` (:class:`LightGBMParams`, with did-you-mean on
    a misspelt key); for the other flavors they are a free mapping the trainer checks
    (``sklearn`` takes ``estimator: module.Class`` plus the estimator's keyword arguments).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    flavor: Literal["lightgbm", "xgboost", "sklearn", "mlp", "auto"] = "lightgbm"
    task: Literal["binary", "multiclass", "regression"] = "binary"
    params: LightGBMParams | dict[str, Any] = Field(default_factory=dict, validate_default=True)
    sample_weight: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    early_stopping_rounds: int | None = Field(default=50, ge=1)
    seed: int = 0

    @field_validator("params", mode="wrap")
    @classmethod
    def _params_for_flavor(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> LightGBMParams | dict[str, Any]:
        if info.data.get("flavor", "lightgbm") == "lightgbm":
            # a ValidationError raised here keeps its locations: model.params.<key>
            return LightGBMParams.model_validate(value)
        if isinstance(value, BaseModel):
            return value.model_dump()
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError("params must be a mapping of names to values")
        return dict(value)

    def param_mapping(self) -> dict[str, Any]:
        """``params`` as a plain mapping, whatever the flavor."""
        params = self.params
        return params.model_dump() if isinstance(params, LightGBMParams) else dict(params)


class SplitConfig(Frozen):
    """How the training data is split for validation (early stopping) and cross-validation.

    ``auto`` is stratified for classification and random for regression; ``time`` puts every
    validation row after every training row by ``column``; ``group`` keeps each value of
    ``column`` on one side. ``folds`` >= 2 adds k-fold cross-validation with per-fold metrics.
    """

    method: Literal["auto", "random", "stratified", "time", "group"] = "auto"
    column: str | None = None
    folds: int | None = Field(default=None, ge=2, le=50)

    @model_validator(mode="after")
    def _column_when_needed(self) -> SplitConfig:
        if self.method in ("time", "group") and not self.column:
            raise ValueError(f"split method '{self.method}' needs 'column'; add column: <name>")
        return self


class SearchParam(Frozen):
    """One dimension of a search space: an int or float range, or categorical choices."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[str | int | float | bool | None] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError(
                    "a categorical parameter takes only 'choices', not low/high/log/step"
                )
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs both 'low' and 'high'")
        if self.choices is not None:
            raise ValueError(f"'choices' is for categorical parameters, not {self.type}")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(
                f"log: true needs low > 0 (got low {self.low:g}); raise low or drop log"
            )
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log: true' cannot be combined; keep one")
        if self.type == "int":
            integral = [v for v in (self.low, self.high, self.step) if v is not None]
            if any(v != int(v) for v in integral):
                raise ValueError("an int parameter needs whole-number low, high and step")
        return self


class SearchConfig(Frozen):
    """Hyper-parameter search with Optuna (runs in the ``tune`` step, before ``train``).

    The budget is ``trials`` completed trials in the study (resumed studies count the trials
    already done) and/or ``timeout_seconds`` of wall time per invocation; with neither, 20 trials.
    ``metric`` defaults per task (binary roc_auc, multiclass log_loss, regression r2).
    """

    trials: int | None = Field(default=None, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    metric: (
        Literal["roc_auc", "pr_auc", "accuracy", "log_loss", "f1", "r2", "rmse", "mae"] | None
    ) = None
    direction: Literal["maximize", "minimize"] | None = None
    workers: int = Field(default=1, ge=1, le=256)
    space: dict[str, SearchParam] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grid_needs_steps(self) -> SearchConfig:
        if self.sampler == "grid":
            floats = [n for n, p in self.space.items() if p.type == "float" and p.step is None]
            if floats:
                raise ValueError(
                    f"sampler: grid needs a finite grid; give float parameter(s) {floats} a "
                    "'step', or make them categorical"
                )
        return self


AutoMLFamily = Literal["lightgbm", "xgboost", "linear", "random_forest", "mlp"]


class AutoMLConfig(Frozen):
    """``model.flavor: auto``: which families compete, and the total wall-time budget."""

    time_budget_seconds: float = Field(default=120.0, gt=0)
    families: list[AutoMLFamily] = Field(default_factory=lambda: list(get_args(AutoMLFamily)))


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


class ResourcesConfig(Frozen):
    """What one trial asks of the executor (Ray): CPUs, GPUs and memory (bytes, or '4GB').

    ``workers`` is the number of Ray Train workers for the final fit of LightGBM / XGBoost
    (with ``executor: ray``): above 1 the training rows are split across that many workers and
    each reserves these cpus / gpus / memory, so one model can use more than one machine.
    """

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)
    memory: int | str | None = None
    workers: int = Field(default=1, ge=1)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and not _MEMORY.match(value):
            raise ValueError(f"memory {value!r} is not a size; write bytes or e.g. '512MB', '4GB'")
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"memory must be positive, got {value}")
        return value

    def memory_bytes(self) -> int | None:
        """``memory`` in bytes (``'4GB'`` is 4 * 1024**3), or None when not set."""
        if self.memory is None or isinstance(self.memory, int):
            return self.memory
        match = _MEMORY.match(self.memory)
        assert match is not None  # checked by the validator
        unit = (match.group(2) or "B").upper()[0]
        scale = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[unit]
        return int(float(match.group(1)) * scale)
