"""Each transform against a hand computation or its scikit-learn equivalent; the contract."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, OrdinalEncoder, RobustScaler, StandardScaler

from keel.errors import ConfigError, DataValidationError, NotFittedError
from keel.features.categorical import Cross, Hashing, OneHot, Ordinal, TargetEncode
from keel.features.numeric import (
    Bucketize,
    Clip,
    Impute,
    Log1p,
    MinMaxScale,
    RobustScale,
    Standardize,
)
from keel.features.temporal import DatetimeParts
from keel.features.text import TfIdf
from keel.features.transform import KINDS, Transform, transform_class

NAN = float("nan")
X = np.array([1.0, 2.0, NAN, 4.0, 10.0, 2.0, NAN, -3.0])
CATS = pa.array(["a", "b", None, "a", "c", "a", "b", None, "d"])


def column_2d(values: np.ndarray) -> np.ndarray:
    return values.reshape(-1, 1)


def rows_of(transform: Transform, column: Any) -> np.ndarray:
    """The row path over every value, stacked like the batch output."""
    values = column.tolist() if isinstance(column, np.ndarray) else column.to_pylist()
    if transform.output_kind("category") != "matrix":
        return np.array([transform.transform_value(v) for v in values], dtype=np.float64)
    width = len(transform.output_names("c"))
    out = np.zeros((len(values), width))
    for i, v in enumerate(values):
        transform.write_value(v, out[i], 0)
    return out


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.asarray(a, dtype=np.float64), b, equal_nan=True))


# --- numeric ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_impute_numbers_like_simple_imputer(strategy: str) -> None:
    ours = Impute(strategy=strategy, fill_value=7.0 if strategy == "constant" else None).fit(X)
    theirs = SimpleImputer(strategy=strategy, fill_value=7.0).fit(column_2d(X))
    expected = theirs.transform(column_2d(X))[:, 0]
    assert np.array_equal(ours.transform(X), expected)
    assert same(rows_of(ours, X), expected)


def test_impute_strings_and_indicator() -> None:
    mode = Impute(strategy="mode", indicator=True).fit(CATS)
    assert mode.fill_ == "a"
    assert mode.transform(CATS).to_pylist() == ["a", "b", "a", "a", "c", "a", "b", "a", "d"]
    assert mode.missing(CATS).tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 0]
    constant = Impute(strategy="constant").fit(CATS)
    assert constant.transform_value(None) == "__missing__"
    assert constant.transform_value("x") == "x"
    with pytest.raises(ConfigError, match="for strings use mode or constant"):
        Impute(strategy="median").fit(CATS)


def test_impute_empty_column_fills_zero() -> None:
    assert Impute(strategy="mean").fit(np.array([NAN, NAN])).fill_ == 0.0


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(Standardize(), StandardScaler()), (MinMaxScale(), MinMaxScaler()),
     (RobustScale(), RobustScaler())],
)  # fmt: skip
def test_scalers_match_scikit_learn(ours: Transform, theirs: Any) -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(1.0, 2.0, 500)
    new = np.concatenate([rng.normal(0, 50, 100), [0.0, 1e300, -1e-300]])
    ours.fit(train)
    theirs.fit(column_2d(train))
    np.testing.assert_allclose(ours.transform(new), theirs.transform(column_2d(new))[:, 0])
    assert same(rows_of(ours, new), ours.transform(new))


@pytest.mark.parametrize("scaler", [Standardize, MinMaxScale, RobustScale])
def test_scalers_overflow_to_inf_on_the_row_path_without_a_warning(scaler: Any) -> None:
    fitted = scaler().fit(np.array([-1.0, 0.0, 1e-300, 2e-300]))
    huge = np.float64(9.086887108166327e307)  # NumPy scalars warn on overflow; rows must not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = fitted.transform_value(huge)
        batch = fitted.transform(np.array([huge]))
    assert same(np.array([row]), batch)


def test_scalers_ignore_non_finite_values_and_constant_columns() -> None:
    values = np.array([1.0, 3.0, np.inf, NAN, -np.inf])
    scaler = Standardize().fit(values)
    assert (scaler.mean_, scaler.scale_) == (2.0, 1.0)
    assert Standardize().fit(np.array([5.0, 5.0])).scale_ == 1.0
    assert MinMaxScale().fit(np.array([5.0, 5.0])).range_ == 1.0
    assert RobustScale().fit(np.array([5.0, 5.0, 5.0])).scale_ == 1.0


def test_log1p_is_signed_and_defined_everywhere() -> None:
    values = np.array([0.0, 1.0, -1.0, -2.0, 1e-10, np.inf, -np.inf, NAN])
    log = Log1p().fit(values)
    expected = [0.0, math.log1p(1), -math.log1p(1), -math.log1p(2), math.log1p(1e-10),
                np.inf, -np.inf, NAN]  # fmt: skip
    np.testing.assert_allclose(log.transform(values), expected, rtol=1e-15)
    assert same(rows_of(log, values), log.transform(values))


def test_clip_fixed_and_quantile_bounds() -> None:
    values = np.arange(101, dtype=np.float64)
    fixed = Clip(lower=10, upper=20).fit(values)
    assert fixed.transform(np.array([5.0, 15.0, 25.0, NAN])).tolist()[:3] == [10.0, 15.0, 20.0]
    assert math.isnan(fixed.transform_value(NAN))
    fitted = Clip(lower_quantile=0.1, upper_quantile=0.9).fit(values)
    assert (fitted.lower_, fitted.upper_) == (10.0, 90.0)
    one_sided = Clip(upper=0.0).fit(values)
    assert one_sided.transform_value(-1e308) == -1e308
    with pytest.raises(ConfigError, match="above upper bound"):
        Clip(lower=5, upper=1).fit(values)


def test_bucketize_fixed_boundaries_by_hand() -> None:
    bins = Bucketize(strategy="fixed", boundaries=[1.0, 2.0, 3.0]).fit(X)
    values = np.array([0.5, 1.0, 2.5, 3.0, 10.0, -np.inf, np.inf, NAN])
    expected = [0.0, 1.0, 2.0, 3.0, 3.0, 0.0, 3.0, NAN]
    assert same(bins.transform(values), np.array(expected))
    assert same(rows_of(bins, values), np.array(expected))
    onehot = Bucketize(strategy="fixed", boundaries=[1.0, 2.0], encode="onehot").fit(X)
    assert onehot.output_names("x") == ["x:bin0", "x:bin1", "x:bin2"]
    matrix = onehot.transform(np.array([0.0, 1.5, 9.0, NAN]))
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    with pytest.raises(ConfigError, match="needs boundaries"):
        Bucketize(strategy="fixed").fit(X)


def test_bucketize_quantiles_are_about_equal_counts() -> None:
    values = np.random.default_rng(1).normal(size=10_000)
    bins = Bucketize(n_bins=4).fit(values)
    counts = np.bincount(bins.transform(values).astype(int))
    assert len(bins.edges_) == 3 and counts.min() > 2400 and counts.max() < 2600


# --- categorical -----------------------------------------------------------------------------


def test_one_hot_ranks_by_frequency_and_folds_rare_values() -> None:
    column = pa.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"])
    auto = OneHot(max_categories=2).fit(column)
    assert auto.output_names("k") == ["k=a", "k=b", "k=__other__"]
    new = pa.array(["a", "c", "zzz", None])
    expected = [[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]]
    assert auto.transform(new).tolist() == expected
    assert rows_of(auto, new).tolist() == expected


def test_one_hot_unseen_policies() -> None:
    column = pa.array(["a", "a", "b"])
    new = pa.array(["a", "b", "unseen"])
    assert OneHot(unseen="auto").fit(column).transform(new).tolist() == [[1, 0], [0, 1], [0, 0]]
    other = OneHot(unseen="other").fit(column)
    assert other.transform(new).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    ignore = OneHot(max_categories=1, unseen="ignore").fit(column)
    assert ignore.transform(new).tolist() == [[1], [0], [0]]  # rare 'b' dropped too
    strict = OneHot(max_categories=1, unseen="error").fit(column)
    assert strict.transform(pa.array(["a", "b"])).tolist() == [[1, 0], [0, 1]]  # 'b' was seen
    for call in (lambda: strict.transform(new), lambda: rows_of(strict, new)):
        with pytest.raises(DataValidationError, match="unseen category 'unseen'"):
            call()


def test_ordinal_matches_scikit_learn() -> None:
    train = pa.array(["m", "z", "a", "m", None])
    ours = Ordinal().fit(train)
    theirs = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    theirs.fit(np.array([["m"], ["z"], ["a"], ["m"]], dtype=object))
    new = pa.array(["a", "m", "z", "q"])
    expected = theirs.transform(np.array([[v] for v in new.to_pylist()], dtype=object))[:, 0]
    assert ours.transform(new).tolist() == expected.tolist() == [0.0, 1.0, 2.0, -1.0]
    assert math.isnan(ours.transform_value(None))


def test_hashing_is_stable_across_processes() -> None:
    hashing = Hashing(n_features=64).fit(CATS)
    values = ["Private", "Self-emp", "日本語", ""]
    here = [hashing.bucket(v) for v in values]
    code = (
        "from keel.features.categorical import Hashing; h = Hashing(n_features=64).fit(None); "
        f"print([h.bucket(v) for v in {values!r}])"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    there = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(there) == here
    assert len(set(here)) > 1 and all(0 <= b < 64 for b in here)
    matrix = hashing.transform(pa.array([*values, None]))
    assert matrix.sum(axis=1).tolist() == [1, 1, 1, 1, 0]


def test_target_encoding_full_fit_by_hand() -> None:
    column = pa.array(["a", "a", "a", "b", "b", None])
    y = np.array([1, 1, 0, 0, 0, 1])
    encoder = TargetEncode(smoothing=2.0).fit(column, y)
    prior = 0.5
    assert encoder.prior_ == prior
    expected_a = (2 + 2 * prior) / (3 + 2)
    expected_b = (0 + 2 * prior) / (2 + 2)
    new = pa.array(["a", "b", "never seen", None])
    assert encoder.transform(new).tolist() == [expected_a, expected_b, prior, prior]
    assert rows_of(encoder, new).tolist() == [expected_a, expected_b, prior, prior]
    with pytest.raises(ConfigError, match="needs the target"):
        TargetEncode().fit(column)


def test_target_encoding_out_of_fold_never_sees_its_own_label() -> None:
    rng = np.random.default_rng(3)
    column = pa.array(rng.choice(["a", "b", "c", "only-once"], 400, p=[0.5, 0.3, 0.19, 0.01]))
    y = rng.integers(0, 2, 400).astype(np.float64)
    encoder = TargetEncode(smoothing=1.0, folds=5).fit(column, y)
    oof = encoder.transform_oof(column, y)
    # flipping one row's label leaves that row's own encoding unchanged
    for i in (0, 17, 399):
        flipped = y.copy()
        flipped[i] = 1 - flipped[i]
        assert encoder.transform_oof(column, flipped)[i] == oof[i]
    # a hand computation for one row: statistics of the rows in the other folds only
    folds = encoder.fold_ids(400)
    values = np.array(column.to_pylist())
    i = 5
    others = (folds != folds[i]) & (values == values[i])
    rest_prior = y[folds != folds[i]].mean()
    expected = (y[others].sum() + 1.0 * rest_prior) / (others.sum() + 1.0)
    assert oof[i] == pytest.approx(expected, rel=1e-12)
    assert not np.array_equal(oof, encoder.transform(column))


def test_cross_joins_parts_and_marks_missing() -> None:
    cross = Cross().fit(None)
    parts = [pa.array(["a", None, "c"]), pa.array(["x", "y", None])]
    assert cross.transform(parts).to_pylist() == ["a|x", "__missing__|y", "c|__missing__"]
    assert cross.transform_value(["a", None]) == "a|__missing__"


# --- datetime and text -----------------------------------------------------------------------


def test_datetime_parts_by_hand() -> None:
    parts = ["year", "month", "day", "dayofweek", "hour", "minute", "dayofyear"]
    transform = DatetimeParts(parts=parts, cyclical=["month"]).fit(None)
    moment = datetime(2024, 3, 10, 15, 30)  # a Sunday, day 70 of a leap year
    in_india = datetime(2024, 3, 10, 21, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    column = pa.array([moment, None], type=pa.timestamp("us"))
    expected = [2024, 3, 10, 6, 15, 30, 70, math.sin(2 * math.pi * 3 / 12),
                math.cos(2 * math.pi * 3 / 12)]  # fmt: skip
    assert transform.transform(column)[0].tolist() == pytest.approx(expected, abs=1e-15)
    assert np.isnan(transform.transform(column)[1]).all()
    for value in (moment, moment.isoformat(), in_india, in_india.isoformat()):
        out = np.zeros(9)
        transform.write_value(value, out, 0)
        assert out.tolist() == pytest.approx(expected, abs=1e-15)
    with pytest.raises(DataValidationError, match="ISO 8601"):
        transform.write_value("yesterday", np.zeros(9), 0)
    before_epoch = pa.array([datetime(1969, 12, 31, 23, 59, tzinfo=UTC)])
    assert transform.transform(before_epoch)[0, :7].tolist() == [1969, 12, 31, 2, 23, 59, 365]


def test_tfidf_matches_scikit_learn() -> None:
    docs = ["the cat sat", "the dog sat down", "a cat and a dog", "THE Cat", "", "日本語 テキスト"]
    ours = TfIdf(max_features=50).fit(pa.array(docs))
    theirs = TfidfVectorizer(max_features=50).fit(docs)
    assert ours.vocabulary_ == sorted(theirs.vocabulary_, key=theirs.vocabulary_.__getitem__)
    new = ["cat cat dog unknown", "sat", None, "nothing known"]
    expected = theirs.transform([d or "" for d in new]).toarray()
    np.testing.assert_allclose(ours.transform(pa.array(new)), expected, rtol=1e-12)
    assert same(rows_of(ours, pa.array(new)), ours.transform(pa.array(new)))


# --- the contract ----------------------------------------------------------------------------

FITS: dict[str, tuple[dict[str, Any], Any]] = {
    "impute": ({"strategy": "median", "indicator": True}, X),
    "standardize": ({}, X),
    "min_max": ({}, X),
    "robust_scale": ({}, X),
    "log1p": ({}, X),
    "clip": ({"lower_quantile": 0.1}, X),
    "bucketize": ({"n_bins": 3, "encode": "onehot"}, X),
    "one_hot": ({"max_categories": 2}, CATS),
    "ordinal": ({}, CATS),
    "hash": ({"n_features": 4}, CATS),
    "target_encode": ({"smoothing": 1.0}, CATS),
    "cross": ({"separator": "+"}, [CATS, CATS]),
    "datetime": ({"parts": ["hour"]}, pa.array([datetime(2024, 1, 1, 5)])),
    "tfidf": ({"max_features": 3}, pa.array(["a bb cc", "bb dd", None])),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_contract_and_state_round_trip(kind: str) -> None:
    params, column = FITS[kind]
    cls = transform_class(kind)
    transform = cls(**params)
    assert not transform.is_fitted()
    assert transform.get_params() == {**cls().get_params(), **params}  # stored unchanged
    with pytest.raises(NotFittedError):
        transform.state()
    y = np.arange(len(column), dtype=np.float64) % 2 if cls.needs_target else None
    assert transform.fit(column, y) is transform
    fitted = [name for name in vars(transform) if name.endswith("_") and name[0] != "_"]
    assert fitted
    state = json.loads(json.dumps(transform.state()))
    rebuilt = Transform.from_state(state)
    assert type(rebuilt) is cls and rebuilt.state() == transform.state()
    before, after = transform.transform(column), rebuilt.transform(column)
    if isinstance(before, np.ndarray):
        assert before.tobytes() == after.tobytes()
    else:
        assert before.equals(after)


def test_unknown_kind_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'standardize'"):
        transform_class("standardise")


def test_config_defaults_equal_transform_defaults() -> None:
    from keel.config import STEP_PARAMS

    assert set(STEP_PARAMS) == set(KINDS)
    for kind, model in STEP_PARAMS.items():
        assert model().model_dump() == transform_class(kind)().get_params(), kind
