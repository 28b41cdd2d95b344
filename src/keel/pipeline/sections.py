"""What the cache keys of Keel's own steps read besides their code and inputs: the configuration
sections (``section=`` in :mod:`keel.pipeline.standard`) and extra keys (``key=``).

They are computed for every step on every ``keel run``, cached steps included, so this module
and what it imports at the top stay light: a cached run decides without NumPy or Arrow.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from keel.pipeline import contract
from keel.project import Project
from keel.types import Artifact

__all__ = ["effective_schema_text", "features_section", "schema_key", "train_section"]


def effective_schema_text(project: Project, statistics: Artifact) -> str:
    """schema.yaml's text if the project has one (reviewed), else the schema inferred now."""
    return contract.schema_text(project, orjson.loads(project.artifacts.get(statistics.sha256)))


def schema_key(project: Project, inputs: dict[str, Artifact]) -> str:
    """The schema step's extra cache key: the text of schema.yaml (inferred first if none)."""
    text = effective_schema_text(project, inputs["statistics"])
    return hashlib.sha256(text.encode()).hexdigest()


def features_section(project: Project) -> Any:
    """The features step's cache section: the config plus each custom function's source hash,
    so editing a ``@keel.feature`` function re-fits the pipeline."""
    cfg = project.config.features
    if not cfg.custom:  # the same value as below, without importing the features package
        return cfg
    from keel.features.custom import CustomFeature, importable_from

    with importable_from(project.root):
        hashes = {c.function: CustomFeature.create(c.model_dump()).sha256 for c in cfg.custom}
    return [cfg, hashes] if hashes else cfg


def train_section(project: Project) -> list[Any]:
    """The train step's cache section; a data-parallel fit (Ray Train) is another model, so its
    worker count joins the key (a local fit's key is unchanged)."""
    from keel.settings import executor_settings

    cfg = project.config
    section: list[Any] = [cfg.model, cfg.split, cfg.data.target, cfg.data.positive_label]
    if executor_settings(cfg)[0] == "ray" and cfg.resources.workers > 1:
        section.append({"workers": cfg.resources.workers, "cpus": cfg.resources.cpus})
    return section
