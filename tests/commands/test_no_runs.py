"""A project with no runs yet: `keel predict` and `keel monitor` say that no models are
registered and that `keel run` trains and registers one (a penguins trial hit the bare
"no model named 'penguins'; no models are registered yet")."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.commands.init import init_from_file
from keel.errors import NotFoundError

PENGUINS = Path("/work/shared/data/palmer-penguins/penguins.csv")

pytestmark = pytest.mark.skipif(not PENGUINS.exists(), reason="needs /work/shared/data")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`keel init --from penguins.csv`, not run."""
    made = init_from_file(tmp_path_factory.mktemp("fresh") / "penguins", PENGUINS, "species")
    return made.directory


@pytest.mark.parametrize(
    "args",
    [["predict", "penguins", "-i", str(PENGUINS), "-o", "out.csv"], ["monitor", "penguins"]],
)
def test_no_runs_yet_says_to_run_keel_run(fresh: Path, args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "-p", str(fresh)])
    assert isinstance(result.exception, NotFoundError), (result.output, result.exception)
    message = result.exception.message
    assert "no model named 'penguins'; no models are registered yet" in message, message
    assert "'keel run' trains and registers one" in message, message
