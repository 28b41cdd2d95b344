"""The ``retrain:`` section of keel.yaml: the policy that closes the monitoring loop.

When the alert rule named by ``on`` fires (``keel monitor run NAME --retrain``), Keel adds the
labelled predictions of the ``data`` window to the training data, runs the pipeline through its
gates, and rolls a passing version out as a canary (``then: canary``) instead of moving the
alias at once.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from keel.config.base import Frozen

__all__ = ["RetrainConfig", "RetrainDataConfig"]

_SPAN = re.compile(r"^\s*\d+\s*(s|m|h|d|w)\s*$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")


class RetrainDataConfig(Frozen):
    """Which logged rows a policy run adds to the training data."""

    labelled_since: str = Field(
        default="30d",
        description="Add the logged inputs of the predictions made within this span before "
        "now that have a feedback label, with the label as the target (30m, 12h, 30d, 2w).",
    )
    min_rows: int = Field(
        default=1,
        ge=1,
        description="Fewer labelled rows than this: the policy does not retrain (says so).",
    )

    @field_validator("labelled_since")
    @classmethod
    def _span(cls, value: str) -> str:
        if not _SPAN.match(value.lower()) or int(re.sub(r"\D", "", value)) <= 0:
            raise ValueError(
                f"'{value}' is not a span; write a positive number and a unit: 30m, 12h, 30d, 2w"
            )
        return value


class RetrainConfig(Frozen):
    """A retraining policy: on an alert, retrain with the labelled window, then canary it."""

    on: str = Field(
        description="The name of the monitor.alerts rule whose alerts start a retraining.",
    )
    data: RetrainDataConfig = Field(
        default_factory=RetrainDataConfig,
        description="The labelled window added to the training data (labelled_since, min_rows).",
    )
    then: Literal["canary"] = Field(
        default="canary",
        description="What happens to a new version that passes its gates: canary (a canary "
        "deployment that promotes or rolls back on its own; the alias is not moved directly).",
    )
    steps: str = Field(
        default="5,25,50,100",
        description="The canary's traffic percentages, as keel deploy --steps.",
    )
    interval: str = Field(
        default="5m", description="How long each step lasts, as keel deploy --interval."
    )
    checks: str = Field(
        default="error_rate<=0.01",
        description="What must hold on the canary's traffic, as keel deploy --check.",
    )
    failures: int = Field(
        default=2, ge=1, description="Bad intervals in a row before the canary rolls back."
    )
    min_requests: int = Field(
        default=20, ge=0, description="An interval with fewer canary requests waits."
    )
    candidate_alias: str = Field(
        default="candidate",
        description="The alias a policy run's version takes when its gates pass (instead of "
        "registry.alias, which only the canary's promotion moves).",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare ``on:`` key as the boolean true; take it as ``on``."""
        if isinstance(value, dict) and True in value and "on" not in value:
            value = {("on" if k is True else k): v for k, v in value.items()}
        return value

    @field_validator("candidate_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not _ALIAS.match(value):
            raise ValueError(f"'{value}' is not an alias (a letter, then letters, digits, _.-)")
        return value
