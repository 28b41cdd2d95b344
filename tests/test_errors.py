"""The error tree: builtin bases, HTTP statuses, exit codes and the REST body."""

from __future__ import annotations

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
