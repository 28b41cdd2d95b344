"""The error tree: builtin bases, HTTP statuses, exit codes and the REST body."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from keel import errors
from keel.errors import (
    BackendError,
    ConfigError,
    ConflictError,
    DataValidationError,
    GateError,
    IntegrityError,
    KeelError,
    NotFittedError,
    NotFoundError,
    UnsafeModelError,
)

TREE = [
    # class, http_status, exit_code, builtin base (or None)
    (KeelError, 500, 1, None),
    (ConfigError, 400, 2, ValueError),
    (DataValidationError, 422, 1, ValueError),
    (GateError, 409, 1, None),
    (NotFoundError, 404, 1, LookupError),
    (ConflictError, 409, 1, None),
    (IntegrityError, 500, 1, None),
    (UnsafeModelError, 500, 1, None),
    (NotFittedError, 500, 1, ValueError),
    (BackendError, 503, 1, None),
]


def test_tree_covers_every_exported_error() -> None:
    assert sorted(cls.__name__ for cls, *_ in TREE) == sorted(errors.__all__)


@pytest.mark.parametrize(("cls", "status", "exit_code", "builtin"), TREE)
def test_status_exit_code_and_bases(
    cls: type[KeelError], status: int, exit_code: int, builtin: type[Exception] | None
) -> None:
    assert cls.http_status == status
    assert cls.exit_code == exit_code
    error = cls("boom")
    assert isinstance(error, KeelError)
    assert isinstance(error, Exception)
    if builtin is not None:
        assert isinstance(error, builtin)
        with pytest.raises(builtin):
            raise error
    assert str(error) == "boom"


def test_errors_without_a_builtin_base_are_not_value_errors() -> None:
    for cls in (GateError, ConflictError, IntegrityError, BackendError):
        assert not issubclass(cls, ValueError | LookupError)


def test_to_dict_minimal() -> None:
    assert NotFoundError("model 'x' not found").to_dict() == {
        "error": "NotFoundError",
        "message": "model 'x' not found",
        "field": None,
    }


def test_to_dict_with_field_and_details() -> None:
    error = DataValidationError("age: expected a number", field="age", details={"got": "str"})
    assert error.field == "age"
    assert error.details == {"got": "str"}
    assert error.to_dict() == {
        "error": "DataValidationError",
        "message": "age: expected a number",
        "field": "age",
        "details": {"got": "str"},
    }


def test_details_default_is_not_shared() -> None:
    first, second = KeelError("a"), KeelError("b")
    first.details["x"] = 1
    assert second.details == {}
    assert "details" not in second.to_dict()


def test_chaining_keeps_the_cause() -> None:
    cause = FileNotFoundError("gone")
    with pytest.raises(ConfigError) as info:
        try:
            raise cause
        except FileNotFoundError as exc:
            raise ConfigError("keel.yaml: no such file") from exc
    assert info.value.__cause__ is cause


# --- keel init: a user's mistake is a headline and a message, never a traceback -----------------

INIT_MISTAKES = [
    # arguments after `keel init p`, exit code, what the message says
    (["--from", "nope.csv", "--target", "y"], 2, "nope.csv: no such data file"),
    (["--from", "ok.csv", "--target", "species"], 2, "Did you mean 'Species'? Columns: age,"),
    (["--from", "ok.csv"], 2, "--target is missing: name the column to predict."),
    (["--from", "one.csv", "--target", "b"], 2, "has one value in one.csv ('x' in all 2 rows)"),
    (["--from", "ok.csv", "--target", "Species", "--example", "adult"], 2, "not both"),
    (["--target", "y"], 2, "add --from FILE"),
    (["--example", "bikes"], 2, "Did you mean 'bike-sharing'?"),
]


@pytest.mark.parametrize(("args", "code", "message"), INIT_MISTAKES)
def test_init_mistakes_exit_with_a_message(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "one.csv").write_text("a,b\n1,x\n2,x\n")
    (tmp_path / "ok.csv").write_text("age,Species\n1,a\n2,b\n3,a\n")
    result = subprocess.run([sys.executable, "-m", "keel.cli", "init", "p", *args], cwd=tmp_path,
                            text=True, capture_output=True, timeout=120)  # fmt: skip
    assert result.returncode == code
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "p" / "keel.yaml").exists()


# --- reading a file: the wrong delimiter, no header, none of the columns (issue 12) --------


def _keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


@pytest.fixture
def reading_files(tmp_path: Path) -> Path:
    lines = ["name;city;age", "ann;paris;31", "bob;rome;42", "cy;oslo;27"]
    (tmp_path / "ref.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "no-header.csv").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    other = ["x,y", "1,2"]
    (tmp_path / "other.csv").write_text("\n".join(other) + "\n", encoding="utf-8")
    schema = "columns:\n  name: {type: string}\n  city: {type: string}\n  age: {type: int}\n"
    (tmp_path / "schema.yaml").write_text(schema, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["ref.csv", "--reference", "ref.csv", "--delimiter", ","], 1,
         ["none of the 3 reference columns was found", "pass --delimiter ';'"]),
        (["no-header.csv", "--reference", "ref.csv"], 1,
         ["none of the 3 reference columns was found", "--columns name,city,age"]),
        (["other.csv", "--schema", "schema.yaml"], 1,
         ["none of the 3 schema columns was found", "Expected: name, city, age", "Found 2: x, y"]),
        (["ref.csv", "--quote", "''"], 2, ["--quote: quote must be one character"]),
        (["ref.csv", "--columns", "a,a,b"], 2, ["--columns: columns: 'a' appears twice"]),
        (["missing.csv"], 2, ["neither a file nor a snapshot"]),
    ],
    ids=["wrong-delimiter", "no-header", "none-of-the-columns", "bad-quote", "twice", "missing"],
)  # fmt: skip
def test_validate_reading_mistakes_exit_non_zero_with_the_fix(
    reading_files: Path, args: list[str], code: int, expected: list[str]
) -> None:
    result = _keel("validate", *args, cwd=reading_files)
    assert result.returncode == code, result.stdout + result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "OK" not in result.stdout
