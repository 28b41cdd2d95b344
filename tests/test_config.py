"""keel.yaml loading: validation messages with file:line, interpolation, overlays, hashing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.config import EvaluateConfig, KeelConfig, config_hash, load_config
from keel.errors import ConfigError

MINIMAL = """\
project: demo
data:
  train:
    path: data/train.csv
  target: label
model:
  name: demo
  params:
    n_estimators: 10
    learning_rate: 0.1
"""


def write(directory: Path, text: str, name: str = "keel.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(directory: Path, text: str, **kwargs: str) -> ConfigError:
    write(directory, text)
    with pytest.raises(ConfigError) as info:
        load_config(directory, **kwargs)
    return info.value


def test_example_adult_config_loads(adult_config: KeelConfig) -> None:
    assert adult_config.project == "adult"
    assert adult_config.data.target == "income"
    assert adult_config.data.positive_label == ">50K"
    assert adult_config.data.sensitive == ["sex", "race"]
    assert adult_config.data.test is not None
    # the YAML anchor *columns is shared by both sources
    assert adult_config.data.test.columns == adult_config.data.train.columns
    assert len(adult_config.data.train.columns or []) == 15
    assert adult_config.data.test.replace == {"income": {"<=50K.": "<=50K", ">50K.": ">50K"}}
    assert adult_config.model.params.n_estimators == 600
    assert adult_config.model.params.learning_rate == 0.05
    assert adult_config.evaluate.parsed_gates() == [("roc_auc", ">=", 0.9)]
    assert adult_config.monitor.psi.alert == 0.25


def test_config_is_frozen(adult_config: KeelConfig) -> None:
    with pytest.raises(ValueError, match="frozen"):
        adult_config.project = "other"  # type: ignore[misc]


def test_load_accepts_the_file_or_its_directory(tmp_path: Path) -> None:
    file = write(tmp_path, MINIMAL)
    assert load_config(file, env="") == load_config(tmp_path, env="")


def test_misspelled_key_names_line_and_suggests(tmp_path: Path) -> None:
    text = MINIMAL.replace("learning_rate: 0.1", "learning_rte: 0.1")
    error = load_error(tmp_path, text, env="")
    assert error.message == (
        "keel.yaml:10: unknown key 'learning_rte' in model.params. Did you mean 'learning_rate'?"
    )
    assert error.exit_code == 2
    assert error.http_status == 400


def test_misspelled_key_in_optional_section_suggests(tmp_path: Path) -> None:
    text = MINIMAL + "  validaton_fraction: 0.2\n"
    error = load_error(tmp_path, text, env="")
    assert "keel.yaml:11: unknown key 'validaton_fraction' in model." in error.message
    assert "Did you mean 'validation_fraction'?" in error.message


def test_unknown_top_level_key_lists_valid_keys(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + "zzz: 1\n", env="")
    assert error.message.startswith("keel.yaml:11: unknown key 'zzz'.")
    assert "Valid keys: project, data, features, model" in error.message


def test_wrong_type_names_field_line_and_value(tmp_path: Path) -> None:
    text = MINIMAL.replace("n_estimators: 10", "n_estimators: many")
    error = load_error(tmp_path, text, env="")
    assert error.message.startswith("keel.yaml:9: model.params.n_estimators:")
    assert "'many'" in error.message
    assert error.field == "model.params.n_estimators"


def test_out_of_range_value_is_reported(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + "serve:\n  port: 99999\n", env="")
    assert error.message.startswith("keel.yaml:12: serve.port:")
    assert "99999" in error.message


def test_missing_required_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("  target: label\n", ""), env="")
    assert error.message == "keel.yaml:2: missing required key 'data.target'. Add it."


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = MINIMAL.replace("  target: label\n", "").replace("learning_rate", "learning_rte")
    lines = load_error(tmp_path, text, env="").message.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("keel.yaml:9: unknown key 'learning_rte'")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("  target: label", "  target: [label")
    error = load_error(tmp_path, text, env="")
    # PyYAML notices the unclosed bracket where the next line starts
    assert "keel.yaml:6: invalid YAML" in error.message
    assert "Fix the syntax there." in error.message


def test_invalid_yaml_mapping_error_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("  target: label", "  target: label: other")
    error = load_error(tmp_path, text, env="")
    assert "keel.yaml:5: invalid YAML" in error.message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    error = load_error(tmp_path, "- a\n- b\n", env="")
    assert "keel.yaml:1: the top level must be a mapping" in error.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path, env="")


def test_env_var_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_TEST_DATA", "/mnt/data")
    monkeypatch.delenv("KEEL_TEST_UNSET", raising=False)
    text = MINIMAL.replace("data/train.csv", "${KEEL_TEST_DATA}/${KEEL_TEST_UNSET:-train}.csv")
    write(tmp_path, text + "serve:\n  port: ${KEEL_TEST_UNSET:-9001}\n")
    config = load_config(tmp_path, env="")
    assert config.data.train.path == "/mnt/data/train.csv"
    assert config.serve.port == 9001  # the default string is validated as an int


def test_set_variable_wins_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_TEST_NAME", "custom")
    write(tmp_path, MINIMAL.replace("name: demo", "name: ${KEEL_TEST_NAME:-fallback}"))
    assert load_config(tmp_path, env="").model.name == "custom"


def test_empty_variable_takes_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # shell semantics for ${VAR:-default}: set-but-empty also falls back
    monkeypatch.setenv("KEEL_TEST_NAME", "")
    write(tmp_path, MINIMAL.replace("name: demo", "name: ${KEEL_TEST_NAME:-fallback}"))
    assert load_config(tmp_path, env="").model.name == "fallback"


def test_unset_variable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_TEST_UNSET", raising=False)
    text = MINIMAL.replace("data/train.csv", "${KEEL_TEST_UNSET}/train.csv")
    error = load_error(tmp_path, text, env="")
    assert error.message.startswith(
        "keel.yaml:4: environment variable KEEL_TEST_UNSET is not set (used in data.train.path)."
    )
    assert error.field == "data.train.path"


OVERLAY = """\
model:
  params:
    n_estimators: 500
