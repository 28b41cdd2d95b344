"""`keel schema infer FILE` reads the file once for the schema and the stray-cell warning, and
says what it said when it read it twice: the same schema as ``keel.infer_schema``, the same
warning, the same error for a column that is not there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keel
from keel import api
from keel.api import projects
from keel.cli import app as cli_app
from keel.errors import ConfigError
from keel.validate.schema import schema_to_yaml


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """40 rows; ``age`` holds numbers but for one stray cell (read as text: a warning)."""
    ages = [str(20 + i) for i in range(40)]
    ages[7] = "unknown"
    lines = ["age,city,paid", *(f"{a},c{i % 3},{i % 2}" for i, a in enumerate(ages))]
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The data each ``keel.api.resolve_data`` call was asked for."""
    calls: list[str] = []
    real = api.resolve_data

    def counted(data: Any, **kwargs: Any) -> Any:
        calls.append(str(data))
        return real(data, **kwargs)

    monkeypatch.setattr(api, "resolve_data", counted)
    monkeypatch.setattr(projects, "resolve_data", counted)  # what keel.infer_schema calls
    return calls


def test_the_file_is_read_once_for_the_schema_and_the_warnings(
    data: Path, resolutions: list[str]
) -> None:
    done = CliRunner().invoke(cli_app, ["schema", "infer", str(data), "--target", "paid"])
    assert done.exit_code == 0, done.output
    assert resolutions == [str(data)]
    expected = schema_to_yaml(keel.infer_schema(data, target="paid"))  # read once more
    assert done.stdout == expected
    assert "column 'age' holds numbers but for 1 of its 40 values ('unknown')" in done.stderr


def test_a_missing_column_is_named_with_the_file(data: Path, resolutions: list[str]) -> None:
    done = CliRunner().invoke(cli_app, ["schema", "infer", str(data), "--sensitive", "sex"])
    assert isinstance(done.exception, ConfigError)  # keel's main() prints it, exit 2
    assert done.exception.message == f"no column 'sex' in {data} (columns: age, city, paid)."
    assert done.exception.field == "sex"
    assert resolutions == [str(data)]
