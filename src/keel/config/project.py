"""A whole keel.yaml (:class:`KeelConfig`) and its smaller sections: evaluation gates,
registry, serving, monitoring, stores."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator
from pydantic_core import PydanticCustomError

from keel.config.base import Frozen
from keel.config.data import DataConfig
from keel.config.features import FeaturesConfig, FeatureViewConfig
from keel.config.pipeline import PipelineConfig
from keel.config.training import (
    AutoMLConfig,
    ModelConfig,
    ResourcesConfig,
    SearchConfig,
    SplitConfig,
)
from keel.plugins import EXECUTORS

__all__ = [
    "EvaluateConfig",
    "KeelConfig",
    "MonitorConfig",
    "RegistryConfig",
    "ServeConfig",
    "StoreConfig",
]


_GATE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<|==)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


class EvaluateConfig(Frozen):
    """Evaluation slices and the gates a new version must pass to take the alias."""

    slices: list[str] = Field(
        default_factory=list,
        description="Columns whose values get their own test metrics (and the worst slice is "
        "named).",
    )
    gates: list[str] = Field(
        default_factory=list,
        description="Conditions '<metric> <op> <number>' (e.g. 'roc_auc >= 0.9') a new version "
        "must meet on the test data to take registry.alias; keel run exits 1 when one "
        "fails.",
    )

    @field_validator("gates")
    @classmethod
    def _gate_syntax(cls, gates: list[str]) -> list[str]:
        for gate in gates:
            if not _GATE.match(gate):
                raise ValueError(
                    f"gate {gate!r} is not '<metric> <op> <number>' (op one of >=, <=, >, <, ==),"
                    " e.g. 'roc_auc >= 0.9'"
                )
        return gates

    def parsed_gates(self) -> list[tuple[str, str, float]]:
        """Gates as ``(metric, operator, threshold)`` triples."""
        out = []
        for gate in self.gates:
            match = _GATE.match(gate)
            assert match is not None  # checked by the validator
            out.append((match.group(1), match.group(2), float(match.group(3))))
        return out


class RegistryConfig(Frozen):
    """Which alias a version that passes the gates takes."""

    alias: str = Field(
        default="production",
        description="The alias a version that passes the gates takes (NAME@ALIAS; what keel serve "
        "serves).",
    )


class ServeConfig(Frozen):
    """The online server's address."""

    host: str = Field(
        default="127.0.0.1",
        description="The address keel serve binds (0.0.0.0: every interface).",
    )
    port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="The port keel serve listens on.",
    )
    log_predictions: bool = Field(
        default=True,
        description="Append every request's inputs and predictions to .keel/predictions/ (what "
        "keel monitor reads).",
    )


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


class MonitorConfig(Frozen):
    """Drift monitoring of served inputs against the training statistics."""

    psi: PSIThresholds = Field(default_factory=PSIThresholds)
    min_rows: int = Field(
        default=100,
        ge=1,
        description="With fewer rows than this the verdict is insufficient_data: PSI is noise "
        "there.",
    )


class StoreConfig(Frozen):
    """Where metadata and artifacts live; ``KEEL_DB_URL`` and ``KEEL_ARTIFACTS`` override."""

    db_url: str | None = Field(
        default=None,
        description="The metadata store's SQLAlchemy URL (e.g. postgresql+psycopg://...); default "
        "SQLite in .keel/keel.db. KEEL_DB_URL overrides.",
    )
    artifacts: str | None = Field(
        default=None,
        description="The artifact store's root: a path or an fsspec URL (s3://bucket/keel); "
        "default .keel/artifacts. KEEL_ARTIFACTS overrides.",
    )


class KeelConfig(Frozen):
    """A whole keel.yaml."""

    project: str = Field(
        description="The project's name, shown by keel run and in reports.",
    )
    data: DataConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    feature_views: list[FeatureViewConfig] = Field(default_factory=list)

    @field_validator("executor")
    @classmethod
    def _registered_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise PydanticCustomError("unregistered", EXECUTORS.unknown(value))
        return value

    @field_validator("feature_views")
    @classmethod
    def _unique_views(cls, views: list[FeatureViewConfig]) -> list[FeatureViewConfig]:
        names = [v.name for v in views]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature view names must be unique; {dupes} repeat")
        return views

    search: SearchConfig | None = None
    schema_mode: Literal["reviewed", "auto"] = Field(
        default="reviewed",
        alias="schema",
        description="reviewed: schema.yaml is the reviewed contract; when the data's columns "
        "or types no longer match it, keel run stops with the difference (refresh it with "
        "'keel schema infer --update'). auto: keel run refreshes schema.yaml itself, keeping "
        "the edits on unchanged columns, and warns.",
    )
    automl: AutoMLConfig = Field(default_factory=AutoMLConfig)
    executor: str = Field(
        default="local",
        description="Where search trials (and Ray Train fits) run: local processes, ray, or an "
        "executor an installed plug-in registers (entry-point group keel.executors). "
        "KEEL_EXECUTOR overrides.",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster to use with executor: ray (ray://host:10001, auto); unset: a "
        "local Ray. KEEL_RAY_ADDRESS overrides.",
    )
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    _where: dict[tuple[str | int, ...], str] = PrivateAttr(default_factory=dict)

    def where(self, *path: str | int) -> str:
        """``keel.yaml:LINE`` of a key, e.g. ``where("pipeline", "steps", 0)``."""
        return self._where.get(tuple(path), "keel.yaml")

    def resolve_path(self, root: Path, path: str) -> Path:
        """A data path from the config, relative to the project root unless absolute."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else root / candidate
