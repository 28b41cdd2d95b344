"""Environment capture: git commit read from .git files, cached, never a subprocess per run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from keel.store.environment import capture_environment, environment_id, git_commit

REPO = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _repo(root: Path, head: str) -> Path:
    (root / ".git" / "refs" / "heads").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text(head)
    return root


def test_loose_ref_packed_ref_detached_and_worktree(tmp_path: Path) -> None:
    loose = _repo(tmp_path / "loose", "ref: refs/heads/main\n")
    (loose / ".git" / "refs" / "heads" / "main").write_text(SHA + "\n")
    (loose / "sub" / "dir").mkdir(parents=True)
    assert git_commit(loose / "sub" / "dir") == SHA
    packed = _repo(tmp_path / "packed", "ref: refs/heads/dev\n")
    (packed / ".git" / "packed-refs").write_text(f"# pack-refs\n{SHA} refs/heads/dev\n")
    assert git_commit(packed) == SHA
    detached = _repo(tmp_path / "detached", SHA + "\n")
    assert git_commit(detached) == SHA
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {loose / '.git'}\n")
    assert git_commit(worktree) == SHA
    empty = _repo(tmp_path / "empty", "ref: refs/heads/main\n")
    assert git_commit(empty) is None


def test_this_checkout_matches_git_rev_parse() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=False).stdout.strip()  # fmt: skip
    if not expected:
        pytest.skip("git is not installed")
    assert git_commit(REPO) == expected


def test_capture_is_cached_and_runs_no_subprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path / "p", SHA)
    first = capture_environment(repo)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("environment capture started a subprocess")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    again = capture_environment(repo)
    assert again == first and again is not first
    assert again["git"]["commit"] == SHA and again["python"].count(".") == 2
    assert {"numpy", "sqlalchemy", "keel"} <= set(again["packages"])
    assert environment_id(first) == environment_id(again)
    assert environment_id({**first, "python": "0.0.0"}) != environment_id(first)
