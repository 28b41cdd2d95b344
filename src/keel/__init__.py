"""Keel: a production machine-learning system in one pip install.

The public API is this module's ``__all__``; names are imported lazily so ``import keel`` and
``keel --help`` stay fast.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType as _ModuleType  # keel.types (the submodule) would shadow "types"
from typing import TYPE_CHECKING, Any

from keel.version import __version__

_EXPORTS: dict[str, str] = {
    "init": "keel.api",
    "run": "keel.api",
    "load_model": "keel.api",
    "models": "keel.api",
    "show_model": "keel.api",
    "model_card": "keel.api",
    "registry": "keel.api",
    "Registry": "keel.registry.registry",
    "ConflictError": "keel.errors",
    "predict": "keel.api",
    "deploy": "keel.api",
    "list_deployments": "keel.api",
    "deployment_status": "keel.api",
    "promote_deployment": "keel.api",
    "abort_deployment": "keel.api",
    "monitor": "keel.api",
    "monitor_run": "keel.api",
    "monitor_report": "keel.api",
    "monitor_metrics": "keel.api",
    "alerts": "keel.api",
    "get_alert": "keel.api",
    "ack_alert": "keel.api",
    "resolve_alert": "keel.api",
    "feedback": "keel.api",
    "feedback_file": "keel.api",
    "compare_arms": "keel.api",
    "ingest": "keel.api",
    "reproduce": "keel.api",
    "tune": "keel.api",
    "runs": "keel.api",
    "get_run": "keel.api",
    "compare_runs": "keel.api",
    "lineage": "keel.api",
    "snapshots": "keel.api",
    "validate": "keel.api",
    "infer_schema": "keel.api",
    "load_data": "keel.api",
    "ValidationReport": "keel.validate.anomalies",
    "Schema": "keel.validate.schema",
    "IngestResult": "keel.data.snapshots",
    "Model": "keel.api",
    "Project": "keel.project",
    "load_config": "keel.config",
    "KeelConfig": "keel.config",
    "FeaturePipeline": "keel.features.pipeline",
    "feature": "keel.features.custom",
    "step": "keel.pipeline.declare",
    "StepContext": "keel.pipeline.runner",
    "FeatureStore": "keel.features.store",
    "FeatureView": "keel.features.views",
    "ModelPackage": "keel.registry.package",
    "verify_package": "keel.registry.verify",
    "export_package": "keel.registry.exchange",
    "import_package": "keel.registry.exchange",
    "generate_keys": "keel.registry.signing",
    "create_app": "keel.serve.app",
    "Artifact": "keel.types",
    "Run": "keel.types",
    "ModelVersion": "keel.types",
    "KeelError": "keel.errors",
    "ConfigError": "keel.errors",
    "DataValidationError": "keel.errors",
    "NotFoundError": "keel.errors",
    "IntegrityError": "keel.errors",
    "UnsafeModelError": "keel.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from keel.api import (
        Model,
        abort_deployment,
        ack_alert,
        alerts,
        compare_arms,
        compare_runs,
        deploy,
        deployment_status,
        feedback,
        feedback_file,
        get_alert,
        get_run,
        infer_schema,
        ingest,
        init,
        lineage,
        list_deployments,
        load_data,
        load_model,
        model_card,
        models,
        monitor,
        monitor_metrics,
        monitor_report,
        monitor_run,
        predict,
        promote_deployment,
        registry,
        reproduce,
        resolve_alert,
        run,
        runs,
        show_model,
        snapshots,
        tune,
        validate,
    )
    from keel.config import KeelConfig, load_config
    from keel.data.snapshots import IngestResult
    from keel.errors import (
        ConfigError,
        ConflictError,
        DataValidationError,
        IntegrityError,
        KeelError,
        NotFoundError,
        UnsafeModelError,
    )
    from keel.features.custom import feature
    from keel.features.pipeline import FeaturePipeline
    from keel.features.store import FeatureStore
    from keel.features.views import FeatureView
    from keel.pipeline.declare import step
    from keel.pipeline.runner import StepContext
    from keel.project import Project
    from keel.registry.exchange import export_package, import_package
    from keel.registry.package import ModelPackage
    from keel.registry.registry import Registry
    from keel.registry.signing import generate_keys
    from keel.registry.verify import verify_package
    from keel.serve.app import create_app
    from keel.types import Artifact, ModelVersion, Run
    from keel.validate.anomalies import ValidationReport
    from keel.validate.schema import Schema


class _KeelModule(_ModuleType):
    """The ``keel`` module, where a public verb wins over a subpackage of the same name.

    ``keel.monitor`` is the verb (:func:`keel.api.monitor`) and also the package
    ``keel/monitor/``; importing ``keel.monitor.drift`` makes the import system bind the package
    as an attribute of ``keel``, which would shadow the verb. The package stays importable by
    its dotted path (``from keel.monitor.drift import ...``) through ``sys.modules``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, _ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KeelModule


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
