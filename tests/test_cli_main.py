"""`keel` (cli.main) builds only the invoked command's Typer tree, on a copy of the app: the
module-level ``app`` that in-process callers (CliRunner) use keeps every command."""

from __future__ import annotations

import sys

import pytest
import typer
from typer.main import get_command

from keel import cli


def _names(app: typer.Typer) -> set[str]:
    group = get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


def test_main_leaves_the_global_app_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    commands, groups = list(cli.app.registered_commands), list(cli.app.registered_groups)
    before = _names(cli.app)
    assert {"run", "runs", "models", "init"} <= before
    for argv in (["keel", "runs", "--help"], ["keel", "--debug", "run", "--help"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        assert exit_.value.code == 0
    assert cli.app.registered_commands == commands and cli.app.registered_groups == groups
    assert _names(cli.app) == before


def test_the_copy_holds_the_invoked_command_only() -> None:
    assert _names(cli._app_for(["run", "--explain"])) == {"run"}
    assert _names(cli._app_for(["--debug", "runs", "list"])) == {"runs"}
    for args in ([], ["--help"], ["no-such-command"], ["--version"]):
        assert cli._app_for(args) is cli.app, args


def test_an_unknown_command_still_gets_the_full_app_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["keel", "rnu"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert "No such command 'rnu'" in capsys.readouterr().err
