"""The ``monitor:`` section of keel.yaml: windows, drift thresholds per feature, FDR control."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from keel.config.base import Frozen

__all__ = ["DEFAULT_LEVELS", "FeatureDriftConfig", "MonitorConfig", "PSIThresholds"]

#: The warn and alert levels of each drift metric when keel.yaml names none.
DEFAULT_LEVELS = {"psi": (0.1, 0.25), "js": (0.1, 0.2), "wasserstein": (0.1, 0.5)}
_WINDOW = re.compile(r"^\s*\d+\s*(s|m|h|d|w|rows?)\s*$")
_WINDOW_HELP = "a positive number and a unit: 30m, 6h, 1d, 1w (time) or 1000rows (row count)"


class PSIThresholds(Frozen):
    """PSI verdict thresholds: below ``warn`` is stable, at or above ``alert`` is drift."""

    warn: float = Field(
        default=0.1,
        gt=0,
        description="PSI at or above which a feature's verdict is moderate.",
    )
    alert: float = Field(
        default=0.25,
        gt=0,
        description="PSI at or above which a feature's verdict is drift (keel monitor exits 1).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> PSIThresholds:
        if self.warn > self.alert:
            raise ValueError(f"warn ({self.warn}) must not exceed alert ({self.alert})")
        return self


class FeatureDriftConfig(Frozen):
    """One feature's drift rule: which effect size decides, and its levels."""

    metric: Literal["psi", "js", "wasserstein"] = Field(
        default="psi",
        description="The effect size that decides: psi, js (Jensen-Shannon distance, base 2) or "
        "wasserstein (W1 in reference standard deviations; numeric features only).",
    )
    warn: float | None = Field(
        default=None,
        gt=0,
        description="Effect at or above which a significant shift is moderate (default: psi "
        "0.1, js 0.1, wasserstein 0.1).",
    )
    alert: float | None = Field(
        default=None,
        gt=0,
        description="Effect at or above which a significant shift is drift (default: psi 0.25, "
        "js 0.2, wasserstein 0.5).",
    )
    ignore: bool = Field(default=False, description="Leave this feature out of drift monitoring.")

    def levels(self) -> tuple[float, float]:
        """``(warn, alert)`` with the metric's defaults filled in."""
        warn, alert = DEFAULT_LEVELS[self.metric]
        return (self.warn or warn, self.alert or alert)

    @model_validator(mode="after")
    def _ordered(self) -> FeatureDriftConfig:
        warn, alert = self.levels()
        if warn > alert:
            raise ValueError(f"warn ({warn}) must not exceed alert ({alert})")
        return self


class MonitorConfig(Frozen):
    """Drift and performance monitoring of served predictions against the training statistics."""

    psi: PSIThresholds = Field(default_factory=PSIThresholds)
    min_rows: int = Field(
        default=100,
        ge=1,
        description="A window with fewer rows than this says not_enough_data: never drift or "
        "stable.",
    )
    fdr: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Benjamini-Hochberg false discovery rate across the features of a window: "
        "a feature drifts only if its adjusted p-value is at most this and its effect reaches "
        "alert.",
    )
    window: str | None = Field(
        default=None,
        description="Default window of keel monitor: 1d, 6h, 1000rows, ... (none: the whole "
        "log as one window). --window overrides.",
    )
    step: str | None = Field(
        default=None,
        description="Slide windows by this (1d windows every 6h); it must divide the window. "
        "None: tumbling windows.",
    )
    features: dict[str, FeatureDriftConfig] = Field(
        default_factory=dict,
        description="Per-feature drift rules (metric, warn, alert, ignore); other features use "
        "psi with the psi thresholds.",
    )
    prediction: FeatureDriftConfig | None = Field(
        default=None,
        description="The drift rule of the model's output (predicted labels or values against "
        "the training target); default: psi with the psi thresholds.",
    )

    @field_validator("window", "step")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None and not _WINDOW.match(value.lower()):
            raise ValueError(f"'{value}' is not a window; write {_WINDOW_HELP}")
        return value
