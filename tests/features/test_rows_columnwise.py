"""``transform_rows`` over a few rows works a column at a time; it must give what the row
path gives row by row: the same bits, the same warnings, the same error for the same row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import DataValidationError
from keel.features import FeaturePipeline
from keel.features.pipeline import _COLUMNWISE

from .test_parity import SCENARIOS, bits, pipelines, rows  # noqa: F401 (a fixture)


def row_by_row(pipe: FeaturePipeline, batch: list[dict[str, Any]]) -> Any:
    """What the row path gives for the batch: (matrix, findings) or the error's text."""
    findings: list[Any] = []
    try:
        out = [
            pipe.transform_row(row, where=f"instances[{i}].", findings=findings)
            for i, row in enumerate(batch)
        ]
    except DataValidationError as exc:
        return f"{exc.field}: {exc.message}"
    return np.vstack(out), findings


def columnwise(pipe: FeaturePipeline, batch: list[dict[str, Any]]) -> Any:
    findings: list[Any] = []
    try:
        return pipe.transform_rows(batch, findings=findings), findings
    except DataValidationError as exc:
        return f"{exc.field}: {exc.message}"


@pytest.mark.parametrize("scenario", [*SCENARIOS, "defaults"])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_columnwise_rows_equal_the_row_path(
    scenario: str,
    data: st.DataObject,
    pipelines: dict[str, FeaturePipeline],  # noqa: F811
) -> None:
    pipe = pipelines[scenario]
    batch = data.draw(rows(data.draw(st.integers(_COLUMNWISE, 24))))
    expected = row_by_row(pipe, [dict(row) for row in batch])
    got = columnwise(pipe, [dict(row) for row in batch])
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return
    assert got[0].shape == expected[0].shape and got[0].flags.c_contiguous
    assert np.array_equal(bits(got[0]), bits(expected[0]))
    assert [(f.field, f.kind) for f in got[1]] == [(f.field, f.kind) for f in expected[1]]


def test_default_chains_take_the_columnwise_path(
    pipelines: dict[str, FeaturePipeline],  # noqa: F811
) -> None:
    pipe = pipelines["defaults"]
    fused = pipe._fused
    assert fused.affine is not None and len(fused.affine.names) == 2  # x and n
    assert [name for name, *_ in fused.onehot] == ["c", "k", "b", "doc"]
    # declared chains the fused forms do not cover are filled by their row path
    assert pipelines["numeric"]._fused.other


def test_the_first_bad_row_is_named(pipelines: dict[str, FeaturePipeline]) -> None:  # noqa: F811
    pipe = pipelines["strict"]
    good = {"x": 1.0, "n": 3, "c": "a", "k": "p", "b": True, "t": None, "s": None, "doc": ""}
    batch = [dict(good) for _ in range(6)]
    batch[2]["k"] = "never seen"  # a chain error (unseen: error) in row 2 ...
    batch[4]["n"] = "not a number"  # ... and a coercion error after it
    with pytest.raises(DataValidationError) as raised:
        pipe.transform_rows(batch)
    assert raised.value.field is not None and raised.value.field.startswith("instances[2].")
    assert f"{raised.value.field}: {raised.value.message}" == row_by_row(pipe, batch)
    batch[2]["k"] = "p"
    with pytest.raises(DataValidationError, match=r"instances\[4\]\.n"):
        pipe.transform_rows(batch)
    with pytest.raises(DataValidationError, match=r"instances\[3\] must be an object"):
        pipe.transform_rows([good, good, good, ["not", "a", "dict"], good])  # type: ignore[list-item]


def alone(pipe: FeaturePipeline, batch: list[dict[str, Any]]) -> Any:
    """What transform_rows gives one request: (matrix, findings) or the error's text."""
    findings: list[Any] = []
    try:
        return pipe.transform_rows(batch, findings=findings), findings
    except DataValidationError as exc:
        return f"{exc.field}: {exc.message}"


@pytest.mark.parametrize("scenario", ["defaults", "strict", "temporal_custom", "categorical"])
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_batch_of_requests_gets_what_each_gets_alone(
    scenario: str,
    data: st.DataObject,
    pipelines: dict[str, FeaturePipeline],  # noqa: F811
) -> None:
    pipe = pipelines[scenario]
    requests = [
        data.draw(rows(data.draw(st.integers(1, 3)))) for _ in range(data.draw(st.integers(2, 8)))
    ]
    expected = [alone(pipe, [dict(row) for row in request]) for request in requests]
    found: list[list[Any]] = [[] for _ in requests]
    got = pipe.transform_each([[dict(row) for row in r] for r in requests], findings=found)
    for want, result, findings in zip(expected, got, found, strict=True):
        if isinstance(want, str):
            assert isinstance(result, DataValidationError)
            assert f"{result.field}: {result.message}" == want
            continue
        assert isinstance(result, np.ndarray)
        assert np.array_equal(bits(result), bits(want[0]))
        assert [(f.field, f.kind) for f in findings] == [(f.field, f.kind) for f in want[1]]


def test_one_bad_request_fails_alone(pipelines: dict[str, FeaturePipeline]) -> None:  # noqa: F811
    pipe = pipelines["strict"]
    good = {"x": 1.0, "n": 3, "c": "a", "k": "p", "b": True, "t": None, "s": None, "doc": ""}
    requests = [[dict(good)], [dict(good), {**good, "k": "never seen"}], [dict(good)]]
    requests += [[{**good, "n": "NaN?"}], [dict(good)]]
    found: list[list[Any]] = [[] for _ in requests]
    got = pipe.transform_each(requests, findings=found)
    assert isinstance(got[1], DataValidationError) and got[1].field == "instances[1].k"
    assert isinstance(got[3], DataValidationError) and got[3].field == "instances[0].n"
    single = pipe.transform_row(good)
    for k in (0, 2, 4):
        result = got[k]
        assert isinstance(result, np.ndarray)
        assert np.array_equal(bits(result), bits(single))
