"""Loading keel.yaml into a :class:`KeelConfig`, with errors that name the file and line.

Loading reads ``keel.yaml``, deep-merges ``keel.<env>.yaml`` on top when ``KEEL_ENV`` is set,
expands ``${VAR}`` / ``${VAR:-default}`` from the environment, and validates the result into
frozen pydantic models that forbid unknown keys. Every error names the file and line, the bad
key and the closest valid key::

    keel.yaml:14: unknown key 'learning_rte' in model.params. Did you mean 'learning_rate'?

Environment overrides live in one typed table (:data:`ENVIRONMENT`), read at load time.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import orjson
import yaml
from pydantic import BaseModel, ValidationError

from keel.config.base import dotted
from keel.config.project import KeelConfig
from keel.errors import ConfigError
from keel.settings import SETTINGS, environment_variable, load_settings

__all__ = ["CONFIG_FILE", "ENVIRONMENT", "config_hash", "load_config", "yaml_line"]

CONFIG_FILE = "keel.yaml"

#: Environment variables Keel reads, and what each does (from :data:`keel.settings.SETTINGS`).
ENVIRONMENT: dict[str, str] = {s.variable: s.help for s in SETTINGS}


def config_hash(value: BaseModel | Mapping[str, Any]) -> str:
    """A stable sha256 of a config (or a section of one): canonical JSON, sorted keys."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --- loading ---------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path = CONFIG_FILE, *, env: str | None = None) -> KeelConfig:
    """Load and validate keel.yaml, with the ``keel.<env>.yaml`` overlay when one is chosen.

    Args:
        path: The keel.yaml file, or the directory that holds it.
        env: Overlay name; defaults to ``$KEEL_ENV``.

    Returns:
        The frozen, validated configuration.

    Raises:
        ConfigError: The file is missing or unreadable, or a key or value is wrong; the message
            names file:line and the fix.
    """
    file = Path(path)
    if file.is_dir():
        file = file / CONFIG_FILE
    data, lines = _read_yaml(file)
    env = env if env is not None else load_settings().env
    if env:
        overlay = file.with_name(f"{file.stem}.{env}{file.suffix}")
        if not overlay.exists():
            raise ConfigError(
                f"KEEL_ENV={env} but {overlay} does not exist. Create it or unset KEEL_ENV."
            )
        extra, extra_lines = _read_yaml(overlay)
        data = _merge(data, extra)
        lines.update(extra_lines)
    data = _interpolate(data, (), lines)
    try:
        config = KeelConfig.model_validate(data)
    except ValidationError as exc:
        first = dotted(tuple(exc.errors()[0]["loc"])) if exc.errors() else None
        raise ConfigError(_explain(exc, lines, file), field=first) from exc
    config._where = dict(lines)  # where each key is, for errors found later (custom steps)
    return config


def _read_yaml(file: Path) -> tuple[dict[str, Any], dict[Path_, str]]:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        msg = f"{file}: no such file. Run 'keel init' to create a project, or pass --project."
        raise ConfigError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read it ({exc}).") from exc
    try:
        node, data = _parse_yaml(text, _FAST_LOADER)
    except yaml.YAMLError:
        try:  # the pure-Python parser words its errors as users have seen them: say it its way
            node, data = _parse_yaml(text, yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
            problem = getattr(exc, "problem", None) or str(exc)
            msg = f"{where}: invalid YAML: {problem}. Fix the syntax there."
            raise ConfigError(msg) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: the top level must be a mapping of keys, e.g. 'project: x'.")
    lines: dict[Path_, str] = {}
    if node is not None:
        _index_lines(node, (), file.name, lines)
    return data, lines


#: libyaml's loader when PyYAML was built with it (same values and marks, ~10x faster).
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str, loader_class: Any) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its value, from one parse."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return node, (None if node is None else loader.construct_document(node))
    finally:
        loader.dispose()


def yaml_line(text: str, field: str | None, name: str) -> str | None:
    """``name:LINE`` of a dotted ``field`` (``columns.ts.unit``) in a YAML document's text: of
    its key, else of the deepest part of it found; None when none is (or the text does not
    parse). For files other than keel.yaml that name their errors' lines (schema.yaml)."""
    if not field:
        return None
    try:
        node, _ = _parse_yaml(text, _FAST_LOADER)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    lines: dict[Path_, str] = {}
    _index_lines(node, (), name, lines)
    parts = tuple(field.split("."))
    found = (lines.get(parts[:n]) for n in range(len(parts), 0, -1))
    return next((line for line in found if line is not None), None)


def _index_lines(node: yaml.Node, at: Path_, name: str, out: dict[Path_, str]) -> None:
    out[at] = f"{name}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*at, str(key.value))
            out[child] = f"{name}:{key.start_mark.line + 1}"
            _index_lines(value, child, name, out)
            out[child] = f"{name}:{key.start_mark.line + 1}"
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*at, i), name, out)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _interpolate(value: Any, at: Path_, lines: dict[Path_, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*at, str(k)), lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*at, i), lines) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def expand(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = environment_variable(name)
            # shell semantics: ':-' also replaces a variable that is set but empty
            if found or (found is not None and default is None):
                return found
            if default is not None:
                return default
            where = _where(at, lines)
            msg = (
                f"{where}: environment variable {name} is not set (used in {dotted(at)}). "
                f"Set it, or write ${{{name}:-default}} to give a default."
            )
            raise ConfigError(msg, field=dotted(at))

        return _VAR.sub(expand, value)
    return value


def _explain(exc: ValidationError, lines: dict[Path_, str], file: Path) -> str:
    messages = []
    for error in exc.errors():
        loc: Path_ = tuple(error["loc"])
        where = _where(loc, lines) if lines else str(file)
        parent = dotted(loc[:-1]) if loc else ""
        key = str(loc[-1]) if loc else ""
        if error["type"] == "extra_forbidden":
            known = _fields_at(loc[:-1])
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            section = f" in {parent}" if parent else ""
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(known)}."
            messages.append(f"{where}: unknown key '{key}'{section}.{hint}")
        elif error["type"] == "missing":
            messages.append(f"{where}: missing required key '{dotted(loc)}'. Add it.")
        elif not loc:  # a check across sections: its message starts with the key it names
            text = str(error["msg"]).removeprefix("Value error, ")
            named = tuple(text.split(" ", 1)[0].split("."))
            messages.append(f"{_where(named, lines) if lines else where}: {text}.")
        else:
            got = error.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            messages.append(f"{where}: {dotted(loc)}: {error['msg']}{shown}.")
    return "\n".join(messages)


def _where(loc: Path_, lines: Mapping[Path_, str]) -> str:
    for n in range(len(loc), -1, -1):
        found = lines.get(loc[:n])
        if found is not None:
            return found
    return CONFIG_FILE


def _fields_at(loc: Path_) -> list[str]:
    """The valid keys of the model at a location, for did-you-mean suggestions."""
    model: Any = KeelConfig
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        # a field spelt differently in keel.yaml (``schema:``) is offered by that spelling
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None or get_args(annotation):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
