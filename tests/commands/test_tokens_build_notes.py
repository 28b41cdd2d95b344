"""What `keel tokens revoke` and `keel build docker` tell a new user (a serving trial on bike
sharing and penguins).

What the trial hit: `keel tokens revoke --help` said the server refuses the token "from the
next request on", but a server trusts a verified token for 5 seconds (keel.serve.auth's
cache), and the next request did pass; and `keel build docker` without `--wheel` wrote a
Dockerfile that runs `pip install keel==VERSION` without a word, although on PyPI the name
`keel` belongs to an unrelated project whose 0.1 matches `==0.1.0` (it now bakes in a wheel of
this Keel); and `keel monitor NAME
--arms --role ab` ignored `--role` (and `--window`), comparing every deployment's arms.
"""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

import keel
from keel.cli import app
from keel.errors import ConfigError
from keel.serve.auth import Authenticator


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small regression project, trained once (version 1)."""
    base = tmp_path_factory.mktemp("notes")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    frame = pd.DataFrame(
        {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": x @ [1.0, -2.0, 0.5] + rng.normal(size=400)}
    )
    frame.to_csv(base / "rows.csv", index=False)
    root = base / "proj"
    keel.init(root, source=base / "rows.csv", target="y")
    keel.run(root)
    return root


def _keel(root: Path, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "-p", str(root)], terminal_width=80)


def test_revoke_says_how_soon_servers_refuse(project: Path) -> None:
    ttl = inspect.signature(Authenticator).parameters["ttl"].default
    created = _keel(project, "tokens", "create", "ci", "--scope", "predict")
    assert created.exit_code == 0, created.output
    done = _keel(project, "tokens", "revoke", "ci")
    assert done.exit_code == 0, done.output
    assert f"refuse it within {ttl:g} s" in done.output
    assert all(len(line) <= 80 for line in done.output.splitlines())
    helped = CliRunner().invoke(app, ["tokens", "revoke", "--help"], terminal_width=80)
    assert "from the next request on" not in helped.output
    assert f"within {ttl:g} seconds" in " ".join(helped.output.split())


def test_docker_without_a_wheel_bakes_in_this_keel(project: Path, tmp_path: Path) -> None:
    done = _keel(project, "build", "docker", "proj@1", "-o", str(tmp_path / "ctx"))
    assert done.exit_code == 0, done.output
    dockerfile = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert "keel==" not in dockerfile  # never the unrelated 'keel' on PyPI
    [wheel] = (tmp_path / "ctx" / "wheels").glob("keel-*.whl")
    assert f'ARG KEEL_REQUIREMENT="/tmp/wheels/{wheel.name}' in dockerfile
    with zipfile.ZipFile(wheel) as built:  # this Keel: its modules, its server page
        names = built.namelist()
    assert "keel/serve/source_wheel.py" in names and "keel/serve/static/docs.html" in names
    assert "warning" not in done.output
    assert all(len(line) <= 80 for line in done.output.splitlines())


def test_docker_with_a_wheel_does_not_warn(project: Path, tmp_path: Path) -> None:
    wheel = tmp_path / "keel-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    out = tmp_path / "ctx"
    done = _keel(project, "build", "docker", "proj@1", "-o", str(out), "--wheel", str(wheel))
    assert done.exit_code == 0, done.output
    assert "warning" not in done.output
    assert (out / "wheels" / wheel.name).is_file()


@pytest.mark.parametrize(
    ("extra", "named"),
    [(["--role", "ab"], "--role does not"), (["-w", "1d", "--step", "6h"], "--window, --step do")],
)
def test_arms_refuses_the_options_it_would_ignore(
    project: Path, extra: list[str], named: str
) -> None:
    done = _keel(project, "monitor", "proj", "--arms", *extra)
    assert isinstance(done.exception, ConfigError), done.output
    assert done.exception.exit_code == 2
    assert named in done.exception.message
    assert "--since" in done.exception.message
    plain = _keel(project, "monitor", "proj", "--arms")
    assert plain.exit_code == 0, plain.output
    assert "arms of proj" in plain.output
