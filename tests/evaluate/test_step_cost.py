"""What keeps the evaluate step cheap changes no number: permutation importance predicting only
the rows a shuffle changed, the shared test-set prediction, one-thread LightGBM calls, the
bootstrap's cache-sized chunks, NumPy point metrics, and mean |SHAP| on a stratified sample."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from keel.evaluate.bootstrap import AUTO, BootstrapSettings, metric_draws, resample_counts
from keel.evaluate.evaluation import global_explanations, mean_abs_shap, mean_abs_shap_tasks
from keel.evaluate.explain import (
    ModelParts,
    _importance_rows,
    explain_matrix,
    fold_matrix,
    global_importance,
    predict_matrix,
)
from keel.evaluate.importance import _scorer, permutation_importance
from keel.evaluate.metrics import binary_metrics
from keel.evaluate.workshare import Workshare
from keel.features.pipeline import FeaturePipeline
from keel.train.lightgbm import LightGBMTrainer

TARGET = "income"
SMALL = {"n_estimators": 40, "num_leaves": 15, "learning_rate": 0.2}


@pytest.fixture(scope="module")
def adult(adult_train_table: pa.Table, adult_test_table: pa.Table) -> tuple[ModelParts, ...]:
    """A small LightGBM model on Adult (categorical, mostly-zero and missing-value columns),
    its test rows transformed, their labels and the model's predictions."""
    inputs = {
        f.name: "int" if pa.types.is_integer(f.type) else (
            "float" if pa.types.is_floating(f.type) else "string")
        for f in adult_train_table.schema if f.name != TARGET
    }  # fmt: skip
    pipe = FeaturePipeline(inputs=inputs).fit(adult_train_table)

    def labels(table: pa.Table) -> np.ndarray:
        raw = np.asarray(table.column(TARGET).to_pylist(), dtype=object).astype(str)
        return (np.char.rstrip(np.char.strip(raw), ".") == ">50K").astype(np.int64)

    x_train = pipe.transform(adult_train_table)
    model = LightGBMTrainer(task="binary", params=SMALL, seed=0).fit(
        x_train, labels(adult_train_table)
    )
    parts = ModelParts(pipe, model, "binary", "lightgbm", ["<=50K", ">50K"])
    test = adult_test_table.slice(0, 4000)
    x = pipe.transform(test)
    return parts, x, labels(test), model.predict(x)


def _every_row_predicted(parts: ModelParts, x: np.ndarray, y: np.ndarray, *, repeats: int,
                         rows: int, seed: int) -> dict[str, tuple[float, float]]:  # fmt: skip
    """The plain algorithm: every shuffled row predicted (the same draws as the module's)."""
    _, greater, score = _scorer(parts.task, y)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(x), rows, replace=False)) if len(x) > rows else None
    xs, ys = (x, y) if chosen is None else (x[chosen], y[chosen])
    n = len(xs)
    baseline = score(ys, parts.model.predict(xs).reshape(1, n))[0]
    columns, fold = fold_matrix(parts.pipeline)
    out = {}
    for i, column in enumerate(columns):
        features = np.flatnonzero(fold[:, i] > 0)
        order = rng.permuted(np.tile(np.arange(n), (repeats, 1)), axis=1).ravel()
        stacked = np.tile(xs, (repeats, 1))
        stacked[:, features] = xs[np.ix_(order, features)]
        scores = score(ys, parts.model.predict(stacked).reshape(repeats, n))
        drop = baseline - scores if greater else scores - baseline
        out[column] = (float(drop.mean()), float(drop.std()))
    return out


