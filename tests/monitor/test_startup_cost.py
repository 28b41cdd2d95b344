"""What `keel monitor` pays before monitoring: keel.yaml parsed once by libyaml with the same
values, line numbers and error messages as the pure-Python parser, and opening a project
without loading SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from keel.config import loading
from keel.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BROKEN = {
    "unclosed bracket": "project: x\ndata:\n  train:\n    path: a.csv\n  target: [label\nmodel:\n",
    "mapping in a value": "project: x\ndata:\n  target: label: other\n",
    "bad indentation": "project: x\n data:\n  target: y\n",
    "tab": "project: x\ndata:\n\ttarget: y\n",
    "two documents": "project: x\n---\nproject: y\n",
    "unknown alias": "project: *nothing\n",
    "control character": "project: x\x07\n",
    "python tag": "project: !!python/object:os.system x\n",
}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/keel.yaml")), ids=lambda p: p.parent.name)
def test_libyaml_reads_what_the_pure_parser_reads(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert loading._FAST_LOADER is yaml.CSafeLoader  # PyYAML is built with libyaml here
    fast = loading._read_yaml(path)
    monkeypatch.setattr(loading, "_FAST_LOADER", yaml.SafeLoader)
    assert fast == loading._read_yaml(path)  # values and every key's file:line
    assert fast[1][("data", "target")].startswith("keel.yaml:")


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_errors_are_worded_as_before(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "keel.yaml"
    file.write_text(BROKEN[name])
    with pytest.raises(ConfigError) as fast:
        loading._read_yaml(file)
    monkeypatch.setattr(loading, "_FAST_LOADER", yaml.SafeLoader)
    with pytest.raises(ConfigError) as pure:
        loading._read_yaml(file)
    assert fast.value.message == pure.value.message
    assert "keel.yaml:" in fast.value.message and "invalid YAML" in fast.value.message


def test_opening_a_project_loads_no_sqlalchemy() -> None:
    code = "import sys, keel.cli, keel.project; print('sqlalchemy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert result.stdout.strip() == "False"
