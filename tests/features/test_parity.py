"""The law: ``transform_row(r) == transform([r])[0]`` bit for bit, for every transform.

Rows are random and hostile: nulls, NaN, +-inf, huge and tiny numbers, negatives for log1p,
empty and unicode strings, unseen categories, timezones, unparseable dates. Where one path
rejects a row (unseen category with ``unseen: error``, a bad date string), the other must too.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import DataValidationError
from keel.features import FeaturePipeline

INPUTS = {
    "x": "float",
    "n": "int",
    "c": "string",
    "k": "string",
    "b": "bool",
    "t": "timestamp",
    "s": "timestamp",
    "doc": "string",
}
WORDS = ["red", "green", "blue", "cat", "dog", "the", "fast", "slow", "naïve", "日本語"]
CATEGORIES = ["a", "b", "c", "d", "e", "é", "", " "]


def training_table(rows: int = 300) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.lognormal(2.0, 1.5, rows) * rng.choice([-1.0, 1.0], rows, p=[0.2, 0.8])
    start = datetime(2020, 1, 1, tzinfo=UTC)
    table = pa.table(
        {
            "x": pa.array([None if i % 11 == 0 else float(v) for i, v in enumerate(x)]),
            "n": pa.array(
                [
                    None if i % 13 == 0 else int(v)
                    for i, v in enumerate(rng.integers(-50, 500, rows))
                ]
            ),
            "c": pa.array(
                [
                    None if i % 7 == 0 else CATEGORIES[int(v)]
                    for i, v in enumerate(rng.zipf(1.6, rows) % len(CATEGORIES))
                ]
            ),
            "k": pa.array([["p", "q", "r"][i % 3] for i in range(rows)]),
            "b": pa.array([None if i % 9 == 0 else bool(i % 2) for i in range(rows)]),
            "t": pa.array([start + timedelta(hours=int(h)) for h in rng.integers(0, 40000, rows)]),
            "s": pa.array(
                [
                    (date(2021, 1, 1) + timedelta(days=int(d))).isoformat()
                    for d in rng.integers(0, 900, rows)
                ]
            ),
            "doc": pa.array(
                [" ".join(rng.choice(WORDS, int(rng.integers(0, 6)))) for _ in range(rows)]
            ),
        }
    )
    y = (rng.random(rows) < 0.3).astype(np.int64)
    return table, y


def step(kind: str, **params: Any) -> dict[str, Any]:
    return {"kind": kind, **params}


#: Declared chains covering every transform kind and the interesting parameter choices.
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "numeric": [
        {
            "column": "x",
            "steps": [step("impute", strategy="mean", indicator=True), step("standardize")],
        },
        {"column": "x", "steps": [step("log1p")]},
        {
            "column": "x",
            "steps": [step("clip", lower_quantile=0.05, upper_quantile=0.95), step("robust_scale")],
        },
        {"column": "x", "steps": [step("bucketize", n_bins=5)]},
        {"column": "n", "steps": [step("impute", strategy="mode"), step("min_max")]},
        {
            "column": "n",
            "steps": [
                step("clip", lower=0, upper=100),
                step("bucketize", strategy="fixed", boundaries=[10, 50, 90], encode="onehot"),
            ],
        },
        {"column": "n", "steps": [step("impute", strategy="constant", fill_value=-1)]},
    ],
    "categorical": [
        {
            "column": "c",
            "steps": [
                step("impute", strategy="constant", indicator=True),
                step("one_hot", max_categories=3, unseen="other"),
            ],
        },
        {"column": "c", "steps": [step("one_hot", unseen="ignore")]},
        {"column": "c", "steps": [step("ordinal")]},
        {"column": "c", "steps": [step("hash", n_features=8)]},
        {"column": "c", "steps": [step("target_encode", smoothing=5.0)]},
        {"column": "b", "steps": [step("impute", strategy="mode"), step("one_hot")]},
        {"columns": ["c", "k"], "steps": [step("cross"), step("hash", n_features=16)]},
        {"columns": ["c", "b"], "steps": [step("cross", separator="^"), step("one_hot")]},
        {"column": "doc", "steps": [step("tfidf", max_features=8)]},
    ],
    "temporal_custom": [
        {
            "column": "t",
            "steps": [
                step(
                    "datetime",
                    parts=["year", "month", "day", "dayofweek", "hour", "minute", "dayofyear"],
                )
            ],
        },
        {"column": "s", "steps": [step("datetime", cyclical=["dayofyear", "month", "day"])]},
        {"column": "doc", "steps": [step("tfidf", max_features=20, sublinear_tf=True)]},
        {"column": "age10", "steps": [step("bucketize", strategy="fixed", boundaries=[1, 3])]},
    ],
    "strict": [
        {"column": "k", "steps": [step("one_hot", unseen="error")]},
        {
            "column": "c",
            "steps": [
                step("impute", strategy="mode"),
                step("one_hot", max_categories=2, unseen="error"),
            ],
        },
    ],
}
CUSTOM = [
    {"function": "tests.features.feats_fixture:age_decade", "inputs": ["n"], "output": "age10"},
    {
        "function": "tests.features.feats_fixture:sex_race",
        "inputs": ["c", "k"],
        "output": "ck",
        "type": "string",
    },
    {"function": "tests.features.feats_fixture:ratio", "inputs": ["x", "n"], "output": "r"},
]


@pytest.fixture(scope="module")
def pipelines() -> dict[str, FeaturePipeline]:
    table, y = training_table()
    fitted = {}
    for name, transforms in SCENARIOS.items():
        custom = CUSTOM if name == "temporal_custom" else []
        pipe = FeaturePipeline(inputs=INPUTS, transforms=transforms, custom=custom)
        fitted[name] = pipe.fit(table, y)
    fitted["defaults"] = FeaturePipeline(inputs=INPUTS, max_categories=4).fit(table)
    # what the server does: the pipeline it runs is rebuilt from the JSON state
    return {
        name: FeaturePipeline.from_state(json.loads(json.dumps(p.state())))
        for name, p in fitted.items()
    }


EXTREMES = [
    0.0,
    -0.0,
    -1.0,
    -1.5,
    5e-324,
    -5e-324,
    1e-300,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    -float("nan"),  # NaN with the sign bit set: outputs still use the one canonical NaN
    struct.unpack("<d", struct.pack("<Q", 0x7FF0_0000_0000_0001))[0],  # a signalling payload
    2.0**53 + 1,
]
NUMBERS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EXTREMES),
    st.floats(-1e6, 1e6),
)
INTS = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-100, 200))
TEXT = st.one_of(
    st.none(),
    st.sampled_from([*CATEGORIES, "p", "q", "r", "zzz"]),
    st.text(max_size=6),
    st.lists(st.sampled_from([*WORDS, "RED", "x", "42", "a-b"]), max_size=6).map(" ".join),
)
TZ = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
MOMENTS = st.datetimes(
    min_value=datetime(1901, 1, 1), max_value=datetime(2099, 12, 31), timezones=TZ
)


def moment_as(form: str) -> st.SearchStrategy[Any]:
    """A date/time value in one representation (a batch column needs one type)."""
    if form == "datetime":
        return st.one_of(st.none(), MOMENTS)
    if form == "date":
        return st.one_of(st.none(), st.dates(date(1901, 1, 1), date(2099, 12, 31)))
    return st.one_of(
        st.none(),
        MOMENTS.map(lambda m: m.isoformat()),
        st.dates(date(1901, 1, 1), date(2099, 12, 31)).map(date.isoformat),
        st.sampled_from(["not a date", "", "2024-13-01"]),
    )


@st.composite
def rows(draw: st.DrawFn, count: int) -> list[dict[str, Any]]:
    forms = {name: draw(st.sampled_from(["datetime", "date", "string"])) for name in ("t", "s")}
    bools = draw(st.booleans())  # the bool column holds bools, or strings
    out = []
    for _ in range(count):
        out.append(
            {
                "x": draw(NUMBERS),
                "n": draw(INTS),
                "c": draw(TEXT),
                "k": draw(TEXT),
                "b": draw(st.one_of(st.none(), st.booleans()) if bools else TEXT),
                "t": draw(moment_as(forms["t"])),
                "s": draw(moment_as(forms["s"])),
                "doc": draw(TEXT),
            }
        )
    return out


def bits(matrix: np.ndarray) -> np.ndarray:
    """float64 bit patterns: equal means bit-identical, NaN payloads and -0.0 included."""
    return np.ascontiguousarray(matrix).view(np.int64)


def outcome(fn: Any) -> np.ndarray | type[DataValidationError]:
    try:
        return np.asarray(fn())
    except DataValidationError:
        return DataValidationError


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("scenario", [*SCENARIOS, "defaults"])
@SETTINGS
@given(data=st.data())
def test_row_equals_batch_bit_for_bit(
    scenario: str, data: st.DataObject, pipelines: dict[str, FeaturePipeline]
) -> None:
    pipe = pipelines[scenario]
    (row,) = data.draw(rows(1))
    one = outcome(lambda: pipe.transform_row(row))
    batch = outcome(lambda: pipe.transform(pa.Table.from_pylist([row])))
    if one is DataValidationError or batch is DataValidationError:
        assert one is batch, (row, one, batch)
        return
    assert isinstance(one, np.ndarray) and isinstance(batch, np.ndarray)
    assert one.dtype == batch.dtype == np.float64
    assert one.shape == batch.shape == (1, pipe.n_features_)
    assert np.array_equal(bits(one), bits(batch)), (row, pipe.feature_names_)


@pytest.mark.parametrize("scenario", [*SCENARIOS, "defaults"])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_row_of_a_batch_equals_its_row_path(
    scenario: str, data: st.DataObject, pipelines: dict[str, FeaturePipeline]
) -> None:
    """Many rows in one batch: a row's result must not depend on its position or neighbours."""
    pipe = pipelines[scenario]
    batch_rows = data.draw(rows(data.draw(st.integers(2, 40))))
    try:
        table = pa.Table.from_pylist(batch_rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return  # values Arrow cannot put in one column (e.g. mixed timezones); not our law
    batch = outcome(lambda: pipe.transform(table))
    singles = [outcome(lambda r=r: pipe.transform_row(r)) for r in batch_rows]
    if batch is DataValidationError:
        assert any(s is DataValidationError for s in singles)
        return
    assert isinstance(batch, np.ndarray)
    for i, single in enumerate(singles):
        assert isinstance(single, np.ndarray)
        assert np.array_equal(bits(single[0]), bits(batch[i])), (i, batch_rows[i])
    assert np.array_equal(bits(pipe.transform_rows(batch_rows)), bits(batch))


def test_scenarios_cover_every_transform_kind(pipelines: dict[str, FeaturePipeline]) -> None:
    from keel.features.transform import KINDS

    used = {s.kind for p in pipelines.values() for c in p.chains_ for s in c.steps}
    assert used == set(KINDS)
