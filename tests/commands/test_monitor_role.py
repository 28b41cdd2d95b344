"""`keel monitor NAME --role` and `keel monitor run NAME --role`: a misspelt role is a usage
error naming the roles, not an empty selection reported as `not_enough_data`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from keel.commands.monitor import checked_role
from keel.errors import ConfigError


def test_every_logged_role_is_accepted() -> None:
    assert [checked_role(r) for r in ("primary", "canary", "shadow", "ab", None)] == [
        "primary", "canary", "shadow", "ab", None,
    ]  # fmt: skip


@pytest.mark.parametrize("command", [["monitor", "bin"], ["monitor", "run", "bin"]])
def test_a_misspelt_role_exits_2_with_the_roles(tmp_path: Path, command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", *command, "--role", "canery"],
        cwd=tmp_path, text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--role: 'canery' is not a deployment role" in done.stderr
    assert "primary, canary, shadow, ab" in done.stderr
    with pytest.raises(ConfigError, match="canery"):
        checked_role("canery")
