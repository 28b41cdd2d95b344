"""The cost of model-agnostic explanations (shap's Permutation explainer, the ``explain``
extra) per Adult row, for a scikit-learn logistic regression and the torch MLP.

    .venv/bin/python benchmarks/evaluate/agnostic.py [ROWS]

Fits both flavors on the Adult training data through Keel's feature pipeline (105+ model
features, 14 input columns), then explains ROWS (default 50) test rows one call each, after a
warm-up call (shap's first call compiles its Numba helpers: seconds, once per process), and
prints the median and p90 milliseconds per row, the rows of background used, and the largest
|base + sum(contributions) - raw output| seen. Prints Markdown rows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from keel.config import load_config
from keel.data.sources import read_source
from keel.evaluate.agnostic import PERMUTATIONS
from keel.evaluate.explain import ModelParts, explain_matrix
from keel.features.pipeline import FeaturePipeline
from keel.train.background import BACKGROUND_ROWS

ADULT = Path(__file__).resolve().parents[2] / "examples" / "adult"
LOGISTIC = {
    "estimator": "sklearn.pipeline.Pipeline",
    "steps": [
        ["scale", {"estimator": "sklearn.preprocessing.StandardScaler"}],
        ["clf", {"estimator": "sklearn.linear_model.LogisticRegression", "max_iter": 300}],
    ],
}


def _inputs(table: pa.Table) -> dict[str, str]:
    def kind(t: pa.DataType) -> str:
        return "int" if pa.types.is_integer(t) else "float" if pa.types.is_floating(t) else "string"

    return {f.name: kind(f.type) for f in table.schema if f.name != "income"}


def _labels(table: pa.Table) -> np.ndarray:
    raw = np.asarray(table.column("income").to_pylist(), dtype=object).astype(str)
    return (np.char.rstrip(np.char.strip(raw), ".") == ">50K").astype(np.int64)


def main(rows: int) -> None:
    from keel.train.mlp import MLPTrainer
    from keel.train.sklearn import SklearnTrainer

    cfg = load_config(ADULT, env="")
    assert cfg.data.test is not None
    train, test = read_source(cfg.data.train, ADULT), read_source(cfg.data.test, ADULT)
    pipe = FeaturePipeline(inputs=_inputs(train)).fit(train)
    x, y = pipe.transform(train), _labels(train)
    x_test = pipe.transform(test.slice(0, rows))
    models = {
        "sklearn LogisticRegression": (
            "sklearn",
            SklearnTrainer(task="binary", params=LOGISTIC, seed=0).fit(x, y),
        ),
        "mlp (64, 32)": ("mlp", MLPTrainer(task="binary", params={"epochs": 5}, seed=0).fit(x, y)),
    }
    print(f"Adult: {x.shape[1]} model features from {len(pipe.inputs)} input columns, "
          f"{BACKGROUND_ROWS} background rows, {PERMUTATIONS} permutations")  # fmt: skip
    print("\n| flavor | median ms / row | p90 ms / row | max abs(sum - output) |")
    print("|---|---|---|---|")
    for name, (flavor, model) in models.items():
        parts = ModelParts(pipe, model, "binary", flavor, ["<=50K", ">50K"])
        explain_matrix(parts, x_test[:1])  # warm-up: shap's Numba helpers compile once
        seconds, worst = [], 0.0
        for i in range(rows):
            start = time.perf_counter()
            found = explain_matrix(parts, x_test[i : i + 1])
            seconds.append(time.perf_counter() - start)
            total = found.base_value[0] + found.contributions[0, 0].sum()
            worst = max(worst, abs(total - found.margin[0, 0]))
        ms = np.asarray(seconds) * 1e3
        print(f"| {name} | {np.median(ms):.1f} | {np.percentile(ms, 90):.1f} | {worst:.1e} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
