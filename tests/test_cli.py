from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import keel


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return keel.init(tmp_path / "adult", example="adult")


def test_misspelled_key_exits_2_with_file_line_and_suggestion(project: Path) -> None:
    config = project / "keel.yaml"
    lines = config.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "learning_rate:" in line)
    lines[index] = lines[index].replace("learning_rate", "learning_rte")
    config.write_text("\n".join(lines) + "\n")
    result = keel_cli("run", cwd=project)
    assert result.returncode == 2
    assert f"keel.yaml:{index + 1}: unknown key 'learning_rte' in model.params." in result.stderr
    assert "Did you mean 'learning_rate'?" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_no_project_is_a_usage_error(tmp_path: Path) -> None:
    result = keel_cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "keel init" in result.stderr and "Traceback" not in result.stderr


def test_unknown_model_exits_1_listing_known_ones(project: Path) -> None:
    result = keel_cli("models", "show", "nope", cwd=project)
    assert result.returncode == 1
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_unknown_option_is_exit_2(project: Path) -> None:
    result = keel_cli("run", "--colour", cwd=project)
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_init_refuses_to_overwrite(project: Path) -> None:
    result = keel_cli("init", str(project), cwd=project.parent)
    assert result.returncode == 2
    assert "already exists" in result.stderr


def test_init_here_names_the_absolute_directory_and_no_cd(tmp_path: Path) -> None:
    """`keel init --example adult .` said "in .. Next: cd . && keel run"."""
    here = tmp_path / "here"
    here.mkdir()
    result = keel_cli("init", "--example", "adult", ".", cwd=here)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())  # rich may wrap a long path
    assert f"Created project 'adult' here ({here.resolve()}). Next: keel run" in said
    assert "cd ." not in said and "in .." not in said
    elsewhere = keel_cli("init", "--example", "adult", "my project", cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr
    said = " ".join(elsewhere.stdout.split())
    assert f"in {(tmp_path / 'my project').resolve()}." in said
    assert "Next: cd 'my project' && keel run" in said  # quoted for the shell


def test_models_list_json_on_an_empty_registry(project: Path) -> None:
    result = keel_cli("models", "list", "--format", "json", cwd=project)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"models": []}


def test_help_lists_the_verbs(tmp_path: Path) -> None:
    result = keel_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for verb in ("init", "run", "models", "serve", "predict", "monitor"):
        assert verb in result.stdout
