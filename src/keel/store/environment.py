"""What a run ran on: Python, platform, key package versions and the project's git commit.

Captured once per process (and per project directory for the git commit) and cached: a run
pays a dictionary lookup, never a subprocess. The git commit is read from the files under
``.git`` (``HEAD``, the loose ref, ``packed-refs``), which is what ``git rev-parse HEAD`` does
for the common layouts, including worktrees and submodules whose ``.git`` is a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "capture_environment", "environment_id", "git_commit"]

PACKAGES = (
    "keel",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "lightgbm",
    "xgboost",
    "torch",
    "optuna",
    "ray",
    "sqlalchemy",
)
"""Packages whose versions are recorded (those not installed are left out)."""

_MAX_GIT_DEPTH = 64


def capture_environment(project_dir: str | Path | None = None) -> dict[str, Any]:
    """The environment of this process, with the git commit of ``project_dir`` (or the cwd).

    Returns:
        ``{"python", "implementation", "platform", "machine", "cpus", "packages": {name:
        version}, "git": {"commit", "branch", "root"} | None}``. A fresh dict each call (the
        capture itself is cached).

    Example:
        >>> env = capture_environment()
        >>> sorted(env)[:3]
        ['cpus', 'git', 'implementation']
    """
    start = Path(project_dir) if project_dir is not None else Path.cwd()
    env = dict(_process_environment())
    env["packages"] = dict(env["packages"])
    git = _git_for(str(start.expanduser().absolute()))
    env["git"] = dict(git) if git is not None else None
    return env


def environment_id(env: dict[str, Any]) -> str:
    """sha256 of the environment's canonical JSON: equal environments share one row."""
    text = json.dumps(env, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def git_commit(path: str | Path) -> str | None:
    """The commit checked out in the repository containing ``path``, or None outside one."""
    found = _git_for(str(Path(path).expanduser().absolute()))
    return None if found is None else found["commit"]


@functools.cache
def _process_environment() -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "executable": sys.executable,
        "packages": packages,
    }


@functools.lru_cache(maxsize=64)
def _git_for(start: str) -> dict[str, str] | None:
    directory = Path(start)
    for _ in range(_MAX_GIT_DEPTH):
        dot_git = directory / ".git"
        if dot_git.exists():
            git_dir = _git_dir(dot_git)
            return None if git_dir is None else _read_head(git_dir, directory)
        if directory.parent == directory:
            return None
        directory = directory.parent
    return None


def _git_dir(dot_git: Path) -> Path | None:
    if dot_git.is_dir():
        return dot_git
    # A worktree or submodule: ".git" is a file "gitdir: <path>".
    try:
        text = dot_git.read_text(errors="replace").strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    target = Path(text.removeprefix("gitdir:").strip())
    return target if target.is_absolute() else (dot_git.parent / target).resolve()


def _read_head(git_dir: Path, root: Path) -> dict[str, str] | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return {"commit": head, "branch": "", "root": str(root)}
    ref = head.removeprefix("ref:").strip()
    commit = _resolve_ref(git_dir, ref)
    # A worktree keeps its refs in the main repository ("commondir").
    common = git_dir / "commondir"
    if commit is None and common.exists():
        shared = (git_dir / common.read_text().strip()).resolve()
        commit = _resolve_ref(shared, ref)
    if commit is None:
        return None  # a repository with no commits yet
    return {"commit": commit, "branch": ref.removeprefix("refs/heads/"), "root": str(root)}


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    loose = git_dir / ref
    try:
        return loose.read_text().strip()
    except OSError:
        pass
    try:
        lines = (git_dir / "packed-refs").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        sha, _, name = line.partition(" ")
        if name.strip() == ref and not line.startswith(("#", "^")):
            return sha
    return None
