"""Bootstrap intervals: the weighted metrics equal scikit-learn's with sample weights, the
intervals cover the truth about as often as they claim, and the seed fixes them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from keel.evaluate.bootstrap import (
    AUTO,
    RESAMPLE_BLOCK,
    BootstrapSettings,
    block_count,
    metric_draws,
    percentile_interval,
    resample_counts,
    weighted_auc,
)


def binary(n: int = 800, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    proba = np.round(np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1), 2)  # many ties
    return y, proba


def test_resamples_are_multinomial_counts_fixed_by_the_seed() -> None:
    settings = BootstrapSettings(resamples=250, seed=4, chunk=100)
    chunks = list(resample_counts(50, settings))
    # blocks of 64 resamples, each from its own seed: a chunk never spans two
    assert [len(c) for c in chunks] == [64, 64, 64, 58]
    counts = np.vstack(chunks)
    assert (counts.sum(axis=1) == 50).all() and (counts >= 0).all()
    again = np.vstack(list(resample_counts(50, settings)))
    assert np.array_equal(counts, again)
    other = np.vstack(list(resample_counts(50, BootstrapSettings(resamples=250, seed=5))))
    assert not np.array_equal(counts, other)


def test_each_resample_equals_sklearn_with_its_counts_as_weights() -> None:
    y, proba = binary()
    settings = BootstrapSettings(resamples=5, seed=0)
    (draws,) = metric_draws("binary", y, proba, [None], settings, order=np.arange(len(y)))
    counts = next(resample_counts(len(y), settings)).astype(np.float64)
    predicted = (proba >= 0.5).astype(int)
    for i, w in enumerate(counts):
        assert draws["roc_auc"][i] == pytest.approx(roc_auc_score(y, proba, sample_weight=w))
        assert draws["accuracy"][i] == pytest.approx(accuracy_score(y, predicted, sample_weight=w))
        assert draws["precision"][i] == pytest.approx(
            precision_score(y, predicted, sample_weight=w)
        )
        assert draws["recall"][i] == pytest.approx(recall_score(y, predicted, sample_weight=w))
        assert draws["log_loss"][i] == pytest.approx(log_loss(y, proba, sample_weight=w), rel=1e-5)
    assert weighted_auc(counts, proba, y) == pytest.approx(draws["roc_auc"])
    # by default the counts' columns are the rows in score order (spares a gather)
    (default,) = metric_draws("binary", y, proba, [None], settings)
    ranked = np.argsort(proba, kind="stable")
    for i, w in enumerate(counts):
        weights = np.empty_like(w)
        weights[ranked] = w
        assert default["roc_auc"][i] == pytest.approx(
            roc_auc_score(y, proba, sample_weight=weights)
        )


def test_subsets_and_other_tasks_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    n, k = 600, 3
    codes = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.2 * np.eye(k)[codes]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rows = np.flatnonzero(rng.random(n) < 0.5)
    settings = BootstrapSettings(resamples=3, seed=1)
    whole, part = metric_draws("multiclass", codes, proba, [None, rows], settings)
    counts = next(resample_counts(n, settings)).astype(np.float64)
    for i, w in enumerate(counts):
        f1 = f1_score(codes, proba.argmax(1), average="macro", sample_weight=w)
        assert whole["macro_f1"][i] == pytest.approx(f1)
        auc = roc_auc_score(codes, proba, multi_class="ovr", sample_weight=w)
        assert whole["roc_auc"][i] == pytest.approx(auc)
        sub = accuracy_score(codes[rows], proba[rows].argmax(1), sample_weight=w[rows])
        assert part["accuracy"][i] == pytest.approx(sub)
    truth = rng.normal(1000, 5, n)
    guess = truth + rng.normal(0, 2, n)
    (reg,) = metric_draws("regression", truth, guess, [None], settings)
    for i, w in enumerate(counts):
        assert reg["r2"][i] == pytest.approx(r2_score(truth, guess, sample_weight=w))
        rmse = np.sqrt(mean_squared_error(truth, guess, sample_weight=w))
        assert reg["rmse"][i] == pytest.approx(rmse)


def test_intervals_cover_the_truth_about_as_often_as_claimed() -> None:
    """Sanity of coverage: 200 samples of 400 rows from a known population; the 90 % interval of
    accuracy and AUC holds the population value in roughly 90 % of them."""
    rng = np.random.default_rng(11)
    big_y = rng.integers(0, 2, 400_000)
    big_p = np.clip(0.25 * big_y + rng.random(len(big_y)) * 0.75, 0, 1)
    true_acc = float(((big_p >= 0.5) == big_y).mean())
    true_auc = float(roc_auc_score(big_y, big_p))
    covered = {"accuracy": 0, "roc_auc": 0}
    trials = 200
    for t in range(trials):
        rows = rng.integers(0, len(big_y), 400)
        settings = BootstrapSettings(resamples=300, seed=t, confidence=0.9)
        (draws,) = metric_draws("binary", big_y[rows], big_p[rows], [None], settings)
        for name, truth in (("accuracy", true_acc), ("roc_auc", true_auc)):
            interval = percentile_interval(draws[name], 0.9)
            assert interval is not None
            covered[name] += interval[0] <= truth <= interval[1]
    for name, hits in covered.items():
        assert 0.82 <= hits / trials <= 0.97, (name, hits)


def test_an_interval_needs_most_resamples_to_define_the_metric() -> None:
    assert percentile_interval(np.array([np.nan] * 6 + [0.5] * 4), 0.95) is None
    low, high = percentile_interval(np.arange(101, dtype=float), 0.9) or (0, 0)
    assert (low, high) == pytest.approx((5.0, 95.0))


def test_one_class_resample_has_no_auc() -> None:
    counts = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    auc = weighted_auc(counts, np.array([0.2, 0.4, 0.9]), np.array([0, 1, 1]))
    assert np.isnan(auc[0]) and auc[1] == 1.0


def test_a_block_of_resamples_drawn_alone_equals_it_drawn_with_the_others() -> None:
    settings = BootstrapSettings(resamples=200, seed=9, chunk=16)
    every = np.vstack(list(resample_counts(40, settings)))
    third = np.vstack(list(resample_counts(40, settings, blocks=[2])))
    np.testing.assert_array_equal(third, every[2 * RESAMPLE_BLOCK : 3 * RESAMPLE_BLOCK])
    assert block_count(settings) == 4 and len(every) == 200


def test_draws_shared_between_threads_equal_the_serial_ones() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from keel.evaluate.workshare import Workshare

    y, proba = binary()
    settings = BootstrapSettings(resamples=300, seed=3, chunk=AUTO)
    subsets = [None, np.flatnonzero(proba > 0.5), np.arange(0, len(y), 2)]
    serial = metric_draws("binary", y, proba, subsets, settings)
    work = Workshare()
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(2):
            pool.submit(work.serve)
        try:
            shared = metric_draws("binary", y, proba, subsets, settings, run=work.map)
        finally:
            work.close()
    for a, b in zip(serial, shared, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
