"""The keel.yaml reference (``docs/keel-yaml.md``), generated from the config models.

Every key is documented from its pydantic field: type, constraints, default and
``Field(description=...)``; every section from its model's docstring. The committed file is
compared with this output by a test, so the reference cannot drift from the code. Regenerate::

    python -m keel.config.reference > docs/keel-yaml.md
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from keel.config.features import STEP_PARAMS, TransformStep
from keel.config.project import KeelConfig
from keel.plugins import REGISTRIES
from keel.settings import PROVIDED, SETTINGS

__all__ = ["REGENERATE", "render_reference", "undocumented_fields"]

#: The command that rewrites the committed reference.
REGENERATE = "python -m keel.config.reference > docs/keel-yaml.md"

_INTRO = f"""\
# keel.yaml reference

<!-- Generated from the config models in src/keel/config/ by `{REGENERATE}`.
     Do not edit by hand: a test fails when this file and the models differ. -->

Every key of `keel.yaml`, with its type, default and meaning. Unknown keys are errors that name
the file, the line and the closest valid key. `${{VAR}}` and `${{VAR:-default}}` are expanded
from the environment, and `KEEL_ENV=prod` merges `keel.prod.yaml` over `keel.yaml`.
`keel init DIR --from data.csv --target y` writes a commented keel.yaml for a file of your own;
`keel init --example NAME` copies a complete example project.
"""

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def render_reference() -> str:
    """The whole reference as Markdown: one section per config model, in keel.yaml order."""
    sections = list(_sections())
    homes = {model: path for path, model in sections}
    parts = [_INTRO, _contents(sections)]
    for path, model in sections:
        parts.append(_section(path, model, homes, sections))
    parts.append(_steps())
    parts.append(_environment())
    parts.append(_plugins())
    return "\n".join(parts).rstrip() + "\n"


def undocumented_fields() -> list[str]:
    """Keys of keel.yaml without a description (``section.key``), for the docs test.

    A key whose value is a section is described by the section's docstring instead.
    """
    missing = [
        _join(path, _key(name, field))
        for path, model in _sections()
        for name, field in model.model_fields.items()
        if not _description(field)
    ]
    for kind, model in STEP_PARAMS.items():
        missing += [
            f"steps[kind={kind}].{name}"
            for name, field in model.model_fields.items()
            if not (field.description or "").strip()
        ]
    return missing


def _sections() -> Iterator[tuple[str, type[BaseModel]]]:
    """``(path, model)`` for every model reachable from :class:`KeelConfig`, first path wins."""
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[str, type[BaseModel]]] = [("", KeelConfig)]
    while queue:
        path, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        yield path, model
        for name, field in model.model_fields.items():
            key = _join(path, _key(name, field))
            queue += [(key + suffix, inner) for suffix, inner in _models_in(field.annotation)]


def _models_in(annotation: Any, suffix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    if annotation is TransformStep:  # documented per kind (see _steps), not as {kind, params}
        return
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield suffix, annotation
        return
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        yield from _models_in(args[0], suffix + "[]")
    elif origin is dict:
        yield from _models_in(args[1], suffix + ".<name>")
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _models_in(arg, suffix)


def _contents(sections: list[tuple[str, type[BaseModel]]]) -> str:
    lines = ["## Sections", ""]
    for path, _model in sections:
        label = path or "top level"
        lines.append(f"- [`{label}`](#{_anchor(path)})")
    lines.append("- [transform step kinds](#transform-steps)")
    lines.append("- [environment variables](#environment)")
    lines.append("- [plug-ins (entry points)](#plugins)")
    return "\n".join(lines) + "\n"


def _section(
    path: str,
    model: type[BaseModel],
    homes: dict[type[BaseModel], str],
    sections: list[tuple[str, type[BaseModel]]],
) -> str:
    title = f"`{path}`" if path else "Top level"
    lines = [f'<a id="{_anchor(path)}"></a>', f"## {title}", ""]
    also = _also_at(model, path)
    doc = _markdown(inspect.cleandoc(model.__doc__ or ""))
    if doc:
        lines += [doc, ""]
    if also:
        lines += [f"Also used at: {', '.join(f'`{p}`' for p in also)}.", ""]
    lines += _table(model, homes)
    return "\n".join(lines) + "\n"


def _table(model: type[BaseModel], homes: dict[type[BaseModel], str]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        cells = (
            f"`{_key(name, field)}`",
            _type(field.annotation, homes) + _constraints(field),
            _default(field),
            _description(field),
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _also_at(model: type[BaseModel], home: str) -> list[str]:
    """Other paths where a section's model appears (e.g. data.test beside data.train)."""
    paths: list[str] = []
    stack: list[tuple[str, type[BaseModel]]] = [("", KeelConfig)]
    visited: set[tuple[str, type[BaseModel]]] = set()
    while stack:
        path, current = stack.pop()
        if (path, current) in visited:
            continue
        visited.add((path, current))
        for name, field in current.model_fields.items():
            key = _join(path, _key(name, field))
            for suffix, inner in _models_in(field.annotation):
                if inner is model and key + suffix != home:
                    paths.append(key + suffix)
                stack.append((key + suffix, inner))
    return sorted(set(paths))


