"""Declared steps: a plain function with named, typed inputs and outputs and its side effects.

A step is any function ``fn(ctx, **inputs) -> {output name: Artifact}`` decorated with
:func:`step`, which records what it reads and writes::

    @keel.step(inputs={"train_snapshot": "snapshot"}, outputs={"train_snapshot": "snapshot"})
    def add_ratio(ctx: keel.StepContext, train_snapshot: keel.Artifact) -> dict[str, Artifact]:
        table = ctx.read_table(train_snapshot)
        ratio = pc.divide(table["capital-gain"], pc.add(table["hours-per-week"], 1))
        return {"train_snapshot": ctx.put_table(table.append_column("ratio", ratio))}

Inputs and outputs are artifact names of the pipeline (``train_snapshot``, ``features``,
``model``, ``evaluation``, ...) with a kind (``snapshot``, ``model``, ...; ``any`` matches
every kind). A step that reads a name and writes it again *refines* it: the steps after it get
its version. Keel's own steps are declared the same way, by import path
(:func:`lazy_step`, in :mod:`keel.pipeline.standard`): a :class:`StepRef` stands for the
function until the step must run, so deciding that a step is cached (its cache key hashes the
function's source, read from its file) imports none of its dependencies. :mod:`keel.pipeline.graph`
checks the whole graph before anything runs.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, overload

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.project import Project
    from keel.types import Artifact

__all__ = [
    "EFFECTS",
    "Port",
    "StepRef",
    "StepResources",
    "StepSpec",
    "lazy_step",
    "spec_of",
    "step",
    "target_of",
]

#: Side effects a step may declare: what it changes beyond adding artifacts.
EFFECTS = ("registers", "serves", "writes_files", "network")
ANY = "any"
#: The most retries a step may ask for.
MAX_RETRIES = 20
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Port:
    """One named input or output of a step.

    Attributes:
        name: The artifact name in the pipeline (``train_snapshot``).
        kind: Its kind (``snapshot``, ``model``...), or ``any``.
        optional: An input the step can do without; an output it may not write.
    """

    name: str
    kind: str = ANY
    optional: bool = False


@dataclass(frozen=True)
class StepResources:
    """What one execution of a step holds while it runs: an executor starts a step only when
    these fit beside the steps already running (locally: ``resources.cpus`` and memory in all;
    on Ray: a node with them free).

    Attributes:
        cpus: CPUs (default 1).
        memory: Bytes of memory, or None: not counted.
        gpus: GPUs (Ray; the local executor runs a GPU step only when none other is running).
    """

    cpus: float = 1.0
    memory: int | None = None
    gpus: float = 0.0

    @classmethod
    def of(cls, value: StepResources | Mapping[str, Any] | None, where: str) -> StepResources:
        """From a mapping (``{"cpus": 2, "memory": "4GB"}``) or as it is.

        Raises:
            ConfigError: An unknown key, or a value that is not a positive number / size.
        """
        if value is None:
            return cls()
        if isinstance(value, StepResources):
            return value
        from pydantic import ValidationError

        from keel.config import ResourcesConfig

        unknown = sorted(set(value) - {"cpus", "memory", "gpus"})
        if unknown:
            msg = f"{where}: resources has no key {unknown[0]!r} (keys: cpus, memory, gpus)."
            raise ConfigError(msg, field="resources")
        try:
            parsed = ResourcesConfig.model_validate(dict(value))
        except ValidationError as exc:
            problem = exc.errors()[0]
            at = ".".join(str(p) for p in problem["loc"])
            msg = f"{where}: resources.{at}: {problem['msg']}."
            raise ConfigError(msg, field="resources") from exc
        return cls(parsed.cpus, parsed.memory_bytes(), parsed.gpus)

    def describe(self) -> str:
        """``2 CPU, 0 GPU, memory 4.0 GiB`` for messages."""
        memory = "unset" if self.memory is None else f"{self.memory / 1024**3:.1f} GiB"
        return f"{self.cpus:g} CPU, {self.gpus:g} GPU, memory {memory}"


def _no_section(project: Project) -> Any:
    return {}


@dataclass(frozen=True)
class StepRef:
    """A step function named by its import path, imported the first time it is called.

    Its source is read from the module's file without importing the module, so the runner
    hashes it (the step's cache key) exactly as it would hash the imported function.

    Attributes:
        target: ``package.module:function`` (a function defined at the module's top level).
    """

    target: str

    @property
    def module(self) -> str:
        """The module's dotted name."""
        return self.target.partition(":")[0]

    @property
    def name(self) -> str:
        """The function's name in its module."""
        return self.target.partition(":")[2]

    def resolve(self) -> Callable[..., dict[str, Artifact]]:
        """Import the module and return the function.

        Raises:
            ConfigError: The module cannot be imported or has no such function.
        """
        try:
            function = getattr(importlib.import_module(self.module), self.name)
        except (ImportError, AttributeError) as exc:
            msg = f"step function {self.target} cannot be imported ({type(exc).__name__}: {exc})."
            raise ConfigError(msg) from exc
        if not callable(function):
            raise ConfigError(f"step function {self.target} is not a function.")
        return function  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Artifact]:
        return self.resolve()(*args, **kwargs)

    def source(self) -> str:
        """The function's source lines, decorators included, as :func:`inspect.getsource`
        returns them for the imported function; the module is located, not imported.

        Raises:
            ConfigError: The module's file cannot be found or read, or it defines no such
                top-level function.
        """
        try:
            found = importlib.util.find_spec(self.module)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"step function {self.target}: no module ({exc}).") from exc
        if found is None or not found.origin or not found.has_location:
            raise ConfigError(f"step function {self.target}: its module has no source file.")
        try:
            sources = _function_sources(found.origin)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            msg = f"step function {self.target}: cannot read {found.origin}: {exc}"
            raise ConfigError(msg) from exc
        if self.name not in sources:
            msg = f"step function {self.target}: {found.origin} defines no {self.name}()."
            raise ConfigError(msg)
        return sources[self.name]


