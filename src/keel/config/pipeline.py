"""The ``pipeline:`` section: custom steps among Keel's own, how inputs are wired, and how
steps run: retries with backoff and the resources each step holds."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from keel.config.base import Frozen

__all__ = ["BackoffConfig", "CustomStepConfig", "PipelineConfig", "StepResourcesConfig"]

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


_MAX_RETRIES = 20


class StepResourcesConfig(Frozen):
    """What one step holds while it runs; the executor starts it only when that fits."""

    cpus: float | None = Field(
        default=None, gt=0, description="CPUs (default: what the step declares, else 1)."
    )
    memory: int | str | None = Field(
        default=None, description="Memory: bytes, or a size such as 512MB or 4GB."
    )
    gpus: float | None = Field(default=None, ge=0, description="GPUs (Ray).")

    def declared(self) -> dict[str, Any]:
        """The keys set here."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class BackoffConfig(Frozen):
    """The wait before retry n (1, 2, ...): ``min(cap, base * factor ** (n - 1))`` seconds."""

    base: float = Field(default=1.0, ge=0, description="Seconds before the first retry.")
    factor: float = Field(default=2.0, ge=1, description="Each wait is this many times longer.")
    cap: float = Field(default=60.0, ge=0, description="The longest wait, in seconds.")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 is the first)."""
        return float(min(self.cap, self.base * self.factor ** max(retry - 1, 0)))


class CustomStepConfig(Frozen):
    """One custom step: a ``@keel.step`` function of the project's."""

    function: str = Field(
        description="The step function as 'module:function' (a @keel.step function; modules "
        "in the project directory import as they do for features.custom).",
    )
    name: str | None = Field(
        default=None, description="The step's name in runs and messages (default: the one "
        "@keel.step gave it, the function's name).",
    )  # fmt: skip
    after: list[str] = Field(
        default_factory=list,
        description="Steps it runs after (e.g. [features]): it is placed right after them, so "
        "the steps that follow read what it writes. Default: at the end of the pipeline.",
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="Its input parameter -> the pipeline artifact it reads, when the names "
        "differ (e.g. {table: train_snapshot}).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Values the step reads as ctx.params (part of its cache key).",
    )

    retries: int | None = Field(
        default=None, ge=0, le=_MAX_RETRIES,
        description="Attempts after a transient failure (default: pipeline.retries).",
    )  # fmt: skip
    resources: StepResourcesConfig | None = Field(
        default=None, description="What the step holds while it runs (default: 1 CPU)."
    )

    @field_validator("function")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not _IMPORT_PATH.match(value):
            raise ValueError(f"'{value}' is not 'module:function' (e.g. 'my_steps:add_ratio')")
        return value


class PipelineConfig(Frozen):
    """Custom steps and wiring; Keel's own steps come from the rest of keel.yaml."""

    steps: list[CustomStepConfig] = Field(
        default_factory=list,
        description="Custom steps, each placed after the steps it names; checked with Keel's "
        "own as one graph before anything runs.",
    )
    wire: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Rewire a step's inputs: step -> {input: artifact}, e.g. {train: "
        "{train_snapshot: enriched}} trains on a custom step's output.",
    )
    retries: dict[str, int] = Field(
        default_factory=dict,
        description="Attempts after a transient failure (not a config or data error): "
        "'default' for every step and per step by name, e.g. {default: 0, train: 2}.",
    )
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig,
        description="Waits between attempts: exponential from base seconds, capped.",
    )
    resources: dict[str, StepResourcesConfig] = Field(
        default_factory=dict,
        description="Per step name, what it holds while it runs (cpus, memory, gpus), e.g. "
        "{train: {cpus: 2}}; steps run in parallel while the sum fits resources.cpus.",
    )

    @field_validator("retries")
    @classmethod
    def _retry_counts(cls, value: dict[str, int]) -> dict[str, int]:
        for name, count in value.items():
            if not 0 <= count <= _MAX_RETRIES:
                raise ValueError(f"retries.{name} is {count}; give 0 to {_MAX_RETRIES}")
        return value

    def retries_of(self, step: str, declared: int | None) -> int:
        """A step's retries: its own entry here, else what it declares, else ``default``."""
        if step in self.retries:
            return self.retries[step]
        return declared if declared is not None else self.retries.get("default", 0)
