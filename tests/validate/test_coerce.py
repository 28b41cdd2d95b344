"""One coercion path: a file read as `keel predict` reads it (the batch transform) and the
serving path (a JSON request row) give the same model input bytes, or the same refusal."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.data.reader import ReadOptions, read_file
from keel.errors import DataValidationError
from keel.features import FeaturePipeline
from keel.validate.coerce import Coercer, InputRule
from keel.validate.schema import infer_schema
from keel.validate.statistics import compute_statistics

TRAIN = pa.table(
    {
        "n": pa.array([3, 5, None, 8, 13, 21], pa.int64()),
        "x": [0.5, None, 2.5, -1.0, 1e-3, 7.0],
        "smoker": ["Yes", "No", "No", None, "Yes", "No"],
        "c": ["a", "b", None, "a", "c", "b"],
    }
)


@pytest.fixture(scope="module")
def pipe() -> FeaturePipeline:
    schema = infer_schema(compute_statistics(TRAIN))
    assert schema.columns["smoker"].type == "bool"
    assert schema.columns["smoker"].true_values == ["Yes"]
    names = list(TRAIN.column_names)
    inputs = {name: schema.columns[name].type for name in names}
    rules = Coercer.from_schema(schema, names).state()
    return FeaturePipeline(inputs=inputs, rules=rules, max_categories=2).fit(TRAIN)


NUMBER_TEXT = st.text(alphabet="0123456789.-+eE x", max_size=7)
CELL = st.one_of(
    NUMBER_TEXT,
    st.sampled_from(["Yes", "no", " YES ", "true", "False", "banana", "", "a", "b", "zz"]),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
)
JSON_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=True, allow_infinity=True),
    CELL,
)


def _serve(pipe: FeaturePipeline, row: dict[str, Any]) -> np.ndarray | str:
    try:
        return pipe.transform_row(row)
    except DataValidationError as exc:
        return str(exc.field)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=st.fixed_dictionaries({name: JSON_VALUE for name in TRAIN.column_names}))
def test_json_row_and_batch_row_agree(pipe: FeaturePipeline, row: dict[str, Any]) -> None:
    served = _serve(pipe, row)
    try:
        batch = pipe.transform(pa.Table.from_pylist([row]))
    except DataValidationError as exc:
        assert served == exc.field  # both refuse, naming the same field
        return
    assert isinstance(served, np.ndarray), f"served refused {served}, batch accepted"
    assert served.tobytes() == batch.tobytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({n: CELL for n in TRAIN.column_names}), min_size=1,
                     max_size=12))  # fmt: skip
def test_csv_batch_path_and_json_serving_path_agree(
    pipe: FeaturePipeline, rows: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Cells written to a CSV and read as ``keel predict`` reads files (the model's inputs as
    text, parsed by its rules), against the same cells sent as JSON strings: row by row, the
    same bytes or the same refusal."""
    path = Path(tmp_path_factory.mktemp("csv")) / "data.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRAIN.column_names, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    table, bad = read_file(path, ReadOptions(text=tuple(pipe.inputs)))
    assert bad == ()
    coerced = pipe.coerce(table)
    for i, row in enumerate(rows):
        served = _serve(pipe, row)
        if coerced.rejected[i]:
            assert isinstance(served, str), f"row {i}: batch rejected, served accepted: {row}"
            continue
        one = pipe.transform(pipe.coerce(table.slice(i, 1)))
        assert isinstance(served, np.ndarray), f"row {i}: served refused {served}: {row}"
        assert served.tobytes() == one.tobytes(), row


def test_yes_no_and_bad_spellings(pipe: FeaturePipeline) -> None:
    row = {"n": 3, "x": 1.0, "smoker": "Yes", "c": "a"}
    yes = pipe.transform_row(row)
    assert pipe.transform_row(row | {"smoker": True}).tobytes() == yes.tobytes()
    assert pipe.transform_row(row | {"smoker": " yes"}).tobytes() == yes.tobytes()
    with pytest.raises(DataValidationError) as info:
        pipe.transform_row(row | {"smoker": "banana"})
    assert info.value.field == "smoker"
    assert "str 'banana' is not true/false or one of ['Yes', 'No']" in info.value.message


def test_batch_findings_name_rows_and_values(pipe: FeaturePipeline) -> None:
    table = pa.table(
        {
            "n": ["1", "2.5", "x", "4"],
            "x": [1.0, float("inf"), 2.0, 3.0],
            "smoker": ["Yes", "No", "maybe", "no"],
            "c": ["a", "zz", "b", "a"],
        }
    )
    coerced = pipe.coerce(table)
    assert coerced.rejected.tolist() == [False, True, True, False]
    kinds = {(i.column, i.kind, i.severity): i.rows.tolist() for i in coerced.issues}
    assert kinds[("n", "type_mismatch", "error")] == [1, 2]
    assert kinds[("x", "type_mismatch", "error")] == [1]
    assert kinds[("smoker", "type_mismatch", "error")] == [2]
    assert kinds[("c", "unseen_category", "warning")] == [1]
    with pytest.raises(DataValidationError, match=r"row 1: n: '2.5', 'x' is not an integer"):
        pipe.transform(table)


def test_warning_severity_scores_the_value_as_missing() -> None:
    rule = InputRule("n", "int", invalid="warning", min=0.0, max=10.0)
    coercer = Coercer([rule])
    values, findings = coercer.row({"n": "ten"})
    assert np.isnan(values["n"]) and findings[0].kind == "type_mismatch"
    values, findings = coercer.row({"n": 11})
    assert values["n"] == 11.0 and findings[0].kind == "out_of_range"
    coerced = coercer.table(pa.table({"n": ["ten", "11", "3"]}))
    assert not coerced.rejected.any()
    assert coerced.table.column("n").to_pylist() == [None, 11.0, 3.0]