#: Parsed module files: path -> (modification time, size, {function name: source}).
_SOURCES: dict[str, tuple[int, int, dict[str, str]]] = {}


def _function_sources(path: str) -> dict[str, str]:
    """The source of every top-level function of a Python file (parsed once per version)."""
    from pathlib import Path

    stat = Path(path).stat()
    cached = _SOURCES.get(path)
    if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    text = Path(path).read_text(encoding="utf-8")  # newlines made "\n", as linecache reads it
    lines = io.StringIO(text).readlines()  # split at "\n" only, as ast counts lines
    found = {}
    for node in ast.parse(text, filename=path).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found[node.name] = "".join(lines[first - 1 : node.end_lineno])
    _SOURCES[path] = (stat.st_mtime_ns, stat.st_size, found)
    return found


def target_of(fn: Any) -> str:
    """``module:function`` of a step function or :class:`StepRef`, for comparisons."""
    if isinstance(fn, StepRef):
        return fn.target
    return f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"


@dataclass(frozen=True)
class StepSpec:
    """A declared step.

    Attributes:
        name: Unique in the pipeline; names its runs.
        fn: ``fn(ctx)`` or ``fn(ctx, **inputs)``, returning ``{output name: Artifact}``; a
            :class:`StepRef` for a step declared by import path (:func:`lazy_step`).
        inputs: What it reads, by parameter name.
        outputs: What it writes.
        effects: Declared side effects (see :data:`EFFECTS`); ``registers`` steps are not
            re-executed by ``keel reproduce``.
        section: The configuration it reads (part of its cache key).
        extra_key: More cache key (e.g. a raw file's fingerprint), from project and inputs.
        after: Steps it must run after, besides those whose outputs it reads.
        wiring: Input parameter -> the pipeline name it reads (default: the same name).
        origin: Where it was declared (``keel.yaml:42`` for a custom step), for messages.
        params: Values from keel.yaml the step reads as ``ctx.params``.
        code: A hash of its code when more than its own source counts (a custom step: the
            project functions it calls too); None: the function's source.
        resources: What it holds while it runs (default 1 CPU); keel.yaml can override.
        retries: Attempts after a transient failure (None: ``pipeline.retries.default``).
    """

    name: str
    fn: Callable[..., dict[str, Artifact]]
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    effects: tuple[str, ...] = ()
    section: Callable[[Project], Any] = _no_section
    extra_key: Callable[[Project, dict[str, Artifact]], str] | None = None
    after: tuple[str, ...] = ()
    wiring: Mapping[str, str] = field(default_factory=dict)
    origin: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    code: str | None = None
    resources: StepResources = field(default_factory=StepResources)
    retries: int | None = None

    def source(self, port: Port) -> str:
        """The pipeline name an input reads."""
        return self.wiring.get(port.name, port.name)

    @property
    def where(self) -> str:
        """The step, and where it was declared, for messages."""
        return f"step '{self.name}'" + (f" ({self.origin})" if self.origin else "")

    @property
    def function(self) -> Callable[..., dict[str, Artifact]]:
        """The step's function (imported now when declared by import path)."""
        return self.fn.resolve() if isinstance(self.fn, StepRef) else self.fn

    def call(self, ctx: Any) -> dict[str, Artifact]:
        """Run the function with its inputs as keyword arguments (those it takes)."""
        function = self.function
        parameters = inspect.signature(function).parameters
        named = {
            port.name: ctx.inputs.get(port.name)
            for port in self.inputs
            if port.name in parameters and (port.name in ctx.inputs or not port.optional)
        }
        return function(ctx, **named)

    def with_input(self, name: str, *, kind: str = ANY, optional: bool = False) -> StepSpec:
        """This step reading one more input."""
        if any(port.name == name for port in self.inputs):
            return self
        return replace(self, inputs=(*self.inputs, Port(name, kind, optional)))


