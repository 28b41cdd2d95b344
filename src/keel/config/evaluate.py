"""keel.yaml's ``evaluate:`` section: slices, intervals, worst-slice search, fairness, gates and
the challenger-against-champion test."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from keel.config.base import Frozen

__all__ = [
    "GATE_PATTERN",
    "GATE_ROOTS",
    "BootstrapConfig",
    "ChampionConfig",
    "EvaluateConfig",
    "FairnessConfig",
    "SliceFinderConfig",
    "parse_gate",
]

GATE_PATTERN = re.compile(
    r"^\s*([A-Za-z_][^\s<>]*?)\s*(>=|<=|>|<|==)\s*"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
GATE_ROOTS = (
    "metrics", "slices", "fairness", "calibration", "residuals", "worst_slices", "latency", "size",
)  # fmt: skip


def parse_gate(text: str) -> tuple[str, str, float]:
    """``(path, op, bound)`` of ``'<path> <op> <number>'``; a bare name stays bare.

    Raises:
        ValueError: Not that form, or the path's first part is not one of :data:`GATE_ROOTS`.
    """
    match = GATE_PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"gate {text!r} is not '<metric> <op> <number>' (op one of >=, <=, >, <, ==), e.g. "
            "'roc_auc >= 0.9' or 'fairness.sex.demographic_parity_difference <= 0.1'"
        )
    path = match.group(1)
    root = path.split(".", 1)[0]
    if "." in path and root not in GATE_ROOTS:
        raise ValueError(
            f"gate {text!r}: path '{path}' starts with '{root}'; a path starts with one of "
            f"{', '.join(GATE_ROOTS)} (or is a bare metric name such as roc_auc)"
        )
    return path, match.group(2), float(match.group(3))


class BootstrapConfig(Frozen):
    """Percentile bootstrap intervals for every metric, overall and per slice."""

    resamples: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="Resamples of the test rows (0: no intervals).",
    )
    seed: int = Field(default=0, description="Seed of the resamples (same seed, same intervals).")
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="Coverage of the central interval (0.95: 2.5th to 97.5th percentile).",
    )


class SliceFinderConfig(Frozen):
    """The automatic search for the slices where the model is worst."""

    enabled: bool = Field(default=True, description="Search for worst slices at all.")
    columns: list[str] | None = Field(
        default=None,
        description="Columns to slice on (default: every model input); numeric ones are binned.",
    )
    bins: int = Field(default=10, ge=2, le=100, description="Equal-height bins per numeric column.")
    crossings: bool = Field(
        default=True, description="Also test ANDs of two predicates (sex=Female&age=[28, 37))."
    )
    min_effect: float = Field(
        default=0.2,
        ge=0.0,
        description="Smallest effect size (Cohen's d of the loss, slice vs the rest) reported.",
    )
    alpha: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="Benjamini-Hochberg false discovery rate."
    )
    top: int = Field(default=10, ge=1, le=1000, description="How many worst slices are stored.")


class FairnessConfig(Frozen):
    """The audit of data.sensitive columns (selection rate, TPR, FPR and their disparities)."""

    intersectional: bool = Field(
        default=True,
        description="Also audit every combination of the sensitive columns (sex&race).",
    )
    min_group_size: int = Field(
        default=30,
        ge=0,
        description="Groups with fewer test rows are listed but left out of the disparities.",
    )


class ChampionConfig(Frozen):
    """Promote only a challenger that holds up against the model holding registry.alias."""

    metric: str = Field(description="The metric compared (e.g. roc_auc, log_loss, rmse).")
    min_delta: float = Field(
        default=0.0,
        description="Margin on challenger - champion (oriented: positive is better).",
    )
    test: Literal["paired_bootstrap"] = Field(
        default="paired_bootstrap",
        description="How: both models on the same resampled test rows.",
    )
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5, description="Significance level.")
    require: Literal["not_worse", "better"] = Field(
        default="not_worse",
        description="not_worse: refuse a challenger significantly worse than min_delta; "
        "better: accept only one significantly better than min_delta.",
    )


class EvaluateConfig(Frozen):
    """Evaluation on the test data and the gates a new version must pass to take the alias."""

    slices: list[str] = Field(
        default_factory=list,
        description="Columns whose values get their own test metrics with intervals.",
    )
    min_slice_size: int = Field(
        default=30,
        ge=1,
        description="Slices with fewer test rows are reported but never gate.",
    )
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    slice_finder: SliceFinderConfig = Field(default_factory=SliceFinderConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    gates: list[str] = Field(
        default_factory=list,
        description="Conditions '<path> <op> <number>' a new version must meet to take "
        "registry.alias; a path reads the stored evaluation: roc_auc (= metrics.roc_auc), "
        "metrics.roc_auc.ci_low, slices.sex=Female.recall, "
        "fairness.sex.demographic_parity_difference, calibration.ece, latency.p99_ms, "
        "size.bytes. keel run exits 1 when one fails.",
    )
    challenger_vs_champion: ChampionConfig | None = Field(
        default=None,
        description="Compare with the version holding registry.alias on the same test rows "
        "(paired bootstrap) before moving the alias.",
    )

    @field_validator("gates")
    @classmethod
    def _gate_syntax(cls, gates: list[str]) -> list[str]:
        for gate in gates:
            parse_gate(gate)
        return gates

    def parsed_gates(self) -> list[tuple[str, str, float]]:
        """Gates as ``(path, operator, bound)`` triples."""
        return [parse_gate(gate) for gate in self.gates]
