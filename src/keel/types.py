"""Frozen value objects shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "Artifact",
    "LineageEdge",
    "ModelVersion",
    "Run",
    "RunStatus",
    "jsonable",
]

RunStatus = Literal["running", "succeeded", "failed", "cached", "cancelled"]


@dataclass(frozen=True, slots=True)
class Artifact:
    """An immutable, content-addressed blob. Only ``ArtifactStore.put`` creates one.

    Attributes:
        kind: What the bytes are (``snapshot``, ``statistics``, ``schema``, ``features``,
            ``model-file``, ``model-package``, ``evaluation``, ...).
        uri: Where the bytes live (an fsspec URL or a local path).
        sha256: Hex digest of the bytes; also the artifact's identity.
        size: Number of bytes.
        metadata: Small JSON-able facts about the content (row count, columns, ...).
    """

    kind: str
    uri: str
    sha256: str
    size: int
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def short(self) -> str:
        """The first 12 hex digits, for display."""
        return self.sha256[:12]


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a pipeline step.

    Attributes:
        id: Unique run id (hex).
        step: Step name (``ingest``, ``train``, ...).
        status: ``running``, ``succeeded``, ``failed`` or ``cached``.
        cache_key: Hash of the step's code, inputs and config; equal keys give equal outputs.
        config_hash: Hash of the configuration the step saw.
        code_version: Keel version plus a hash of the step's source.
        started_at: When it began (UTC).
        ended_at: When it ended (UTC), or None while running.
        cpu_seconds: User + system CPU time spent in the step.
        peak_memory_mb: Peak resident memory of the process while the step ran (sampled).
        error: The error message when it failed.
        params: Small JSON-able facts (step parameters, the run it reused from cache, ...).
        inputs: Artifact sha256 by input name.
        outputs: Artifact sha256 by output name.
    """

    id: str
    step: str
    status: RunStatus
    cache_key: str
    config_hash: str
    code_version: str
    started_at: datetime
    ended_at: datetime | None = None
    cpu_seconds: float | None = None
    peak_memory_mb: float | None = None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    inputs: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    outputs: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class LineageEdge:
    """A run read (``input``) or wrote (``output``) an artifact under a name."""

    run_id: str
    sha256: str
    direction: Literal["input", "output"]
    name: str


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A registered version of a model: its package artifact, the run that made it, metrics."""

    name: str
    version: int
    package_sha256: str
    run_id: str | None
    created_at: datetime
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    aliases: tuple[str, ...] = ()


def jsonable(value: Any) -> Any:
    """``value`` with pydantic models dumped, tuples as lists and keys as text: what a run's
    facts and a step's config section are stored (and hashed) as."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