def _steps() -> str:
    lines = [
        '<a id="transform-steps"></a>',
        "## Transform step kinds",
        "",
        "Each item of `features.transforms[].steps` is a mapping with `kind` and that kind's",
        "parameters, e.g. `{kind: impute, strategy: median, indicator: true}`.",
        "",
    ]
    for kind, model in STEP_PARAMS.items():
        lines.append(f"### `{kind}`")
        lines.append("")
        if model.model_fields:
            lines += _table(model, {})
        else:
            lines.append("No parameters.")
        lines.append("")
    return "\n".join(lines)


def _environment() -> str:
    lines = [
        '<a id="environment"></a>',
        "## Environment variables",
        "",
        "Read when keel.yaml is loaded, never at import (the table is `keel.settings.SETTINGS`); "
        "each overrides the setting it names. An empty variable counts as unset.",
        "",
        "| variable | default | effect |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{s.variable}` | {f'`{s.default}`' if s.default else ''} | {_cell(s.help)} |"
        for s in SETTINGS
    ]
    lines += ["", "Keel sets these for the programs it starts or writes (it never reads them):", ""]
    lines += ["| variable | meaning |", "|---|---|"]
    lines += [f"| `{s.variable}` | {_cell(s.help)} |" for s in PROVIDED]
    return "\n".join(lines) + "\n"


def _plugins() -> str:
    lines = [
        '<a id="plugins"></a>',
        "## Plug-ins (entry points)",
        "",
        "A package adds a flavor, a task, an online store, an executor or an alert sink by "
        "declaring a Python entry point in one of these groups (see `keel.plugins`); keel.yaml "
        "then accepts its name. `keel.testing` has contract suites that prove a trainer or a "
        "task plug-in right.",
        "",
        "| group | chosen by | built-in |",
        "|---|---|---|",
    ]
    for group, registry in REGISTRIES.items():
        builtins = ", ".join(f"`{name}`" for name in registry.builtins) or "none"
        lines.append(f"| `{group}` | `{registry.setting}` | {builtins} |")
    return "\n".join(lines) + "\n"


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _description(field: FieldInfo) -> str:
    """The field's description; for a section, the first paragraph of its model's docstring."""
    text = field.description or ""
    if not text.strip():
        models = [model for _suffix, model in _models_in(field.annotation)]
        if models and models[0].__doc__:
            text = inspect.cleandoc(models[0].__doc__).split("\n\n")[0]
    return _markdown(" ".join(text.split()))


def _markdown(text: str) -> str:
    """Docstring reST to Markdown: ``code`` to `code`, :role:`name` to `name`."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1]}`", text)
    return text.replace("``", "`")


def _anchor(path: str) -> str:
    if not path:
        return "top-level"
    cleaned = path.replace("[]", "").replace("<name>", "name")
    return "".join(c if c.isalnum() else "-" for c in cleaned).strip("-")


def _type(annotation: Any, homes: dict[type[BaseModel], str]) -> str:
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation is Any:
        return "any"
    if annotation is TransformStep:
        return "[step](#transform-steps)"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        home = homes.get(annotation)
        return f"[`{home}`](#{_anchor(home)})" if home is not None else "mapping"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type(args[0], homes)}"
    if origin is dict:
        return f"mapping of {_type(args[0], homes)} to {_type(args[1], homes)}"
    if origin in (Union, types.UnionType):
        return " or ".join(_type(arg, homes) for arg in args)
    return f"`{getattr(annotation, '__name__', annotation)}`"


def _constraints(field: FieldInfo) -> str:
    bounds = {
        annotated_types.Ge: ("≥", "ge"),
        annotated_types.Gt: (">", "gt"),
        annotated_types.Le: ("≤", "le"),
        annotated_types.Lt: ("<", "lt"),
    }
    found = []
    for item in field.metadata:
        for kind, (symbol, attribute) in bounds.items():
            if isinstance(item, kind):
                found.append(f"{symbol} {getattr(item, attribute)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            found.append(f"at least {item.min_length} item(s)")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            found.append(f"matching `{pattern}`")
    return f" ({', '.join(found)})" if found else ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        factory: Any = field.default_factory
        if inspect.isclass(factory) and issubclass(factory, BaseModel):
            return "its defaults"
        value = factory()
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    return f"`{_flow(value)}`"


def _flow(value: Any) -> str:
    import yaml

    dumped = yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()
    return dumped[1:-1]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_reference())