@overload
def step(fn: F, /) -> F: ...


@overload
def step(
    *,
    name: str | None = None,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    optional: tuple[str, ...] = (),
    effects: tuple[str, ...] = (),
    section: Callable[[Project], Any] | None = None,
    key: Callable[[Project, dict[str, Artifact]], str] | None = None,
    resources: StepResources | Mapping[str, Any] | None = None,
    retries: int | None = None,
) -> Callable[[F], F]: ...


def step(
    fn: F | None = None,
    *,
    name: str | None = None,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    optional: tuple[str, ...] = (),
    effects: tuple[str, ...] = (),
    section: Callable[[Project], Any] | None = None,
    key: Callable[[Project, dict[str, Artifact]], str] | None = None,
    resources: StepResources | Mapping[str, Any] | None = None,
    retries: int | None = None,
) -> Any:
    """Declare a pipeline step (a decorator, with or without arguments).

    Args:
        fn: The function: its first parameter is the step context, the others its inputs.
        name: The step's name (default: the function's).
        inputs: Input name -> kind; default: every parameter after the context, kind ``any``.
        outputs: Output name -> kind; required (a step that writes nothing is not a step).
        optional: Inputs it can do without and outputs it may not write.
        effects: Side effects, from :data:`EFFECTS`.
        section: The configuration it reads, from the project (joins its cache key).
        key: More cache key from the project and the inputs.
        resources: What one execution holds, e.g. ``{"cpus": 2, "memory": "4GB"}`` (default
            1 CPU); the executor runs it only when that fits (``pipeline.resources`` in
            keel.yaml overrides).
        retries: Attempts after a transient failure (default ``pipeline.retries``); a config
            or data error is never retried.

    Raises:
        ConfigError: No outputs, an unknown effect, inputs that are not parameters, or bad
            resources / retries.

    Example:
        >>> @step(outputs={"report": "report"})
        ... def audit(ctx, evaluation): ...
    """

    def declare(function: F) -> F:
        spec = _spec(function, name, inputs, outputs, optional, effects, section, key)
        label = f"@keel.step {spec.name}"
        if retries is not None and not 0 <= retries <= MAX_RETRIES:
            msg = f"{label}: retries={retries}; give 0 to {MAX_RETRIES}."
            raise ConfigError(msg, field="retries")
        spec = replace(spec, resources=StepResources.of(resources, label), retries=retries)
        function.__keel_step__ = spec  # type: ignore[attr-defined]
        return function

    return declare(fn) if fn is not None else declare


