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

__all__ = [
    "EXAMPLES",
    "DataLike",
    "Model",
    "cancel_pipeline_run",
    "compare_runs",
    "get_pipeline_run",
    "get_run",
    "infer_schema",
    "ingest",
    "init",
    "lineage",
    "load_data",
    "load_model",
    "model_card",
    "models",
    "monitor",
    "pipeline_runs",
    "predict",
    "registry",
    "reproduce",
    "resolve_data",
    "run",
    "runs",
    "show_model",
    "snapshots",
    "tune",
    "validate",
]
