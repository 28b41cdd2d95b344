"""keel.yaml -> typed, frozen configuration (pydantic models that forbid unknown keys).

The sections live beside what they configure: :mod:`~keel.config.data` (sources),
:mod:`~keel.config.features` (transforms, feature views), :mod:`~keel.config.training` (model,
split, search, AutoML, resources), :mod:`~keel.config.project` (the whole file and its small
sections) and :mod:`~keel.config.loading` (reading ``keel.yaml`` and ``keel.<env>.yaml``,
``${VAR}`` expansion, the :data:`ENVIRONMENT` overrides, and errors that name file and line).
"""

from __future__ import annotations

from keel.config.data import DataConfig, IncrementalConfig, SourceConfig
from keel.config.features import (
    STEP_PARAMS,
    AggregationConfig,
    CustomFeatureConfig,
    FeaturesConfig,
    FeatureViewConfig,
    TransformConfig,
    parse_duration,
)
from keel.config.loading import CONFIG_FILE, ENVIRONMENT, config_hash, load_config
from keel.config.pipeline import CustomStepConfig, PipelineConfig
from keel.config.project import (
    EvaluateConfig,
    KeelConfig,
    MonitorConfig,
    ServeConfig,
    StoreConfig,
)
from keel.config.registry import REGISTRY_EVENTS, RegistryConfig, WebhookConfig
from keel.config.retrain import RetrainConfig, RetrainDataConfig
from keel.config.training import (
    AutoMLConfig,
    LightGBMParams,
    ModelConfig,
    ResourcesConfig,
    SearchConfig,
    SearchParam,
    SplitConfig,
)

__all__ = [
    "CONFIG_FILE",
    "ENVIRONMENT",
    "REGISTRY_EVENTS",
    "STEP_PARAMS",
    "AggregationConfig",
    "AutoMLConfig",
    "CustomFeatureConfig",
    "CustomStepConfig",
    "DataConfig",
    "EvaluateConfig",
    "FeatureViewConfig",
    "FeaturesConfig",
    "IncrementalConfig",
    "KeelConfig",
    "LightGBMParams",
    "ModelConfig",
    "MonitorConfig",
    "PipelineConfig",
    "RegistryConfig",
    "ResourcesConfig",
    "RetrainConfig",
    "RetrainDataConfig",
    "SearchConfig",
    "SearchParam",
    "ServeConfig",
    "SourceConfig",
    "SplitConfig",
    "StoreConfig",
    "TransformConfig",
    "WebhookConfig",
    "config_hash",
    "load_config",
    "parse_duration",
]
