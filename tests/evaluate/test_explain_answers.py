"""An explanation's rows answer as ``keel predict`` does: the predicted label as
``prediction``, ``probability`` (binary: P(positive)) or ``probabilities`` by class
(multiclass); a regression's prediction is its value. The numbers behind them (margin,
``Explanation.prediction``) are unchanged."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from keel.evaluate.explain import ModelParts, explain_matrix
from keel.features.pipeline import FeaturePipeline
from keel.train.lightgbm import LightGBMTrainer
from keel.train.tasks import task_for


@pytest.fixture(scope="module")
def data() -> tuple[FeaturePipeline, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    y = (np.asarray(table["a"]) > 0).astype(np.int64) + (np.asarray(table["b"]) > 1)
    pipe = FeaturePipeline(inputs={"a": "float", "b": "float"}).fit(table)
    return pipe, pipe.transform(table), y


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_rows_answer_as_keel_predict(
    data: tuple[FeaturePipeline, np.ndarray, np.ndarray], task: str
) -> None:
    pipe, x, y = data
    classes = {"binary": ["no", "yes"], "multiclass": ["x", "y", "z"], "regression": []}[task]
    target = {"binary": np.minimum(y, 1), "multiclass": y, "regression": y * 1.5}[task]
    trainer = LightGBMTrainer(task=task, params={"n_estimators": 10}, seed=0)
    model = trainer.fit(x, target)
    explained = explain_matrix(ModelParts(pipe, model, task, "lightgbm", classes), x[:20])
    expected = task_for(task).columns(model.predict(x[:20]), classes)  # keel predict's columns
    got = explained.predicted()
    assert list(got) == list(expected)
    for name, values in expected.items():
        if values.dtype == object:
            assert got[name].tolist() == values.tolist(), name
        else:
            np.testing.assert_allclose(got[name], values, atol=1e-9)
    rows = explained.to_json()["rows"]
    if task == "regression":
        assert explained.labels is None and "probability" not in rows[0]
        np.testing.assert_allclose([r["prediction"] for r in rows], expected["prediction"])
        return
    assert [r["prediction"] for r in rows] == expected["prediction"].tolist()
    if task == "binary":
        assert {"yes", "no"} == {r["prediction"] for r in rows}
        assert [r["probability"] for r in rows] == pytest.approx(expected["probability"].tolist())
    else:
        assert set(rows[0]["probabilities"]) == {"x", "y", "z"}
        first = [rows[0]["probabilities"][c] for c in classes]
        np.testing.assert_allclose(first, explained.prediction[0], atol=1e-12)


def test_a_dataframes_index_numbers_the_rows(
    data: tuple[FeaturePipeline, np.ndarray, np.ndarray],
) -> None:
    """``explain_table`` of a DataFrame keeps its index (JSON-ready: a timestamp as ISO
    text); an Arrow table's rows are numbered by position (no ``index``)."""
    import orjson
    import pandas as pd

    from keel.evaluate.explain import explain_table

    pipe, x, y = data
    model = LightGBMTrainer(task="binary", params={"n_estimators": 5}, seed=0).fit(
        x, np.minimum(y, 1)
    )
    parts = ModelParts(pipe, model, "binary", "lightgbm", ["no", "yes"])
    when = pd.date_range("2026-01-01", periods=3, freq="D")
    frame = pd.DataFrame({"a": [0.1, -2.0, 1.5], "b": [0.0, 2.0, -1.0]}, index=when)
    explained = explain_table(parts, frame)
    rows = orjson.loads(orjson.dumps(explained.to_json()))["rows"]
    assert [r["index"] for r in rows] == [t.isoformat() for t in when]
    assert explained.index == tuple(when)
    by_position = explain_table(parts, pa.Table.from_pandas(frame, preserve_index=False))
    assert by_position.index is None and "index" not in by_position.to_json()["rows"][0]
    assert [r["prediction"] for r in rows] == by_position.labels.tolist()
