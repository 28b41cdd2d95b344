"""`keel init --from` checks of the data: a numeric column that a few stray cells make text is
pointed out, and a column that alone decides the target (a leak) is set aside."""

from __future__ import annotations

from pathlib import Path

from keel.commands.init import init_from_file
from keel.commands.profile import profile_file


def _file(path: Path, ages: list[str]) -> Path:
    rows = [f"{age},{'ab'[i % 2]},{'yes' if i % 3 else 'no'}" for i, age in enumerate(ages)]
    path.write_text("\n".join(["age,group,passed", *rows]) + "\n")
    return path


def test_a_stray_cell_in_a_numeric_column_is_a_warning_naming_it(tmp_path: Path) -> None:
    ages = [str(15 + i % 6) for i in range(60)]
    ages[7] = "17y"
    made = init_from_file(tmp_path / "p", _file(tmp_path / "f.csv", ages), "passed")
    said = [w for w in made.warnings if "'age'" in w]
    assert said and "1 of its 60 values ('17y')" in said[0] and "na_values" in said[0]
    assert "# WARNING: column 'age' holds numbers" in made.config.read_text()


def test_text_and_number_columns_are_not_flagged(tmp_path: Path) -> None:
    clean = profile_file(_file(tmp_path / "clean.csv", [str(i) for i in range(60)]))
    mixed = [str(i) if i % 2 else f"grade {i}" for i in range(60)]  # half text: a text column
    assert profile_file(_file(tmp_path / "mixed.csv", mixed)).mostly_numbers == ()
    assert clean.mostly_numbers == () and clean.columns["age"].kind == "integer"


def _scores(path: Path, columns: dict[str, list[str]], rows: int = 80) -> Path:
    """`columns` beside a pass/fail `result` computed from score = i % 20 (pass: >= 10)."""
    score = [i % 20 for i in range(rows)]
    lines = [",".join([*columns, "result"])]
    lines += [
        ",".join([*(values[i] for values in columns.values()), "pass" if s >= 10 else "fail"])
        for i, s in enumerate(score)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _flat(text: str) -> str:
    """keel.yaml's comments as one line (they are wrapped at 98 characters)."""
    return " ".join(line.strip().lstrip("#").strip() for line in text.splitlines())


def test_a_column_the_target_was_computed_from_is_set_aside(tmp_path: Path) -> None:
    columns = {
        "score": [str(i % 20) for i in range(80)],  # result = score >= 10
        "grade": ["A" if i % 20 >= 10 else "B" for i in range(80)],  # restates it
        "noise": [str(i % 7) for i in range(80)],
    }
    made = init_from_file(tmp_path / "p", _scores(tmp_path / "f.csv", columns), "result")
    assert made.dropped == ("score", "grade")
    text = _flat(made.config.read_text())
    assert "score <= 9 for every 'fail', >= 10 for every 'pass'" in text
    assert "each of its 2 values goes with one value of 'result'" in text


def test_an_overlapping_or_small_column_is_kept(tmp_path: Path) -> None:
    columns = {
        "raw": [str(i % 20 + (3 if i % 9 == 0 else 0)) for i in range(80)],  # 7+3 is a fail
        "grade": ["A" if i % 2 else "B" for i in range(80)],
    }
    made = init_from_file(tmp_path / "p", _scores(tmp_path / "f.csv", columns), "result")
    assert made.dropped == ()  # both overlap across the classes: features
    exact = {"score": [str(i % 20) for i in range(30)]}
    small = _scores(tmp_path / "small.csv", exact, rows=30)  # too few rows to judge
    assert init_from_file(tmp_path / "q", small, "result").dropped == ()
