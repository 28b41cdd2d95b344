"""The ``pipeline:`` section: custom steps among Keel's own, and how inputs are wired."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from keel.config.base import Frozen

__all__ = ["CustomStepConfig", "PipelineConfig"]

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


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
