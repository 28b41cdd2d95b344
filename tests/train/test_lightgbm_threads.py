"""Batch scoring's thread count: one thread for a small batch, more for a large one, never more
than the cores the process may use or OpenMP's limit, and the same numbers on any count."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from keel.train import lightgbm as lgbm
from keel.train.lightgbm import SMALL_BATCH, WORK_PER_THREAD, LightGBMTrainer, batch_threads

from .conftest import Data

FAST = {"n_estimators": 40, "learning_rate": 0.2}


class Spy:
    """A booster that records the ``num_threads`` each ``predict`` call is given."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self.threads: list[int | None] = []

    def predict(self, x: np.ndarray, **kwargs: Any) -> Any:
        self.threads.append(kwargs.get("num_threads"))
        return self.booster.predict(x, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.booster, name)


def test_small_batches_use_one_thread_and_large_ones_the_free_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lgbm, "_cores", lambda: 8)
    assert batch_threads(1_000, 200) == 1
    assert batch_threads(WORK_PER_THREAD // 200 - 1, 200) == 1
    assert batch_threads(3 * WORK_PER_THREAD // 200, 200) == 3
    assert batch_threads(10_000_000, 200) == 8
    assert batch_threads(0, 0) == 1


def test_cores_are_the_affinity_capped_by_openmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lgbm.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(lgbm, "_openmp_limit", lambda: None)
    assert lgbm._cores() == 4
    monkeypatch.setattr(lgbm, "_openmp_limit", lambda: 1)  # OMP_NUM_THREADS=1: a server worker
    assert lgbm._cores() == 1
    assert batch_threads(10_000_000, 200) == 1


def test_a_threadpoolctl_limit_around_the_call_is_kept() -> None:
    """Tuning trials and server worker threads limit OpenMP per thread with threadpoolctl; an
    explicit ``num_threads`` must not undo that."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    lgb.Booster  # noqa: B018 (LightGBM's OpenMP runtime loaded, for threadpoolctl to find)
    if lgbm._openmp_limit() is None:
        pytest.skip("no OpenMP runtime to ask")
    with threadpoolctl.threadpool_limits(limits=1):
        assert lgbm._openmp_limit() == 1
        assert batch_threads(10_000_000, 200) == 1
    with threadpoolctl.threadpool_limits(limits=2):
        assert lgbm._openmp_limit() == 2


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_predictions_are_bit_identical_on_any_thread_count(
    task: str, task_data: dict[str, Data], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = task_data[task]
    model = LightGBMTrainer(task=task, params=FAST, seed=0).fit(data.x, data.y)
    x = np.array(data.x_test[:1500], dtype=np.float64)
    x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    booster = model.booster_
    expected = booster.predict(x)  # LightGBM's default: every core
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(booster.predict(x, num_threads=threads), expected)
    spy = Spy(booster)
    model.booster_ = spy
    np.testing.assert_array_equal(model.predict(x), expected)
    assert spy.threads == [batch_threads(len(x), booster.num_trees())]
    monkeypatch.setattr(lgbm, "WORK_PER_THREAD", 1)  # every batch as large as can be
    np.testing.assert_array_equal(model.predict(x), expected)
    assert spy.threads[-1] == lgbm._cores()
    model.predict(x[:SMALL_BATCH])  # the online path: not Booster.predict
    assert len(spy.threads) == 2
