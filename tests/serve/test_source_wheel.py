"""`keel build docker` without `--wheel` bakes in a wheel of the running Keel, built from its
source tree (the Dockerfile once ran `pip install keel==0.1.0`, and on PyPI `keel` is an
unrelated project); without a source tree it refuses, saying how to build a wheel."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import keel
from keel.errors import ConfigError
from keel.project import Project
from keel.serve import source_wheel
from keel.serve.build import build_docker


def test_the_source_tree_is_this_checkout() -> None:
    root = source_wheel.source_tree()
    assert root is not None and (root / "src" / "keel" / "__init__.py").is_file()


def test_the_wheel_is_this_keel_and_leaves_no_build_directory(tmp_path: Path) -> None:
    root = source_wheel.source_tree()
    assert root is not None
    before = (root / "build").exists()
    wheel = source_wheel.build_wheel(tmp_path / "wheels")
    assert wheel.name == f"keel-{keel.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as built:
        source = built.read("keel/serve/source_wheel.py")
    assert source == Path(source_wheel.__file__).read_bytes()  # the running code, as it is
    assert (root / "build").exists() == before


def test_without_a_source_tree_it_refuses_and_says_how(
    adult_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_wheel, "source_tree", lambda: None)
    with Project(adult_project) as project, pytest.raises(ConfigError) as raised:
        build_docker(project, "adult@1", tmp_path / "ctx")
    message = raised.value.message
    assert "--wheel" in message and "pip wheel" in message and "PyPI" in message
    assert raised.value.field == "--wheel"
