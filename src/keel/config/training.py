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
from pydantic_core import PydanticCustomError

from keel.config.base import Frozen
from keel.plugins import TASKS, TRAINERS

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

    n_estimators: int = Field(
        default=400,
        ge=1,
        description="Boosting rounds at most (early stopping may use fewer).",
    )
    learning_rate: float = Field(
        default=0.05,
        gt=0,
        description="Shrinkage of each tree's contribution.",
    )
    num_leaves: int = Field(
        default=31,
        ge=2,
        description="Leaves per tree at most: the main capacity knob.",
    )
    max_depth: int = Field(
        default=-1,
        description="Depth limit of each tree (-1: none).",
    )
    min_child_samples: int = Field(
        default=20,
        ge=1,
        description="Rows a leaf needs at least.",
    )
    subsample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of rows each bagging round uses (with subsample_freq > 0).",
    )
    subsample_freq: int = Field(
        default=0,
        ge=0,
        description="Bag every this many rounds (0: no bagging).",
    )
    colsample_bytree: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of features each tree sees.",
    )
    reg_alpha: float = Field(
        default=0.0,
        ge=0,
        description="L1 regularisation of leaf values.",
    )
    reg_lambda: float = Field(
        default=0.0,
        ge=0,
        description="L2 regularisation of leaf values.",
    )
    min_split_gain: float = Field(
        default=0.0,
        ge=0,
        description="Loss reduction a split needs at least.",
    )
    class_weight: Literal["balanced"] | None = Field(
        default=None,
        description="balanced: weight classes inversely to their frequency (classification).",
    )


