"""Layers point down only: a module imports its own layer and those below (../shared/DESIGN.md).

0 errors, types, config, settings, version, plugins · 1 store, project · 2 data, validate ·
3 features · 4 train, tracking, evaluate · 5 registry · 6 monitor, serve · 7 pipeline ·
8 api, cli, commands, ui, demo, testing and the package facade. Imports under
``if TYPE_CHECKING:`` are for annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "keel"
LAYERS: dict[str, int] = {
    "errors": 0, "types": 0, "config": 0, "settings": 0, "version": 0, "plugins": 0,
    "store": 1, "project": 1,
    "data": 2, "validate": 2,
    "features": 3,
    "train": 4, "tracking": 4, "evaluate": 4,
    "registry": 5,
    "monitor": 6, "serve": 6,
    "pipeline": 7,
    "api": 8, "cli": 8, "commands": 8, "ui": 8, "demo": 8, "testing": 8, "__init__": 8,
}  # fmt: skip


def _component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "keel":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _runtime_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``keel...`` modules imported outside ``if TYPE_CHECKING:`` blocks, with their lines."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "keel" and node.level == 0:
            # `from keel import errors` is a submodule; `from keel import run` is the facade
            found.extend(
                (node.lineno, f"keel.{a.name}" if a.name in LAYERS else "keel") for a in node.names
            )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def test_every_component_has_a_layer() -> None:
    components = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in _modules()}
    assert components - set(LAYERS) == set(), "add the new component to LAYERS and DESIGN.md"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    own = path.relative_to(SRC).parts[0].removesuffix(".py")
    level = LAYERS[own]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    upward = []
    for line, module in _runtime_imports(tree):
        component = _component(module)
        if component is None or component not in LAYERS or component == own:
            continue
        if LAYERS[component] > level:
            upward.append(f"line {line}: {module} (layer {LAYERS[component]} > {level})")
    assert not upward, f"{path.relative_to(SRC)} ({own}, layer {level}) imports upward: {upward}"
