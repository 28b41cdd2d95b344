"""The 15 checks every tool runs, the Adult columns, and the defects injected into the data.

Standard library only: the runners import this module from their own venvs (Great Expectations,
pandera), where Keel is not installed.

A check is ``(kind, column, params)``; its id is ``"kind:column"``. Nulls are not "unexpected"
for range and set checks (Great Expectations' and pandera's convention); only the not-null checks
count them.
"""

from __future__ import annotations

from typing import Any

COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
INTEGER_COLUMNS = [
    "age",
    "fnlwgt",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
]

# the vocabularies of examples/adult/data/adult.data ("?" is missing, so not a value)
WORKCLASS = [
    "Federal-gov",
    "Local-gov",
    "Never-worked",
    "Private",
    "Self-emp-inc",
    "Self-emp-not-inc",
    "State-gov",
    "Without-pay",
]
EDUCATION = [
    "10th",
    "11th",
    "12th",
    "1st-4th",
    "5th-6th",
    "7th-8th",
    "9th",
    "Assoc-acdm",
    "Assoc-voc",
    "Bachelors",
    "Doctorate",
    "HS-grad",
    "Masters",
    "Preschool",
    "Prof-school",
    "Some-college",
]
MARITAL = [
    "Divorced",
    "Married-AF-spouse",
    "Married-civ-spouse",
    "Married-spouse-absent",
    "Never-married",
    "Separated",
    "Widowed",
]
SEX = ["Female", "Male"]

Check = tuple[str, str, dict[str, Any]]

CHECKS: list[Check] = [
    ("not_null", "age", {}),
    ("not_null", "workclass", {}),
    ("not_null", "occupation", {}),
    ("not_null", "income", {}),
    ("between", "age", {"min": 17, "max": 90}),
    ("between", "fnlwgt", {"min": 10_000, "max": 1_500_000}),
    ("between", "education-num", {"min": 1, "max": 16}),
    ("between", "hours-per-week", {"min": 1, "max": 99}),
    ("between", "capital-gain", {"min": 0, "max": 99_999}),
    ("in_set", "workclass", {"values": WORKCLASS}),
    ("in_set", "education", {"values": EDUCATION}),
    ("in_set", "marital-status", {"values": MARITAL}),
    ("in_set", "sex", {"values": SEX}),
    ("of_type", "age", {"type": "int64"}),
    ("of_type", "hours-per-week", {"type": "int64"}),
]

# Injected into the replicated rows (fraction of rows, column, value). With adult.data's own
# missing workclass/occupation ("?") they make 5 of the 15 checks fail; the rest pass.
DEFECTS: list[tuple[float, str, Any]] = [
    (0.0001, "age", 120),
    (0.0001, "hours-per-week", 0),
    (0.0001, "workclass", "Unknown"),
]
EXPECTED_FAILING = [
    "not_null:workclass",
    "not_null:occupation",
    "between:age",
    "between:hours-per-week",
    "in_set:workclass",
]


def check_id(kind: str, column: str) -> str:
    """The id a check is reported under: ``kind:column``."""
    return f"{kind}:{column}"


def check_ids() -> list[str]:
    """Ids of all checks, in order."""
    return [check_id(kind, column) for kind, column, _ in CHECKS]
