"""Custom steps from keel.yaml: ``pipeline.steps`` imported, placed and wired.

Each entry names a ``@keel.step`` function (``module:function``; the project directory is on
the import path, as for ``features.custom``), the steps it runs ``after`` and, when its
parameter names differ from the pipeline's artifact names, the ``inputs`` it reads.
``pipeline.wire`` rewires an input of any step, Keel's own included (``train: {train_snapshot:
enriched}``). A custom step's cache key covers its source and the source of every function of
the project's own modules it calls (so editing a helper re-runs it), and its ``params``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from keel.config import CustomStepConfig
from keel.errors import ConfigError
from keel.pipeline.declare import StepSpec, spec_of
from keel.project import Project

__all__ = ["custom_steps", "project_code_hash", "wired"]


def custom_steps(project: Project) -> list[StepSpec]:
    """The project's custom steps, declared and wired; not yet placed (see ``order_steps``).

    Raises:
        ConfigError: An entry cannot be imported, is not a ``@keel.step`` function, or wires
            an input it does not have; the message names the keel.yaml line.
    """
    config = project.config
    if not config.pipeline.steps:  # nothing to import (nor the features package's NumPy)
        return []
    from keel.features.custom import importable_from

    found = []
    with importable_from(project.root):
        for index, entry in enumerate(config.pipeline.steps):
            where = config.where("pipeline", "steps", index)
            found.append(_custom(project, entry, where))
    return found


def wired(steps: list[StepSpec], project: Project) -> list[StepSpec]:
    """``steps`` with ``pipeline.wire`` applied.

    Raises:
        ConfigError: It names a step or an input that does not exist (with the keel.yaml line).
    """
    config = project.config
    names = {s.name: s for s in steps}
    out = {s.name: s for s in steps}
    for name, mapping in config.pipeline.wire.items():
        where = config.where("pipeline", "wire", name)
        if name not in names:
            raise ConfigError(
                f"{where}: pipeline.wire names step '{name}', which is not in the pipeline "
                f"(steps: {', '.join(names)}).",
                field="pipeline.wire",
            )
        out[name] = _rewired(names[name], mapping, where)
    return [out[s.name] for s in steps]


def _custom(project: Project, entry: CustomStepConfig, where: str) -> StepSpec:
    module_name, _, attr = entry.function.partition(":")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{where}: cannot import the step '{entry.function}' ({type(exc).__name__}: {exc}). "
            f"Put {module_name}.py in the project directory ({project.root}) or install it.",
            field="pipeline.steps",
        ) from exc
    spec = spec_of(function)
    if spec is None:
        raise ConfigError(
            f"{where}: '{entry.function}' is not a declared step; decorate it with "
            "@keel.step(outputs={...}).",
            field="pipeline.steps",
        )
    params = dict(entry.params)
    section = spec.section

    def with_params(p: Project) -> Any:
        return [section(p), params]

    declared = replace(
        spec,
        name=entry.name or spec.name,
        after=tuple(entry.after),
        origin=where,
        section=with_params,
        code=project_code_hash(function, project.root),
    )
    declared = _rewired(declared, entry.inputs, where)
    return replace(declared, params=params)


def _rewired(spec: StepSpec, mapping: dict[str, str], where: str) -> StepSpec:
    ports = {port.name for port in spec.inputs}
    unknown = sorted(set(mapping) - ports)
    if unknown:
        raise ConfigError(
            f"{where}: step '{spec.name}' has no input '{unknown[0]}' (inputs: "
            f"{', '.join(sorted(ports)) or 'none'}).",
            field="pipeline",
        )
    return replace(spec, wiring={**spec.wiring, **mapping})


def project_code_hash(function: Any, root: Path) -> str:
    """sha256 over the source of ``function`` and of every function or class it reaches in
    modules under ``root`` (the project's own code), transitively: editing a helper a custom
    step calls changes its cache key; library code does not count."""
    import hashlib

    from keel.pipeline.cache_key import source_hash

    root = root.resolve()
    seen: dict[str, str] = {}
    pending = [function]
    while pending and len(seen) < 1000:  # bounded: a project's own functions, not the world
        current = pending.pop()
        name = f"{getattr(current, '__module__', '')}.{getattr(current, '__qualname__', '')}"
        if name in seen:
            continue
        try:
            seen[name] = source_hash(current)
        except (OSError, TypeError):
            continue
        module = inspect.getmodule(current)
        for value in _referenced(current, module):
            if _in_project(value, root):
                pending.append(value)
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}={seen[name]}\n".encode())
    return digest.hexdigest()


def _referenced(function: Any, module: ModuleType | None) -> list[Any]:
    """Functions and classes a function's code names through its module's globals."""
    code = getattr(function, "__code__", None)
    if code is None or module is None:
        return []
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions and lambdas
        if inspect.iscode(const):
            names |= set(const.co_names)
    found = []
    for name in names:
        value = getattr(module, name, None)
        if inspect.isfunction(value) or inspect.isclass(value):
            found.append(value)
        elif inspect.ismodule(value):
            found += [v for v in vars(value).values() if inspect.isfunction(v)]
    return found


def _in_project(value: Any, root: Path) -> bool:
    try:
        file = inspect.getsourcefile(value)
    except TypeError:
        return False
    if file is None:
        return False
    path = Path(file).resolve()
    return path.is_relative_to(root) and ".venv" not in path.parts
