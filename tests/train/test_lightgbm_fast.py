"""LightGBM's online path (a few rows through the C API, no per-call predictor) equals
``Booster.predict`` for every task, on any thread, and falls back where it must."""

from __future__ import annotations

import threading

import lightgbm as lgb
import numpy as np
import pytest

from keel.train.lightgbm import SMALL_BATCH, LightGBMTrainer, _fast

from .conftest import Data

FAST = {"n_estimators": 40, "learning_rate": 0.2}


def trained(data: Data, **params: float) -> LightGBMTrainer:
    return LightGBMTrainer(task=data.task, params={**FAST, **params}, seed=0).fit(
        data.x, data.y, x_valid=data.x_valid, y_valid=data.y_valid, early_stopping_rounds=5
    )


def with_gaps(x: np.ndarray) -> np.ndarray:
    """Test rows with some values missing (the trees' default directions)."""
    out = np.array(x[: SMALL_BATCH + 8], dtype=np.float64)
    out[np.random.default_rng(0).random(out.shape) < 0.1] = np.nan
    return out


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_small_batches_equal_booster_predict(task: str, task_data: dict[str, Data]) -> None:
    data = task_data[task]
    model = trained(data)
    booster = model.booster_
    x = with_gaps(data.x_test)
    for rows in (1, 2, 17, SMALL_BATCH, SMALL_BATCH + 1):
        expected = booster.predict(x[:rows])
        got = model.predict(x[:rows])
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert _fast(booster, x.shape[1]) is not None  # the fast path was the one taken
    if task == "multiclass":
        assert model.predict(x[:1]).shape == (1, model.n_classes_)


def test_early_stopped_and_reloaded_models_use_the_kept_iterations(binary_data: Data) -> None:
    model = trained(binary_data)
    x = with_gaps(binary_data.x_test)
    reloaded = LightGBMTrainer.load(model.save())
    for m in (model, reloaded):
        np.testing.assert_allclose(m.predict(x[:5]), m.booster_.predict(x[:5]), atol=1e-12)
        np.testing.assert_allclose(m.predict(x[:1]), m.booster_.predict(x[:1]), atol=1e-12)
    np.testing.assert_array_equal(model.predict(x[:9]), reloaded.predict(x[:9]))


def test_threads_score_concurrently_with_their_own_handles(binary_data: Data) -> None:
    model = trained(binary_data)
    x = with_gaps(binary_data.x_test)
    expected = [model.booster_.predict(x[i : i + 1 + i % 7]) for i in range(40)]
    wrong: list[int] = []
    handles: list[object] = []  # held, so no two can share an id

    def score() -> None:
        fast = _fast(model.booster_, x.shape[1])
        assert fast is not None
        handles.append(fast)
        for _ in range(20):
            for i in range(40):
                if not np.array_equal(model.predict(x[i : i + 1 + i % 7]), expected[i]):
                    wrong.append(i)

    threads = [threading.Thread(target=score) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not wrong
    assert len({id(fast) for fast in handles}) == 4  # one fast predictor per thread, none shared


def test_a_wrong_width_gets_lightgbms_error(binary_data: Data) -> None:
    model = trained(binary_data)
    narrow = binary_data.x_test[:1, :-1]
    assert _fast(model.booster_, narrow.shape[1]) is None
    with pytest.raises(lgb.basic.LightGBMError, match="number of features"):
        model.predict(narrow)
    with pytest.raises(lgb.basic.LightGBMError, match="number of features"):
        model.predict(binary_data.x_test[:3, :-1])