def test_predicting_only_changed_rows_gives_the_numbers_of_predicting_all(
    adult: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.evaluate import importance

    parts, x, y, prediction = adult
    reference = _every_row_predicted(parts, x, y, repeats=3, rows=1500, seed=5)
    # leaf masks (keel.evaluate.leafmask): LightGBM's predictions to rounding, so a near-tie
    # close to P = 1 may go the other way (~2e-6 of AUC a pair); LightGBM predicting only the
    # changed rows: the same numbers
    for tolerance in (1e-5, 1e-12):
        for shared in (None, prediction):  # with and without the step's shared prediction
            for threads in (0, 1):
                found = permutation_importance(parts, x, y, repeats=3, rows=1500, seed=5,
                                               prediction=shared, threads=threads)  # fmt: skip
                assert list(found.mean) == list(reference)  # the model's input order
                for column, (mean, std) in reference.items():
                    assert found.mean[column] == pytest.approx(mean, abs=tolerance), column
                    assert found.std[column] == pytest.approx(std, abs=tolerance), column
        monkeypatch.setattr(importance, "_known_rows", lambda *_: None)
    assert reference["relationship"][0] > reference["fnlwgt"][0]


def test_batches_bound_the_rows_per_predict_call(
    adult: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.evaluate import importance

    parts, x, y, prediction = adult
    calls: list[int] = []

    def counted(package: ModelParts, rows: np.ndarray, threads: int = 0) -> np.ndarray:
        calls.append(len(rows))
        return predict_matrix(package, rows, threads)

    monkeypatch.setattr(importance, "predict_matrix", counted)
    monkeypatch.setattr(importance, "_known_rows", lambda *_: None)  # LightGBM predicts
    monkeypatch.setattr(importance, "BATCH_ROWS", 4000)
    small = permutation_importance(parts, x, y, repeats=2, rows=1000, seed=1,
                                   prediction=prediction)  # fmt: skip
    assert len(calls) > 1 and all(c <= 4000 for c in calls)  # a column's 2,000 rows never split
    assert sum(calls) < 2000 * len(small.mean)  # rows a shuffle left as they were: not predicted
    monkeypatch.setattr(importance, "BATCH_ROWS", 1_000_000)
    calls.clear()
    again = permutation_importance(parts, x, y, repeats=2, rows=1000, seed=1,
                                   prediction=prediction)  # fmt: skip
    assert len(calls) == 1 and again == small  # one call, the same numbers


def test_one_thread_predictions_and_contributions_equal_all_threads(adult: tuple) -> None:
    parts, x, _, prediction = adult
    np.testing.assert_array_equal(predict_matrix(parts, x[:500], 1), prediction[:500])
    one = explain_matrix(parts, x[:64], threads=1).contributions
    every = explain_matrix(parts, x[:64], threads=0).contributions
    np.testing.assert_allclose(one, every, atol=1e-12)


def test_mean_shap_rows_are_a_stratified_sample_of_the_scores(adult: tuple) -> None:
    parts, x, _, prediction = adult
    rows = _importance_rows(len(x), 300, prediction)
    assert len(rows) == 300 and np.all(np.diff(rows) > 0)
    # one row from each of 300 equal-count strata of the sorted scores
    rank = np.empty(len(x), dtype=np.int64)
    rank[np.argsort(prediction, kind="stable")] = np.arange(len(x))
    assert np.array_equal(np.sort(rank[rows] * 300 // len(x)), np.arange(300))
    found = global_importance(parts, x, limit=300, prediction=prediction, threads=1)
    expected = explain_matrix(parts, x[rows]).importance()
    assert found == pytest.approx(expected, abs=1e-12)
    assert list(found) == sorted(found, key=lambda c: -found[c])
    assert len(_importance_rows(len(x), 300, None)) == 300  # no prediction: evenly spread
    assert list(_importance_rows(100, 300, prediction[:100])) == list(range(100))
    multi = np.column_stack([prediction, 1 - prediction])  # multiclass: class, then probability
    assert len(_importance_rows(len(x), 50, multi)) == 50


def test_concurrent_global_explanations_equal_the_sequential_ones(adult: tuple) -> None:
    parts, x, y, prediction = adult
    alone = global_explanations(parts, x, y, seed=3, prediction=prediction)
    beside = global_explanations(parts, x, y, seed=3, prediction=prediction, concurrent=True)
    assert beside[0] == pytest.approx(alone[0], abs=1e-12)
    assert beside[1] == alone[1]
    one_class = global_explanations(
        parts, x[:50], np.zeros(50, np.int64), prediction=prediction[:50]
    )
    assert one_class[1] is None  # ROC AUC undefined: no permutation importance stored


def test_cache_sized_bootstrap_chunks_draw_the_same_resamples(adult: tuple) -> None:
    _, _, y, prediction = adult
    auto = BootstrapSettings(200, 7, 0.95, AUTO)
    assert auto.chunk_for(len(y)) == 65 and auto.chunk_for(10**7) == 4
    np.testing.assert_array_equal(
        np.vstack(list(resample_counts(len(y), auto))),
        np.vstack(list(resample_counts(len(y), BootstrapSettings(200, 7, 0.95, 100)))),
    )
    subsets = [None, np.flatnonzero(y == 1)[:300], np.arange(0, len(y), 3)]
    cached = metric_draws("binary", y, prediction, subsets, auto)
    plain = metric_draws("binary", y, prediction, subsets, BootstrapSettings(200, 7, 0.95, 100))
    for a, b in zip(cached, plain, strict=True):
        assert a.keys() == b.keys()
        for name in a:  # the same resamples; float32 sums may round in the 7th digit
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-9)


def test_numpy_binary_metrics_equal_scikit_learn_to_1e_12(adult: tuple) -> None:
    _, _, y, prediction = adult
    for proba in (prediction, np.round(prediction, 2)):  # the second full of ties
        ours = binary_metrics(y, proba)
        decided = (proba >= 0.5).astype(np.int64)
        theirs = {
            "roc_auc": roc_auc_score(y, proba),
            "accuracy": accuracy_score(y, decided),
            "log_loss": log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1]),
            "precision": precision_score(y, decided, zero_division=0),
            "recall": recall_score(y, decided, zero_division=0),
        }
        for name, value in theirs.items():
            assert ours[name] == pytest.approx(value, abs=1e-12), name
    empty = binary_metrics(np.zeros(0, np.int64), np.zeros(0))
    assert empty["rows"] == 0 and empty["roc_auc"] is None and empty["accuracy"] is None


def test_mean_shap_in_blocks_on_two_threads_equals_it_at_once(adult: tuple) -> None:
    parts, x, _, prediction = adult
    whole = mean_abs_shap(parts, x, prediction)
    tasks, finish = mean_abs_shap_tasks(parts, x, prediction)
    assert len(tasks) > 1  # TreeSHAP rows in blocks
    work = Workshare()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(work.serve)
        try:
            shared = finish(work.post(tasks).result())
        finally:
            work.close()
    assert list(shared) == list(whole)
    np.testing.assert_array_equal(list(shared.values()), list(whole.values()))
