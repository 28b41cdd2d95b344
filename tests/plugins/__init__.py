"""The example plug-in package (``keel_example_plugin/``) and how tests install it.

The plug-in is installed the way a user installs one, with pip, but into a directory of its own
(``--target``) that tests put on ``sys.path`` or ``PYTHONPATH``: offline (``--no-index``,
``--no-deps``, ``--no-build-isolation`` with the environment's setuptools), from a copy of the
sources so no build files land in the repository, and without touching the virtual environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["PLUGIN", "install_plugin", "write_dist"]

PLUGIN = Path(__file__).resolve().parent / "keel_example_plugin"


def install_plugin(workdir: Path) -> Path:
    """pip-install the example plug-in under ``workdir``; the directory to put on the path."""
    source, site = workdir / "source", workdir / "site"
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(PLUGIN, source, ignore=ignore)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
               "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check",
               "--target", str(site), str(source)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"pip install of the example plug-in failed:\n{done.stderr}"
    return site


def write_dist(site: Path, name: str, entry_points: dict[str, dict[str, str]]) -> Path:
    """A minimal installed distribution (``.dist-info`` with entry points) under ``site``."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site
