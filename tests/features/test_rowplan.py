"""The row plan answers plain request rows from tables; every other row takes the row path.

The law: with or without the plan, a pipeline gives every request the same matrix (bit for
bit), the same warnings (every field of every finding), the same error (class, field,
message, details) and leaves the request's dict the same (ignored fields dropped), on real
data (UCI Adult, Palmer penguins) and on hostile rows: spellings, nulls, unseen categories,
out-of-range numbers, bools as numbers, numbers as text, wrong types, extra, ignored and
missing fields.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.features import FeaturePipeline
from keel.features.pipeline import _COLUMNWISE
from keel.features.rowplan import RowPlan
from keel.validate.coerce import Coercer, InputRule
from keel.validate.schema import Schema, infer_schema
from keel.validate.statistics import compute_statistics

from .test_parity import SCENARIOS, bits, pipelines  # noqa: F401 (a fixture)

PENGUINS = Path(__file__).resolve().parents[1] / "data" / "palmer-penguins" / "penguins.csv"
SYNTHETIC = {"x": "float", "n": "int", "c": "string", "k": "string", "b": "bool"}


def _synthetic_table() -> pa.Table:
    rng = np.random.default_rng(3)
    rows = 200
    return pa.table(
        {
            "x": [None if i % 9 == 0 else float(v) for i, v in enumerate(rng.normal(5, 3, rows))],
            "n": [None if i % 11 == 0 else int(v) for i, v in enumerate(rng.integers(0, 90, rows))],
            "c": [
                None if i % 7 == 0 else "abcde"[int(v)] for i, v in enumerate(rng.zipf(2, rows) % 5)
            ],
            "k": [["p", "q", "r"][i % 3] for i in range(rows)],
            "b": [None if i % 5 == 0 else bool(i % 2) for i in range(rows)],
        }
    )


def _rules(strict: bool) -> list[dict[str, Any]]:
    """Hand-written rules: ranges, categories, spellings; ``strict`` makes findings errors,
    lenient turns some type mismatches into warnings."""
    severe = "error" if strict else "warning"
    return [
        InputRule(
            "x",
            "float",
            min=-20.0,
            max=30.0,
            invalid="error" if strict else "warning",
            out_of_range=severe,
        ).state(),
        InputRule("n", "int", min=0, max=89, out_of_range=severe).state(),
        InputRule(
            "c",
            "string",
            categories=("a", "b", "c", "d", "e"),
            unseen=severe,
            invalid="error" if strict else "warning",
        ).state(),
        InputRule("k", "string", categories=("p", "q", "r"), unseen=severe).state(),
        InputRule("b", "bool", true_values=("Yes", "Y"), false_values=("No", "N")).state(),
    ]


def _from_table(table: pa.Table, ignored: list[str]) -> tuple[FeaturePipeline, Schema]:
    schema = infer_schema(compute_statistics(table))
    names = [n for n in table.column_names if n not in ignored]
    inputs = {n: schema.columns[n].type for n in names}
    rules = Coercer.from_schema(schema, names).state()
    return FeaturePipeline(inputs=inputs, rules=rules, max_categories=6).fit(
        table.select(names)
    ), schema


def _served(pipe: FeaturePipeline, ignored: list[str], plan: bool) -> FeaturePipeline:
    """The pipeline as the server runs it (rebuilt from JSON), with or without its plan."""
    served = FeaturePipeline.from_state(json.loads(json.dumps(pipe.state())))
    served.coercer().ignore(ignored)
    if not plan:
        served._plan = None
    return served


@pytest.fixture(scope="module")
def planned(
    adult_train_table: pa.Table,
) -> dict[str, tuple[FeaturePipeline, FeaturePipeline, list[dict[str, Any]]]]:
    """Scenario -> (pipeline with its plan, the same without, plain rows of its data)."""
    fitted: dict[str, tuple[FeaturePipeline, list[str], pa.Table]] = {}
    adult = adult_train_table.slice(0, 4000)
    fitted["adult"] = (_from_table(adult, ["income"])[0], ["income"], adult)
    penguins = pacsv.read_csv(PENGUINS, convert_options=pacsv.ConvertOptions(null_values=["NA"]))
    fitted["penguins"] = (_from_table(penguins, ["year"])[0], ["year"], penguins)
    table = _synthetic_table()
    for name, strict in (("lenient", False), ("strict", True)):
        pipe = FeaturePipeline(inputs=SYNTHETIC, rules=_rules(strict), max_categories=3)
        fitted[name] = (pipe.fit(table), [], table)
    fitted["no_rules"] = (FeaturePipeline(inputs=SYNTHETIC, max_categories=3).fit(table), [], table)
    declared = [{"column": "x", "steps": [{"kind": "impute", "strategy": "mean"}]},
                {"column": "n", "steps": [{"kind": "standardize"}]}]  # fmt: skip
    fitted["declared"] = (
        FeaturePipeline(inputs=SYNTHETIC, transforms=declared).fit(table),
        [],
        table,
    )
    one = FeaturePipeline(inputs={"n": "int"}, rules=[_rules(True)[1]]).fit(table.select(["n"]))
    fitted["one_input"] = (one, [], table)
    out = {}
    for name, (pipe, ignored, data) in fitted.items():
        rows = [
            {k: v for k, v in row.items() if k in pipe.inputs}
            for row in data.slice(0, 300).to_pylist()
        ]
        out[name] = (_served(pipe, ignored, True), _served(pipe, ignored, False), rows)
    return out


SCENARIO_NAMES = ["adult", "penguins", "lenient", "strict", "no_rules", "declared", "one_input"]

HOSTILE = [
    None, True, False, 0, 1, -1, 2, 39, 90, 91, 10**6, 2**53 + 1, 2**63, 10**400, -(10**400),
    0.0, -0.0, 0.5, 39.0, 1e308, -1e308, math.inf, -math.inf, math.nan, -math.nan,
    "", " ", "39", " 39 ", "3.5", "1e3", "nan", "inf", "abc", "Yes", "no", " YES ", "N", "true",
    "a", " a", "A", "p", " r", "r", "Male", " Male", "male", "Female", "Private", "Adelie",
    "Dream", "unseen", "日本語", [], {}, [1], {"a": 1}, np.int64(5), np.float64(5.0),
    np.str_("a"), np.str_("Male"), np.bool_(True), b"a",
]  # fmt: skip


EDIT = st.tuples(
    st.sampled_from(["value", "value", "value", "plain", "drop", "extra", "rename"]),
    st.integers(0, 63),  # which field
    st.integers(0, 2 * len(HOSTILE)),  # which value: hostile, or one of the data's
)
ROW = st.tuples(st.integers(0, 299), st.lists(EDIT, max_size=3), st.integers(0, 40))
ODD_ROWS = [None, [], "row", 5]
EXTRA = ["income", "year", "zzz"]


def request_rows(base: list[dict[str, Any]], count: int) -> st.SearchStrategy[list[Any]]:
    """``count`` rows: real rows of the data, most plain, some with hostile edits."""
    return st.lists(ROW, min_size=count, max_size=count).map(lambda drawn: _build(base, drawn))


def _build(base: list[dict[str, Any]], drawn: list[Any]) -> list[Any]:
    names = list(base[0])
    out: list[Any] = []
    for index, edits, odd in drawn:
        row = dict(base[index % len(base)])
        for edit, field, pick in edits:
            name = names[field % len(names)]
            value = HOSTILE[pick] if pick < len(HOSTILE) else base[pick % len(base)][name]
            if edit == "value":
                row[name] = value
            elif edit == "drop":
                row.pop(name, None)
            elif edit == "extra":
                row[[*EXTRA, name + "s"][pick % 4]] = value
            elif edit == "rename" and name in row:
                row[name[:-1] or "q"] = row.pop(name)
        out.append(ODD_ROWS[odd % 4] if odd < 2 else row)
    return out


def _error(exc: Exception) -> tuple[Any, ...]:
    return (
        type(exc).__name__,
        getattr(exc, "field", None),
        str(exc),
        repr(getattr(exc, "details", None)),
    )


def _findings(found: list[Any]) -> str:
    return repr([f.to_dict() for f in found])


def _row_outcome(pipe: FeaturePipeline, row: Any) -> tuple[Any, ...]:
    found: list[Any] = []
    try:
        x = pipe.transform_row(row, where="instances[0].", findings=found)
    except Exception as exc:  # compared, not raised
        return ("error", _error(exc), _findings(found), repr(row))
    return ("ok", bits(x).tobytes(), x.shape, _findings(found), repr(row))


def _rows_outcome(pipe: FeaturePipeline, rows: list[Any]) -> tuple[Any, ...]:
    found: list[Any] = []
    try:
        x = pipe.transform_rows(rows, findings=found)
    except Exception as exc:  # compared, not raised
        return ("error", _error(exc), repr(rows))
    return ("ok", bits(x).tobytes(), x.shape, x.flags.c_contiguous, _findings(found), repr(rows))


def _each_outcome(pipe: FeaturePipeline, requests: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Per request: its matrix, warnings and rows after (ignored fields dropped), or its
    error. (A failed request's partial warnings are not compared: the old batch path's
    depended on whether an earlier attempt had already dropped ignored fields.)"""
    found: list[list[Any]] = [[] for _ in requests]
    got = pipe.transform_each(requests, findings=found)
    out: list[tuple[Any, ...]] = []
    for result, findings, rows in zip(got, found, requests, strict=True):
        if isinstance(result, Exception):  # (its warnings and rows are not answered)
            out.append(("error", _error(result)))
        else:
            out.append(
                ("ok", bits(result).tobytes(), result.shape, _findings(findings), repr(rows))
            )
    return out


