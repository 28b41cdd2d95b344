"""A wheel of the running Keel, built from its source tree, for an image to install.

``keel build docker`` must bake in *this* Keel: on PyPI the name ``keel`` belongs to an
unrelated project, so ``pip install keel==0.1.0`` in a Dockerfile installs the wrong thing.
When Keel runs from a source checkout (an editable install: ``keel/__init__.py`` under
``src/`` beside a ``pyproject.toml`` naming the project ``keel``), :func:`build_wheel` builds a
wheel of it with the running interpreter's pip (no build isolation, no network: setuptools is
already installed), in a temporary copy of the tree so that no ``build/`` directory is left in
the checkout (nor a stale one read back into a later wheel). Installed from a wheel, Keel has
no tree to build from: :func:`build_wheel` raises, saying how to pass ``--wheel``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from keel.errors import ConfigError

__all__ = ["build_wheel", "source_tree"]

#: Files of the tree a wheel is built from, beside ``src/``.
_TOP_FILES = ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "MANIFEST.in")
_HOW = (
    "build one in Keel's source checkout (python -m pip wheel --no-deps -w dist .) and "
    "pass it: keel build docker NAME@VERSION --wheel dist/keel-<version>-py3-none-any.whl"
)


def source_tree() -> Path | None:
    """The source checkout the running Keel is imported from, or None (installed from a
    wheel: no tree to build from)."""
    package = Path(__file__).resolve().parents[1]  # keel/, this module's package's parent
    root = package.parents[1]
    pyproject = root / "pyproject.toml"
    if package.parent.name != "src" or not pyproject.is_file():
        return None
    try:
        name = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None
    return root if name == "keel" else None


def build_wheel(into: Path) -> Path:
    """Build a wheel of the running Keel into the directory ``into``; its path.

    Raises:
        ConfigError: Keel is not running from a source tree, or the build failed (with pip's
            last words); both say how to build a wheel and pass it with ``--wheel``.
    """
    root = source_tree()
    if root is None:
        msg = (
            "this Keel was installed from a wheel, not a source tree, so there is none to "
            "build the image's Keel from, and installing 'keel' by name would fetch another "
            f"project from PyPI: pass --wheel with the Keel wheel you installed, or {_HOW}."
        )
        raise ConfigError(msg, field="--wheel")
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keel-wheel-") as scratch:
        copy = Path(scratch) / "keel"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(root / "src", copy / "src", ignore=ignore)
        for name in _TOP_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, copy / name)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                   "--quiet", "--wheel-dir", str(into), str(copy)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    wheels = sorted(into.glob("keel-*.whl"))
    if done.returncode != 0 or not wheels:
        said = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        msg = f"building a Keel wheel from {root} failed ({said}); {_HOW}."
        raise ConfigError(msg, field="--wheel")
    return wheels[-1]