class ModelConfig(Frozen):
    """The model to train and register.

    ``params`` are checked here for ``lightgbm`` (:class:`LightGBMParams`, with did-you-mean on
    a misspelt key); for the other flavors they are a free mapping the trainer checks
    (``sklearn`` takes ``estimator: module.Class`` plus the estimator's keyword arguments).
    """

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The registered model's name (NAME in NAME@VERSION and NAME@ALIAS).",
    )
    flavor: str = Field(
        default="lightgbm",
        description="The trainer: lightgbm, xgboost (the xgboost extra), sklearn, mlp (the torch "
        "extra), auto (model families compete, see automl), or a flavor an installed plug-in "
        "registers (entry-point group keel.trainers).",
    )
    task: str = Field(
        default="binary",
        description="binary (two classes), multiclass (three or more), regression (a number), or "
        "a task an installed plug-in registers (entry-point group keel.tasks).",
    )
    params: LightGBMParams | dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="The trainer's hyper-parameters: for lightgbm the keys of model.params below "
        "(checked); for the other flavors a mapping their trainer checks.",
    )
    sample_weight: str | None = Field(
        default=None,
        description="A numeric column that weights each training row (list it in data.drop too).",
    )
    validation_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=0.5,
        description="Share of the training rows held out for early stopping (split as "
        "split.method says).",
    )
    early_stopping_rounds: int | None = Field(
        default=50,
        ge=1,
        description="Stop when the validation loss has not improved for this many rounds (null: "
        "never).",
    )
    seed: int = Field(
        default=0,
        description="Seeds training: the same data, config and seed give the same model bytes.",
    )

    @field_validator("flavor")
    @classmethod
    def _registered_flavor(cls, value: str) -> str:
        if value != "auto" and value not in TRAINERS:
            raise PydanticCustomError("unregistered", TRAINERS.unknown(value, also=("auto",)))
        return value

    @field_validator("task")
    @classmethod
    def _registered_task(cls, value: str) -> str:
        if value not in TASKS:
            raise PydanticCustomError("unregistered", TASKS.unknown(value))
        return value

    @field_validator("params", mode="wrap")
    @classmethod
    def _params_for_flavor(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> LightGBMParams | dict[str, Any]:
        if "flavor" not in info.data:  # an unknown flavor: its error says it all
            return dict(value) if isinstance(value, Mapping) else {}
        if info.data["flavor"] == "lightgbm":
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
    """How the training data is split: a held-out test split when ``data.test`` is not set,
    then validation (early stopping) and cross-validation.

    ``auto`` is stratified for classification and random for regression; ``time`` puts every
    held-out row after every training row by ``column``; ``group`` keeps each value of
    ``column`` on one side. ``folds`` >= 2 adds k-fold cross-validation with per-fold metrics.
    The same method makes the test split (``test_fraction`` of the rows, seeded by ``seed``,
    recorded with the ``split`` step's run) and, from the rest, the validation split.
    """

    method: Literal["auto", "random", "stratified", "time", "group"] = Field(
        default="auto",
        description="auto (stratified on the target for classification, random for "
        "regression), random, stratified, time (latest rows held out, by column) or group "
        "(each value of column on one side). Used for the test split and the validation split.",
    )
    column: str | None = Field(
        default=None,
        description="The timestamp column (method: time) or group column (method: group).",
    )
    folds: int | None = Field(
        default=None,
        ge=2,
        le=50,
        description="k-fold cross-validation on the training rows before the final fit.",
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Without data.test: the share of the training data held out as the test "
        "split (of rows; of groups with method: group; the latest rows with method: time).",
    )
    seed: int = Field(
        default=0,
        description="Seeds the test split: the same seed and data give the same test rows.",
    )

    @model_validator(mode="after")
    def _column_when_needed(self) -> SplitConfig:
        if self.method in ("time", "group") and not self.column:
            raise ValueError(f"split method '{self.method}' needs 'column'; add column: <name>")
        return self


class SearchParam(Frozen):
    """One dimension of a search space: an int or float range, or categorical choices."""

    type: Literal["int", "float", "categorical"] = Field(
        description="int or float (a range from low to high) or categorical (choices).",
    )
    low: float | None = Field(
        default=None,
        description="The range's lower end (int and float).",
    )
    high: float | None = Field(
        default=None,
        description="The range's upper end (int and float).",
    )
    log: bool = Field(
        default=False,
        description="Sample the range on a log scale (needs low > 0).",
    )
    step: float | None = Field(
        default=None,
        gt=0,
        description="Only values low + k * step (needed for float parameters with sampler: grid).",
    )
    choices: list[str | int | float | bool | None] | None = Field(
        default=None,
        description="The values to choose from (categorical).",
    )

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

    trials: int | None = Field(
        default=None,
        ge=1,
        description="Completed trials the study should have (a resumed study counts those done); "
        "with neither this nor timeout_seconds, 20.",
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Wall-time budget of one keel run's search.",
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        default="tpe",
        description="How trials pick parameters: tpe (Bayesian), random, or grid (every "
        "combination).",
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        default="median",
        description="Stops unpromising trials early from their validation curve (not on Ray).",
    )
    metric: (
        Literal["roc_auc", "pr_auc", "accuracy", "log_loss", "f1", "r2", "rmse", "mae"] | None
    ) = Field(
        default=None,
        description="The validation metric to optimise; default per task: binary roc_auc, "
        "multiclass log_loss, regression r2.",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None,
        description="Whether the metric is maximised or minimised; default: from the metric.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Trials run at a time (local processes, or Ray tasks with executor: ray).",
    )
    space: dict[str, SearchParam] = Field(
        default_factory=dict,
        description="Parameter name to its range or choices, e.g. num_leaves: {type: int, low: 8, "
        "high: 256, log: true}.",
    )

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

    time_budget_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Wall time for the whole AutoML search.",
    )
    families: list[AutoMLFamily] = Field(
        default_factory=lambda: list(get_args(AutoMLFamily)),
        description="The model families that compete.",
    )


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


class ResourcesConfig(Frozen):
    """What one trial asks of the executor (Ray): CPUs, GPUs and memory (bytes, or '4GB').

    ``workers`` is the number of Ray Train workers for the final fit of LightGBM / XGBoost
    (with ``executor: ray``): above 1 the training rows are split across that many workers and
    each reserves these cpus / gpus / memory, so one model can use more than one machine.
    """

    cpus: float = Field(
        default=1.0,
        gt=0,
        description="CPUs per trial; also the threads a local fit trains with, and the CPUs "
        "all pipeline steps running at once may hold with executor: local.",
    )
    gpus: float = Field(
        default=0.0,
        ge=0,
        description="GPUs per trial (Ray).",
    )
    memory: int | str | None = Field(
        default=None,
        description="Memory per trial (Ray): bytes, or a size such as 512MB or 4GB.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Ray Train workers for the final LightGBM/XGBoost fit with executor: ray "
        "(rows split across them).",
    )

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