serve:
  host: 0.0.0.0
"""


def test_env_overlay_deep_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL)
    write(tmp_path, OVERLAY, "keel.prod.yaml")
    monkeypatch.setenv("KEEL_ENV", "prod")
    config = load_config(tmp_path)
    assert config.model.params.n_estimators == 500
    assert config.model.params.learning_rate == 0.1  # sibling key kept by the deep merge
    assert config.model.name == "demo"
    assert config.serve.host == "0.0.0.0"
    assert config.serve.port == 8000
    # an explicit env argument overrides KEEL_ENV; "" means no overlay
    assert load_config(tmp_path, env="").model.params.n_estimators == 10


def test_overlay_errors_name_the_overlay_file(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    write(tmp_path, "model:\n  params:\n    num_leafs: 7\n", "keel.prod.yaml")
    error = load_error(tmp_path, MINIMAL, env="prod")
    assert error.message.startswith("keel.prod.yaml:3: unknown key 'num_leafs' in model.params.")


def test_missing_overlay_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL)
    monkeypatch.setenv("KEEL_ENV", "staging")
    with pytest.raises(ConfigError, match=r"KEEL_ENV=staging but .*keel\.staging\.yaml"):
        load_config(tmp_path)


REORDERED = """\
model:
  params:
    learning_rate: 0.1
    n_estimators: 10
  name: demo
data:
  target: label
  train:
    path: data/train.csv
project: demo
"""


def test_config_hash_ignores_key_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a", MINIMAL)
    write(tmp_path / "b", REORDERED)
    first, second = load_config(tmp_path / "a", env=""), load_config(tmp_path / "b", env="")
    assert config_hash(first) == config_hash(second)
    assert config_hash({"x": 1, "y": [1, 2]}) == config_hash({"y": [1, 2], "x": 1})
    assert len(config_hash(first)) == 64


def test_config_hash_changes_with_any_value(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    before = config_hash(load_config(tmp_path, env=""))
    write(tmp_path, MINIMAL.replace("learning_rate: 0.1", "learning_rate: 0.11"))
    after = load_config(tmp_path, env="")
    assert config_hash(after) != before
    assert config_hash(after.model) != config_hash(after.model.params)


@given(
    st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 2), min_size=1, max_size=6)
)
def test_config_hash_depends_only_on_content(data: dict[str, int]) -> None:
    assert config_hash(dict(reversed(list(data.items())))) == config_hash(data)
    changed = {**data, next(iter(data)): data[next(iter(data))] + 1}
    assert config_hash(changed) != config_hash(data)


@pytest.mark.parametrize(
    ("gate", "parsed"),
    [
        ("roc_auc >= 0.9", ("roc_auc", ">=", 0.9)),
        ("log_loss<0.4", ("log_loss", "<", 0.4)),
        ("  accuracy == 1  ", ("accuracy", "==", 1.0)),
        ("gap <= 1e-3", ("gap", "<=", 0.001)),
        ("delta > -.5", ("delta", ">", -0.5)),
    ],
)
def test_valid_gates_parse(gate: str, parsed: tuple[str, str, float]) -> None:
    assert EvaluateConfig(gates=[gate]).parsed_gates() == [parsed]


@pytest.mark.parametrize(
    "gate", ["roc_auc >> 0.9", "roc_auc >= ", ">= 0.9", "roc_auc >= high", "auc >= 1.2.3", "a = 1"]
)
def test_invalid_gates_are_rejected(gate: str) -> None:
    with pytest.raises(ValueError, match="is not '<metric> <op> <number>'"):
        EvaluateConfig(gates=[gate])


def test_invalid_gate_in_file_names_line(tmp_path: Path) -> None:
    text = MINIMAL + "evaluate:\n  gates:\n    - roc_auc >= 0.9\n    - roc_auc => 0.9\n"
    error = load_error(tmp_path, text, env="")
    assert error.message.startswith("keel.yaml:12: evaluate.gates:")
    assert "'roc_auc => 0.9'" in error.message


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert ConfigError.exit_code == 2
