"""A step's cache key: what decides that an earlier run of it can be reused.

Cache key = Keel version + the step's source (comments stripped) + the hash of the config
section it reads + the sha256 of each input artifact + any extra key the step names (e.g. the
raw file's hash for ingestion). Each part is recorded with the run (``params["key"]``), so
``keel run --explain`` can say which one changed when the cache misses; the runner
(:mod:`keel.pipeline.runner`) looks the key up before it runs a step.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel.config import config_hash
from keel.pipeline.declare import StepRef, StepSpec
from keel.project import Project
from keel.types import Artifact, jsonable
from keel.version import __version__

__all__ = [
    "StepKey",
    "code_version_of",
    "explain_cache",
    "outputs_intact",
    "source_hash",
    "step_config_hash",
    "step_key",
]


@dataclass(frozen=True)
class StepKey:
    """A step's cache key for its inputs, and the parts it is made of.

    Attributes:
        key: The digest runs are looked up by.
        parts: ``keel``, ``code``, ``config``, ``extra`` (hashed) and ``inputs`` (name ->
            sha256), as recorded with the run for ``--explain``.
        config_hash: The hash of the config section the step reads.
        code: The hash of the step's source.
    """

    key: str
    parts: dict[str, Any]
    config_hash: str
    code: str


def step_key(step: StepSpec, project: Project, inputs: dict[str, Artifact]) -> StepKey:
    """The cache key of running ``step`` on ``inputs`` in ``project`` as configured now."""
    section_hash = step_config_hash(step, project)
    extra = step.extra_key(project, inputs) if step.extra_key else ""
    code = step.code or source_hash(step.fn)
    parts = {
        "keel": __version__,
        "code": code,
        "config": section_hash,
        "extra": hashlib.sha256(extra.encode()).hexdigest(),
        "inputs": {n: a.sha256 for n, a in sorted(inputs.items())},
    }
    key = _digest(
        __version__,
        code,
        section_hash,
        extra,
        *(f"{n}={a.sha256}" for n, a in sorted(inputs.items())),
    )
    return StepKey(key, parts, section_hash, code)


def outputs_intact(project: Project, outputs: dict[str, str]) -> bool:
    """Every output of a cached run is still in the artifact store with its recorded hash."""
    from keel.errors import IntegrityError, NotFoundError

    for sha in outputs.values():
        try:
            project.artifacts.verify(sha)
        except (IntegrityError, NotFoundError):
            return False
    return True


def explain_cache(
    project: Project,
    name: str,
    parts: dict[str, Any],
    cached: Any,
    intact: bool,
    use_cache: bool,
) -> str:
    """Hit, or miss and what changed since the step's last run (its code, config, source data
    or which input), for ``keel run --explain``."""
    if not use_cache:
        return "miss: --no-cache"
    if cached is not None and intact:
        return "hit"
    if cached is not None:
        return "miss: a cached output is missing or corrupt in the artifact store; re-running"
    earlier = project.metadata.list_runs(step=name, limit=20)
    previous = next((r for r in earlier if "key" in r.params), None)
    if previous is None:
        if earlier:
            return "miss: no identical earlier run (those recorded by an older Keel keep no key)"
        return "miss: no earlier run of this step"
    before = previous.params["key"]
    labels = {"keel": "Keel's version", "code": "the step's code", "config": "its config",
              "extra": "its source data"}  # fmt: skip
    changed = [label for part, label in labels.items() if before.get(part) != parts[part]]
    old, new = before.get("inputs", {}), parts["inputs"]
    changed += [f"input '{n}'" for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
    return "miss: " + (", ".join(changed) + " changed" if changed else "no identical earlier run")


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def step_config_hash(step: StepSpec, project: Project) -> str:
    """Hash of the config section a step reads, as recorded in its runs."""
    return config_hash({"section": jsonable(step.section(project))})


def code_version_of(step: StepSpec, code: str | None = None) -> str:
    """Keel's version plus the hash of the step's code (``code`` when already computed), as
    recorded in its runs."""
    return f"keel-{__version__}+{(code or step.code or source_hash(step.fn))[:12]}"


def source_hash(fn: Callable[..., Any]) -> str:
    """sha256 of the function's source without comments, so editing a comment keeps the cache.
    A step declared by import path (:class:`~keel.pipeline.declare.StepRef`) is read from its
    file, not imported: the same hash as its imported function's."""
    return _hash_source(fn.source() if isinstance(fn, StepRef) else inspect.getsource(fn))


@functools.lru_cache(maxsize=1024)
def _hash_source(source: str) -> str:
    """sha256 of the source's tokens without comments and layout (a long-lived process, the
    scheduler, hashes each step's unchanged source once)."""
    tokens = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type
        not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    ]
    return hashlib.sha256(" ".join(tokens).encode()).hexdigest()
