"""Fields a request may carry that the model does not read: accepted, noted and dropped; fields
the project never saw still refused, with a suggestion when one is close to an input's name."""

from __future__ import annotations

import math
from types import MappingProxyType

import pyarrow as pa
import pytest

from keel.errors import DataValidationError
from keel.validate.coerce import Coercer


def coercer() -> Coercer:
    made = Coercer.from_types({"age": "int", "sex": "string", "hours-per-week": "float"})
    made.ignore(["income", "id", "age"])  # an input's own name is never "ignored"
    return made


ROW = {"age": 39, "sex": "Male", "hours-per-week": 40}


def test_ignored_fields_are_accepted_noted_and_dropped_from_the_row() -> None:
    made = coercer()
    assert made.ignored == frozenset({"income", "id"})
    row = dict(ROW, income=">50K", id=7)
    values, findings = made.row(row, where="instances[2].")
    assert values == {"age": 39.0, "sex": "Male", "hours-per-week": 40.0}
    assert [(f.field, f.kind, f.severity) for f in findings] == [
        ("instances[2].income", "ignored_field", "warning"),
        ("instances[2].id", "ignored_field", "warning"),
    ]
    # the value sent, as every finding carries it (it was always null)
    assert [f.to_dict()["value"] for f in findings] == [">50K", 7]
    assert row == ROW  # what the server logs and keeps for feedback: the model's inputs


def test_a_mapping_that_is_not_a_dict_is_left_alone() -> None:
    row = MappingProxyType(dict(ROW, income="<=50K"))
    values, findings = coercer().row(row)
    assert values["age"] == 39.0 and [f.kind for f in findings] == ["ignored_field"]
    assert "income" in row


def test_the_happy_path_notes_nothing() -> None:
    values, findings = coercer().row(dict(ROW, age=None))
    assert math.isnan(values["age"]) and findings == []


def test_a_field_never_seen_is_refused() -> None:
    with pytest.raises(DataValidationError) as info:
        coercer().row(dict(ROW, income="x", colour="red"), where="instances[0].")
    assert info.value.field == "instances[0].colour"
    assert "unknown field" in info.value.message
    assert "Did you mean" not in info.value.message


def test_a_misspelled_extra_field_suggests_the_input() -> None:
    with pytest.raises(DataValidationError) as info:
        coercer().row(dict(ROW, **{"hours-per-wek": 3}))
    assert info.value.field == "hours-per-wek"
    assert info.value.message.endswith("Did you mean 'hours-per-week'?")
    assert info.value.details == {"suggestion": "hours-per-week"}


def test_a_misspelled_input_names_the_typo_not_the_missing_field() -> None:
    row = {"agee": 39, "sex": "Male", "hours-per-week": 40}
    with pytest.raises(DataValidationError) as info:
        coercer().row(row, where="instances[1].")
    assert info.value.field == "instances[1].agee"
    assert "Did you mean 'age'?" in info.value.message


def test_a_missing_field_with_nothing_close_stays_a_missing_field() -> None:
    with pytest.raises(DataValidationError) as info:
        coercer().row({"sex": "Male", "hours-per-week": 40, "income": "x"})
    assert info.value.field == "age" and "missing field" in info.value.message


def test_without_ignore_every_extra_field_is_refused_as_before() -> None:
    plain = Coercer.from_types({"age": "int"})
    with pytest.raises(DataValidationError, match="income: unknown field"):
        plain.row({"age": 1, "income": "x"})


def test_a_file_with_a_misspelled_column_suggests_it() -> None:
    table = pa.table({"age": [1], "sex": ["Male"], "hours_per_week": [40.0], "income": ["x"]})
    with pytest.raises(DataValidationError) as info:
        coercer().table(table)
    assert info.value.field == "hours-per-week"
    assert "The input's column 'hours_per_week': did you mean 'hours-per-week'?" in (
        info.value.message
    )


def test_a_file_with_extra_columns_is_scored_on_the_inputs() -> None:
    table = pa.table({"income": ["x"], "age": ["39"], "sex": ["Male"], "hours-per-week": [40]})
    coerced = coercer().table(table)
    assert coerced.table.column_names == ["age", "sex", "hours-per-week"]
    assert not coerced.issues


def test_a_row_missing_several_fields_names_them_all() -> None:
    with pytest.raises(DataValidationError) as info:
        coercer().row({"sex": "Male"}, where="instances[0].")
    assert info.value.field == "instances[0].age"
    assert "1 other field(s) missing too: hours-per-week." in info.value.message
    assert info.value.details["missing"] == ["age", "hours-per-week"]


def test_a_longer_name_holding_a_missing_input_suggests_it() -> None:
    # the bike-sharing trial: 'temperature' sent for the input 'temp'
    made = Coercer.from_types({"temp": "float", "hum": "float", "atemp": "float"})
    with pytest.raises(DataValidationError) as info:
        made.row({"temperature": 0.3, "hum": 0.5, "atemp": 0.3}, where="instances[0].")
    assert info.value.field == "instances[0].temperature"
    assert "Did you mean 'temp'?" in info.value.message
    with pytest.raises(DataValidationError) as info:  # held by two inputs: no guess
        Coercer.from_types({"hum": "float", "humid": "float"}).row({"humidity_pct": 1.0})
    assert "Did you mean" not in info.value.message


def test_a_row_missing_many_fields_counts_the_ones_not_listed() -> None:
    from keel.validate.coerce import Coercer

    many = Coercer.from_types({f"f{i}": "float" for i in range(9)})
    with pytest.raises(DataValidationError) as info:
        many.row({}, where="instances[0].")
    assert info.value.message.endswith(
        "8 other field(s) missing too: f1, f2, f3, f4, f5 and 3 more."
    )
    assert info.value.details["missing"] == [f"f{i}" for i in range(9)]
