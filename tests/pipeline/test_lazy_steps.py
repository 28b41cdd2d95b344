"""Keel's own steps are declared by import path: their cache keys hash the functions' source as
read from their files, the same keys importing the functions gives, and a bad path is a clear
error."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import keel
from keel.errors import ConfigError
from keel.pipeline.cache_key import code_version_of, source_hash
from keel.pipeline.declare import StepRef, lazy_step, target_of
from keel.pipeline.standard import default_steps
from keel.project import Project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Adult example with a search (so the tune step is in the pipeline too)."""
    root = tmp_path_factory.mktemp("lazy") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["search"] = {"trials": 2, "space": {"num_leaves": {"type": "int", "low": 8, "high": 32}}}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def test_the_key_from_the_file_is_the_key_from_the_imported_function(project: Path) -> None:
    with Project(project) as proj:
        steps = default_steps(proj)
    assert "tune" in [s.name for s in steps]
    by_path = [s for s in steps if isinstance(s.fn, StepRef)]
    assert {s.name for s in by_path} >= {"ingest_train", "train", "evaluate", "register"}
    for spec in steps:
        function = spec.function  # imports it now
        assert source_hash(spec.fn) == source_hash(function), spec.name
        imported = dataclasses.replace(spec, fn=function)
        assert code_version_of(spec) == code_version_of(imported), spec.name
        assert target_of(spec.fn) == target_of(function)


def test_the_evaluate_step_lives_in_its_own_module() -> None:
    import keel.pipeline.steps as steps

    assert not hasattr(steps, "evaluate")
    assert StepRef("keel.pipeline.evaluate_step:evaluate").resolve().__name__ == "evaluate"


def test_a_step_runs_its_imported_function(tmp_path: Path, monkeypatch: Any) -> None:
    module = tmp_path / "lazy_steps_demo.py"
    module.write_text(
        "import keel\n\n"
        "def double(ctx, number):  # the runner passes the declared inputs it takes\n"
        "    return {'twice': ctx.put_json(2 * ctx.read_json(number), kind='number')}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = lazy_step("lazy_steps_demo:double", name="double", inputs={"number": "number"},
                     outputs={"twice": "number"})  # fmt: skip
    assert "lazy_steps_demo" not in sys.modules  # declaring imported nothing
    assert len(source_hash(spec.fn)) == 64

    class Ctx:
        def __init__(self) -> None:
            self.inputs = {"number": "21"}

        def read_json(self, value: str) -> int:
            return int(value)

        def put_json(self, value: int, *, kind: str) -> str:
            return f"{kind}:{value}"

    assert spec.call(Ctx()) == {"twice": "number:42"}
    assert "lazy_steps_demo" in sys.modules


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("keel.pipeline.steps", "package.module:function"),
        ("keel.pipeline.steps:no_such_step", "defines no no_such_step"),
        ("keel.no_such_module:f", "no module|no source file"),
    ],
)
def test_a_bad_path_is_a_config_error(target: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        spec = lazy_step(target, name="x", outputs={"x": "any"})
        source_hash(spec.fn)


def test_an_unimportable_function_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        StepRef("keel.pipeline.steps:no_such_step").resolve()
