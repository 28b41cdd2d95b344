"""The Python API: the same verbs as the CLI, returning plain data.

>>> import keel
>>> keel.init("adult-demo", example="adult")
>>> summary = keel.run("adult-demo")
>>> model = keel.load_model("adult@production", project="adult-demo")
>>> model.predict(df)

One module per noun: :mod:`keel.api.projects` (projects and data), :mod:`keel.api.pipelines`
(pipeline runs, tracked runs, lineage) and :mod:`keel.api.registered` (the registry, loading,
prediction, monitoring).
"""

from __future__ import annotations

from keel.api.alerting import (
    ack_alert,
    alerts,
    get_alert,
    monitor_metrics,
    monitor_report,
    monitor_run,
    resolve_alert,
)
from keel.api.deployments import (
    abort_deployment,
    deploy,
    deployment_status,
    list_deployments,
    promote_deployment,
    wait_for_deployment,
)
from keel.api.labels import compare_arms, feedback, feedback_file
from keel.api.pipelines import (
    cancel_pipeline_run,
    compare_runs,
    get_pipeline_run,
    get_run,
    lineage,
    pipeline_runs,
    reproduce,
    run,
    runs,
    tune,
)
from keel.api.projects import (
    EXAMPLES,
    DataLike,
    infer_schema,
    ingest,
    init,
    load_data,
    resolve_data,
    snapshots,
    validate,
)
from keel.api.registered import (
    Model,
    load_model,
    model_card,
    models,
    monitor,
    predict,
    registry,
    show_model,
)
from keel.api.retraining import retrain

__all__ = [
    "EXAMPLES",
    "DataLike",
    "Model",
    "abort_deployment",
    "ack_alert",
    "alerts",
    "cancel_pipeline_run",
    "compare_arms",
    "compare_runs",
    "deploy",
    "deployment_status",
    "feedback",
    "feedback_file",
    "get_alert",
    "get_pipeline_run",
    "get_run",
    "infer_schema",
    "ingest",
    "init",
    "lineage",
    "list_deployments",
    "load_data",
    "load_model",
    "model_card",
    "models",
    "monitor",
    "monitor_metrics",
    "monitor_report",
    "monitor_run",
    "pipeline_runs",
    "predict",
    "promote_deployment",
    "registry",
    "reproduce",
    "resolve_alert",
    "resolve_data",
    "retrain",
    "run",
    "runs",
    "show_model",
    "snapshots",
    "tune",
    "validate",
    "wait_for_deployment",
]
