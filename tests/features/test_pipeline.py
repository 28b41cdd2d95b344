"""FeaturePipeline: fit on Adult, JSON state, and the row path agreeing with the batch path."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import DataValidationError, NotFittedError
from keel.features import FeaturePipeline
from keel.validate.schema import Schema

INT64 = st.integers(-(2**63), 2**63 - 1)
NUMBERS = st.one_of(
    st.none(),
    INT64,
    st.sampled_from([0, 1, -1, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, float("nan"), float("inf")]),
)


def adult_inputs(schema: Schema) -> dict[str, str]:
    return {name: schema.columns[name].type for name in schema.features()}


@pytest.fixture(scope="module")
def adult_pipeline(adult_schema: Schema, adult_train_table: pa.Table) -> FeaturePipeline:
    return FeaturePipeline(inputs=adult_inputs(adult_schema)).fit(adult_train_table)


@pytest.fixture(scope="module")
def capped_pipeline(adult_schema: Schema, adult_train_table: pa.Table) -> FeaturePipeline:
    """Few categories kept, so unseen and rare values land in an 'other' slot; no scaling."""
    return FeaturePipeline(
        inputs=adult_inputs(adult_schema),
        numeric_impute="mean",
        categorical_impute="constant",
        scale="none",
        max_categories=3,
    ).fit(adult_train_table)


@pytest.fixture(scope="module")
def mixed_pipeline() -> FeaturePipeline:
    """Float and bool inputs, with nulls and a constant column."""
    table = pa.table(
        {
            "x": [0.5, None, 2.5, -1.0, 1e-3],
            "flag": [True, False, None, True, True],
            "k": [3, 3, 3, 3, 3],
            "c": ["a", "b", None, "a", "c"],
        }
    )
    inputs = {"x": "float", "flag": "bool", "k": "int", "c": "string"}
    return FeaturePipeline(inputs=inputs, max_categories=2).fit(table)


PIPELINES = ["adult_pipeline", "capped_pipeline", "mixed_pipeline"]


def row_strategy(pipe: FeaturePipeline) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, kind in pipe.inputs.items():
        if kind in ("int", "float"):
            fields[name] = NUMBERS
            continue
        encoder = next(c.steps[-1] for c in pipe.chains_ if c.columns == [name])
        known = st.sampled_from(encoder.categories_) if encoder.categories_ else st.nothing()
        choices = [st.none(), known, st.text(max_size=8), st.sampled_from(["", " Male", "?"])]
        if kind == "bool":
            choices.append(st.booleans())
        fields[name] = st.one_of(*choices)
    return st.fixed_dictionaries(fields)


@pytest.mark.parametrize("fixture", PIPELINES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_transform_row_equals_transform_bit_for_bit(
    fixture: str, data: st.DataObject, request: pytest.FixtureRequest
) -> None:
    pipe: FeaturePipeline = request.getfixturevalue(fixture)
    row = data.draw(row_strategy(pipe))
    try:
        one = pipe.transform_row(row)
    except DataValidationError as exc:  # a value that does not convert: both paths refuse it
        with pytest.raises(DataValidationError) as refused:
            pipe.transform(pa.Table.from_pylist([row]))
        assert refused.value.field == exc.field
        return
    batch = pipe.transform(pa.Table.from_pylist([row]))
    assert one.dtype == batch.dtype == np.float64
    assert one.shape == batch.shape == (1, pipe.n_features_)
    assert np.array_equal(one, batch)
    assert one.tobytes() == batch.tobytes()
    assert np.array_equal(pipe.transform_rows([row, row]), np.vstack([one, one]))


def test_fit_on_adult(adult_pipeline: FeaturePipeline, adult_train_table: pa.Table) -> None:
    names = adult_pipeline.feature_names()
    assert len(names) == adult_pipeline.n_features_ == 105
    assert names[0] == "age"
    assert "sex=Male" in names and "sex=Female" in names
    assert not any(n.startswith("income") for n in names)
    x = adult_pipeline.transform(adult_train_table)
    assert x.shape == (adult_train_table.num_rows, 105)
    age = x[:, names.index("age")]
    assert age.mean() == pytest.approx(0.0, abs=1e-9)
    assert age.std() == pytest.approx(1.0)
    one_hot = x[:, [i for i, n in enumerate(names) if n.startswith("sex=")]]
    assert np.all(one_hot.sum(axis=1) == 1.0)
    # a null workclass is imputed with the most frequent value
    workclass = [i for i, n in enumerate(names) if n.startswith("workclass=")]
    assert np.all(x[:, workclass].sum(axis=1) == 1.0)


def test_other_slot(capped_pipeline: FeaturePipeline) -> None:
    names = capped_pipeline.feature_names()
    assert "native-country=__other__" in names
    row = {name: None for name in capped_pipeline.inputs}
    row["native-country"] = "Atlantis"
    x = capped_pipeline.transform_row(row)[0]
    assert x[names.index("native-country=__other__")] == 1.0
    # constant categorical impute: nulls are '__missing__', which was never seen -> other slot
    assert x[names.index("workclass=__other__")] == 1.0


def test_unseen_category_without_other_slot_is_all_zero(adult_pipeline: FeaturePipeline) -> None:
    names = adult_pipeline.feature_names()
    row = {name: None for name in adult_pipeline.inputs} | {"race": "Martian"}
    x = adult_pipeline.transform_row(row)[0]
    assert not any(x[i] for i, n in enumerate(names) if n.startswith("race="))


def test_state_json_round_trip(adult_pipeline: FeaturePipeline, adult_test_table: pa.Table) -> None:
    state = json.loads(json.dumps(adult_pipeline.state()))
    rebuilt = FeaturePipeline.from_state(state)
    assert rebuilt.state() == adult_pipeline.state()
    assert rebuilt.feature_names() == adult_pipeline.feature_names()
    before, after = adult_pipeline.transform(adult_test_table), rebuilt.transform(adult_test_table)
    assert before.tobytes() == after.tobytes()
    row = adult_test_table.slice(5, 1).to_pylist()[0]
    row.pop("income")
    assert rebuilt.transform_row(row).tobytes() == before[5:6].tobytes()


def test_from_state_rejects_other_states() -> None:
    with pytest.raises(DataValidationError, match=r"not a keel\.FeaturePipeline state"):
        FeaturePipeline.from_state({"kind": "keel.FeaturePipeline", "version": 99})


def test_init_does_no_work() -> None:
    pipe = FeaturePipeline(inputs={"a": "int"}, scale="none")
    assert (pipe.inputs, pipe.scale, pipe.max_categories) == ({"a": "int"}, "none", 50)
    assert not hasattr(pipe, "n_features_")


def test_not_fitted() -> None:
    pipe = FeaturePipeline(inputs={"a": "int"})
    table = pa.table({"a": [1]})
    for call in (
        lambda: pipe.transform(table),
        lambda: pipe.transform_row({"a": 1}),
        lambda: pipe.transform_rows([{"a": 1}]),
        pipe.state,
        pipe.feature_names,
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


def test_fit_missing_column() -> None:
    with pytest.raises(DataValidationError) as info:
        FeaturePipeline(inputs={"a": "int", "b": "string"}).fit(pa.table({"a": [1]}))
    assert info.value.field == "b"


def test_transform_missing_column(adult_pipeline: FeaturePipeline) -> None:
    with pytest.raises(DataValidationError) as info:
        adult_pipeline.transform(pa.table({"age": [1]}))
    assert info.value.field == "workclass"  # the first missing input, in input order


def full_row(pipe: FeaturePipeline) -> dict[str, Any]:
    return {name: 1 if kind in ("int", "float") else "x" for name, kind in pipe.inputs.items()} | {
        "sex": "Male"
    }


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"age": "39 years"}, "age", "age: str '39 years' is not an integer (int)"),
        ({"age": 2.5}, "age", "age: float 2.5 is not an integer (int)"),
        ({"sex": True}, "sex", "sex: bool True is not text (string)"),
        ({"hours-per-week": True}, "hours-per-week", "bool True is not an integer (int)"),
        ({"sex": 1.5}, "sex", "float 1.5 is not text"),
        ({"age": [1]}, "age", "list [1] is not"),
        ({"agee": 3}, "agee", "agee: unknown field. Expected fields: age, workclass"),
    ],
)
def test_row_errors_name_the_field(
    adult_pipeline: FeaturePipeline, change: dict[str, Any], field: str, message: str
) -> None:
    row = full_row(adult_pipeline) | change
    with pytest.raises(DataValidationError) as info:
        adult_pipeline.transform_row(row)
    assert info.value.field == field
    assert message in info.value.message


def test_missing_field(adult_pipeline: FeaturePipeline) -> None:
    row = full_row(adult_pipeline)
    del row["education-num"]
    with pytest.raises(DataValidationError) as info:
        adult_pipeline.transform_row(row)
    assert info.value.field == "education-num"
    assert "missing field; expected an integer (int) or null" in info.value.message


def test_bool_input_accepts_bools_and_their_spellings_only(mixed_pipeline: FeaturePipeline) -> None:
    row = {"x": 1.0, "flag": True, "k": 3, "c": "a"}
    assert mixed_pipeline.transform_row(row).shape == (1, mixed_pipeline.n_features_)
    spelled = mixed_pipeline.transform_row(row | {"flag": " TRUE "})
    assert spelled.tobytes() == mixed_pipeline.transform_row(row).tobytes()
    with pytest.raises(DataValidationError) as info:
        mixed_pipeline.transform_row(row | {"flag": 1})
    assert info.value.field == "flag"
    assert info.value.details == {"expected": "bool", "got": "int"}


def test_transform_rows_prefixes_fields(adult_pipeline: FeaturePipeline) -> None:
    good = full_row(adult_pipeline)
    with pytest.raises(DataValidationError) as info:
        adult_pipeline.transform_rows([good, good | {"age": "old"}])
    assert info.value.field == "instances[1].age"
    with pytest.raises(DataValidationError) as info:
        adult_pipeline.transform_rows([good, "not a row"])  # type: ignore[list-item]
    assert info.value.field == "instances[1]"


def test_nan_is_imputed_like_null(adult_pipeline: FeaturePipeline) -> None:
    row = full_row(adult_pipeline)
    assert np.array_equal(
        adult_pipeline.transform_row(row | {"age": float("nan")}),
        adult_pipeline.transform_row(row | {"age": None}),
    )


def version_1_state(pipe: FeaturePipeline) -> dict[str, Any]:
    """The state format models registered before declared chains carry."""
    numeric, categorical = [], []
    for chain in pipe.chains_:
        impute, *rest = chain.steps
        spec = {"name": chain.name, "index": chain.offset, "fill": impute.fill_}
        if not rest:  # scale: none
            numeric.append(spec | {"mean": 0.0, "scale": 1.0})
        elif rest[0].kind == "standardize":
            numeric.append(spec | {"mean": rest[0].mean_, "scale": rest[0].scale_})
        else:
            last = rest[0]
            categorical.append(spec | {"categories": last.categories_, "other": last.other_})
    params = {k: v for k, v in pipe.state()["params"].items() if k not in ("transforms", "custom")}
    return {"kind": "keel.FeaturePipeline", "version": 1, "params": params, "numeric": numeric,
            "categorical": categorical, "n_features": pipe.n_features_}  # fmt: skip


@pytest.mark.parametrize("fixture", ["adult_pipeline", "capped_pipeline"])
def test_version_1_states_still_load(
    fixture: str, request: pytest.FixtureRequest, adult_test_table: pa.Table
) -> None:
    pipe: FeaturePipeline = request.getfixturevalue(fixture)
    old = FeaturePipeline.from_state(json.loads(json.dumps(version_1_state(pipe))))
    assert old.feature_names_ == pipe.feature_names_
    assert old.transform(adult_test_table).tobytes() == pipe.transform(adult_test_table).tobytes()
