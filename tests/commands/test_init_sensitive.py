"""`keel init --from`: sensitive columns (sex, race...) in the scaffold, by task."""

from __future__ import annotations

from pathlib import Path

from keel.commands.init import init_from_file
from keel.config import load_config


def _file(path: Path, target: list[str]) -> Path:
    """Four low-cardinality text columns before `sex`, so `sex` is not among the first three."""
    rows = [
        f"{'ab'[i % 2]},{'cd'[i % 2]},{'ef'[i // 2 % 2]},{'gh'[i // 3 % 2]},{'FM'[i // 5 % 2]},"
        f"{i * 1.5},{target[i % len(target)]}"
        for i in range(40)
    ]
    path.write_text("\n".join(["a,b,c,d,sex,x,y", *rows]) + "\n")
    return path


def test_a_sensitive_column_is_always_a_slice_in_file_order(tmp_path: Path) -> None:
    made = init_from_file(tmp_path / "p", _file(tmp_path / "f.csv", ["yes", "no"]), "y")
    config = load_config(made.config, env="")
    assert config.evaluate.slices == ["a", "b", "sex"]
    assert "# sensitive: [sex]" in made.config.read_text()  # a classifier: offered


def test_a_regression_scaffold_says_it_gets_no_fairness_audit(tmp_path: Path) -> None:
    numbers = [str(v) for v in range(20)]
    made = init_from_file(tmp_path / "p", _file(tmp_path / "f.csv", numbers), "y")
    text = made.config.read_text()
    assert made.task == "regression"
    assert "# sensitive:" not in text  # nothing to uncomment that would do nothing
    assert "a regression model gets no fairness audit" in text
    assert "sex" in load_config(made.config, env="").evaluate.slices