def lazy_step(
    target: str,
    *,
    name: str,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str],
    optional: tuple[str, ...] = (),
    effects: tuple[str, ...] = (),
    section: Callable[[Project], Any] | None = None,
    key: Callable[[Project, dict[str, Artifact]], str] | None = None,
    resources: StepResources | Mapping[str, Any] | None = None,
    retries: int | None = None,
) -> StepSpec:
    """Declare a step by the import path of its function, ``package.module:function``, without
    importing it: the module is imported only when the step executes (not when its cache hits).
    The arguments are :func:`step`'s; ``inputs`` are listed (the function is not inspected),
    and an input the function can do without is named in ``optional``.

    Raises:
        ConfigError: The target is not ``module:function``, no outputs, an unknown effect, or
            bad resources / retries.

    Example:
        >>> spec = lazy_step("keel.pipeline.steps:profile", name="profile",
        ...                  inputs={"train_snapshot": "snapshot"},
        ...                  outputs={"statistics": "statistics"})
    """
    module, _, function = target.partition(":")
    label = f"step {name} ({target})"
    if not module or not function.isidentifier():
        raise ConfigError(f"{label}: give the function as 'package.module:function'.")
    if not outputs:
        raise ConfigError(f"{label}: declare its outputs, e.g. outputs={{'x': 'any'}}.")
    unknown = [e for e in effects if e not in EFFECTS]
    if unknown:
        raise ConfigError(f"{label}: unknown effect {unknown[0]!r}; effects: {EFFECTS}.")
    if retries is not None and not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"{label}: retries={retries}; give 0 to {MAX_RETRIES}.", field="retries")
    return StepSpec(
        name=name,
        fn=StepRef(target),
        inputs=tuple(Port(n, k, n in optional) for n, k in (inputs or {}).items()),
        outputs=tuple(Port(n, k, n in optional) for n, k in outputs.items()),
        effects=tuple(effects),
        section=section or _no_section,
        extra_key=key,
        resources=StepResources.of(resources, label),
        retries=retries,
    )


def spec_of(function: Any) -> StepSpec | None:
    """The declaration :func:`step` attached to a function, if any."""
    spec = getattr(function, "__keel_step__", None)
    return spec if isinstance(spec, StepSpec) else None


def _spec(
    function: Callable[..., Any],
    name: str | None,
    inputs: Mapping[str, str] | None,
    outputs: Mapping[str, str] | None,
    optional: tuple[str, ...],
    effects: tuple[str, ...],
    section: Callable[[Project], Any] | None,
    key: Callable[[Project, dict[str, Artifact]], str] | None,
) -> StepSpec:
    label = getattr(function, "__qualname__", repr(function))
    if not outputs:
        raise ConfigError(f"@keel.step {label}: declare its outputs, e.g. outputs={{'x': 'any'}}.")
    unknown = [e for e in effects if e not in EFFECTS]
    if unknown:
        raise ConfigError(f"@keel.step {label}: unknown effect {unknown[0]!r}; effects: {EFFECTS}.")
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters:
        raise ConfigError(f"@keel.step {label}: its first parameter is the step context (ctx).")
    takes = {p.name for p in parameters[1:]}
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    declared = dict(inputs) if inputs is not None else dict.fromkeys(sorted(takes), ANY)
    if inputs is not None and not var_keyword and len(parameters) > 1:
        missing = sorted(set(declared) - takes)
        if missing:
            msg = f"@keel.step {label}: input {missing[0]!r} is not a parameter of the function."
            raise ConfigError(msg)
    defaults = {p.name for p in parameters[1:] if p.default is not inspect.Parameter.empty}
    ins = tuple(Port(n, k, n in optional or n in defaults) for n, k in declared.items())
    outs = tuple(Port(n, k, n in optional) for n, k in outputs.items())
    return StepSpec(
        name=name or function.__name__,
        fn=function,
        inputs=ins,
        outputs=outs,
        effects=tuple(effects),
        section=section or _no_section,
        extra_key=key,
    )
