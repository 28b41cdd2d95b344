"""Keel's own steps, declared the way a user declares theirs, and the pipeline of a project.

Each is declared by the import path of its function (:func:`keel.pipeline.declare.lazy_step`):
planning the graph and deciding that a step's cache hits import none of the steps' modules, so
a rerun with nothing changed loads neither NumPy, Arrow nor a trainer.

``keel run`` runs :func:`pipeline_steps`: the standard steps below (those that apply to the
project's keel.yaml) with the project's custom steps (``pipeline.steps``) placed among them,
planned and checked as one graph (:mod:`keel.pipeline.graph`) before anything runs.

===============  ========================================  ==================================
step             reads                                     writes
===============  ========================================  ==================================
ingest_train     data.train                                train_snapshot (train_quarantine)
ingest_test      data.test                                 test_snapshot (test_quarantine)
split            train_snapshot (without data.test)        train_snapshot, test_snapshot
feature_views    train_snapshot, test_snapshot             train_snapshot, test_snapshot
profile          train_snapshot                            statistics
schema           statistics                                schema
validate         schema, statistics, snapshots             validation, validation_report
features         schema, train_snapshot                    features
tune             train_snapshot, features                  best_params, search
train            train_snapshot, features (best_params)    model
evaluate         test_snapshot, features, model            evaluation
register         model, features, evaluation, ...          package (registers a version)
===============  ========================================  ==================================
"""

from __future__ import annotations

from typing import Any

from keel.pipeline.declare import StepSpec, lazy_step, spec_of, step
from keel.pipeline.evaluation_inputs import champion_key
from keel.pipeline.sections import features_section, schema_key, train_section
from keel.project import Project
from keel.types import Artifact

__all__ = ["default_steps", "pipeline_steps"]

_SNAPSHOT, _QUARANTINE = "snapshot", "quarantine"
#: Where the steps' functions live; each is imported only when its step executes.
_STEPS = "keel.pipeline.steps"


def _raw_file_key(split: str) -> Any:
    """The raw source files' fingerprint joins the ingest step's cache key."""

    def key(project: Project, inputs: dict[str, Artifact]) -> str:
        from keel.data import source_fingerprint

        source = getattr(project.config.data, split)
        return "" if source is None else source_fingerprint(source, project.root)

    return key


def _declared(function: Any) -> StepSpec:
    spec = spec_of(function)
    assert spec is not None, f"{function} is not a declared step"
    return spec


INGEST_TRAIN = lazy_step(
    f"{_STEPS}:ingest_train",
    name="ingest_train",
    outputs={"train_snapshot": _SNAPSHOT, "train_quarantine": _QUARANTINE},
    optional=("train_quarantine",),
    section=lambda p: p.config.data.train,
    key=_raw_file_key("train"),
)
INGEST_TEST = lazy_step(
    f"{_STEPS}:ingest_test",
    name="ingest_test",
    outputs={"test_snapshot": _SNAPSHOT, "test_quarantine": _QUARANTINE},
    optional=("test_quarantine",),
    section=lambda p: p.config.data.test,
    key=_raw_file_key("test"),
)
PROFILE = lazy_step(
    f"{_STEPS}:profile",
    name="profile",
    inputs={"train_snapshot": _SNAPSHOT},
    outputs={"statistics": "statistics"},
)
SCHEMA = lazy_step(
    f"{_STEPS}:schema",
    name="schema",
    inputs={"statistics": "statistics"},
    outputs={"schema": "schema"},
    section=lambda p: p.config.data.target,
    key=schema_key,
)
VALIDATE = lazy_step(
    f"{_STEPS}:validate",
    name="validate",
    inputs={
        "schema": "schema",
        "statistics": "statistics",
        "train_snapshot": _SNAPSHOT,
        "test_snapshot": _SNAPSHOT,
    },
    outputs={"validation": "validation", "validation_report": "report"},
)
FEATURES = lazy_step(
    f"{_STEPS}:features",
    name="features",
    inputs={"schema": "schema", "train_snapshot": _SNAPSHOT},
    outputs={"features": "features"},
    section=features_section,
)
TRAIN = lazy_step(
    f"{_STEPS}:train",
    name="train",
    inputs={"train_snapshot": _SNAPSHOT, "features": "features", "best_params": "best-params"},
    optional=("best_params",),
    outputs={"model": "model"},
    section=train_section,
)
EVALUATE = lazy_step(
    "keel.pipeline.evaluate_step:evaluate",
    name="evaluate",
    inputs={"test_snapshot": _SNAPSHOT, "features": "features", "model": "model"},
    outputs={"evaluation": "evaluation"},
    section=lambda p: [
        p.config.evaluate,
        p.config.data.sensitive,
        p.config.data.target,
        p.config.data.positive_label,
    ],
    key=champion_key,  # a new champion: a new comparison
)
REGISTER = lazy_step(
    f"{_STEPS}:register",
    name="register",
    inputs={
        "model": "model",
        "features": "features",
        "statistics": "statistics",
        "evaluation": "evaluation",
        "schema": "schema",
        "train_snapshot": _SNAPSHOT,
        "test_snapshot": _SNAPSHOT,
        "validation": "validation",
    },
    outputs={"package": "model-package"},
    effects=("registers",),
    section=lambda p: [
        p.config.model.name,
        p.config.evaluate.gates,
        p.config.registry.alias,
        # only when set, so projects without approvals keep their cache keys
        *([p.config.registry.approvals] if p.config.registry.approvals else []),
    ],
)


def _feature_views(project: Project) -> list[StepSpec]:
    """With ``features.views``: join them point-in-time onto train and test (new snapshots)."""
    if not project.config.features.views:
        return []
    from keel.features.store import join_feature_views, views_fingerprint

    def section(p: Project) -> Any:
        cfg = p.config
        return [cfg.features.views, cfg.features.entity_timestamp, cfg.feature_views]

    both = {"train_snapshot": _SNAPSHOT, "test_snapshot": _SNAPSHOT}
    declared = step(
        name="feature_views", inputs=both, outputs=both, section=section, key=views_fingerprint
    )
    return [_declared(declared(join_feature_views))]


def default_steps(project: Project) -> list[StepSpec]:
    """Keel's own steps for a project, in order (those its keel.yaml calls for)."""
    from keel.pipeline.tune import tune_steps

    test = [INGEST_TEST]
    if project.config.data.test is None:  # the split step holds a test split out of train
        from keel.pipeline.holdout import split

        test = [_declared(split)]
    return [
        INGEST_TRAIN,
        *test,
        *_feature_views(project),
        PROFILE,
        SCHEMA,
        VALIDATE,
        FEATURES,
        *tune_steps(project),  # search: / flavor auto -> best_params for train
        TRAIN,
        EVALUATE,
        REGISTER,
    ]


def pipeline_steps(project: Project) -> list[StepSpec]:
    """The project's pipeline: Keel's steps with its custom steps placed among them.

    Raises:
        ConfigError: A custom step cannot be imported or is not a declared step (names it and
            its keel.yaml line); PipelineGraphError: an ``after:`` names no step or forms a
            cycle.
    """
    from keel.pipeline.custom import custom_steps, wired
    from keel.pipeline.graph import order_steps

    return wired(order_steps(default_steps(project), custom_steps(project)), project)