def test_the_plan_is_made_where_it_applies(
    planned: dict[str, Any],
    pipelines: dict[str, FeaturePipeline],  # noqa: F811
) -> None:
    for name in SCENARIO_NAMES:
        pipe, plain, rows = planned[name]
        assert isinstance(pipe._plan, RowPlan), name
        assert plain._plan is None
        out = np.zeros(pipe.n_features_)
        assert sum(pipe._plan.fill(dict(row), out) for row in rows[:50]) >= 40, name
    # date inputs, custom features and chains the plan does not fuse keep the row path
    assert all(pipelines[name]._plan is None for name in [*SCENARIOS, "defaults"])


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
@SETTINGS
@given(data=st.data())
def test_a_row_gets_what_the_row_path_gives(
    scenario: str, data: st.DataObject, planned: dict[str, Any]
) -> None:
    pipe, plain, base = planned[scenario]
    (row,) = data.draw(request_rows(base, 1))
    assert _row_outcome(pipe, copy.deepcopy(row)) == _row_outcome(plain, copy.deepcopy(row))


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
@SETTINGS
@given(data=st.data())
def test_rows_get_what_the_row_path_gives(
    scenario: str, data: st.DataObject, planned: dict[str, Any]
) -> None:
    pipe, plain, base = planned[scenario]
    rows = data.draw(request_rows(base, data.draw(st.integers(_COLUMNWISE, 30))))
    assert _rows_outcome(pipe, copy.deepcopy(rows)) == _rows_outcome(plain, copy.deepcopy(rows))


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
@SETTINGS
@given(data=st.data())
def test_each_request_gets_what_the_row_path_gives(
    scenario: str, data: st.DataObject, planned: dict[str, Any]
) -> None:
    pipe, plain, base = planned[scenario]
    drawn = data.draw(st.lists(st.lists(ROW, min_size=1, max_size=3), min_size=1, max_size=24))
    requests = [_build(base, rows) for rows in drawn]
    assert _each_outcome(pipe, copy.deepcopy(requests)) == _each_outcome(
        plain, copy.deepcopy(requests)
    )


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_every_hostile_value_in_every_field(scenario: str, planned: dict[str, Any]) -> None:
    """Each hostile value in each field, alone, in a row, among plain rows, and as one of a
    server's batch of one-row requests."""
    pipe, plain, base = planned[scenario]
    for name in base[0]:
        for value in HOSTILE:
            row = {**base[1], name: value}
            assert _row_outcome(pipe, dict(row)) == _row_outcome(plain, dict(row)), (name, value)
            rows = [dict(base[0]), dict(row), *map(dict, base[2:6])]
            assert _rows_outcome(pipe, rows) == _rows_outcome(plain, copy.deepcopy(rows))
            requests = [[dict(r)] for r in rows]
            assert _each_outcome(pipe, requests) == _each_outcome(plain, copy.deepcopy(requests))


def test_plain_rows_are_answered_by_the_plan(planned: dict[str, Any]) -> None:
    """The plan answers plain rows itself (the row path is not called for them)."""
    pipe, plain, base = planned["adult"]
    rows = [dict(row) for row in base[:64]]
    planned_rows = pipe._plan.fill_many(rows)
    assert planned_rows is not None
    x, bad = planned_rows
    assert not bad.all()
    expected = plain.transform_rows(rows)
    assert np.array_equal(bits(x[~bad]), bits(expected[~bad]))
