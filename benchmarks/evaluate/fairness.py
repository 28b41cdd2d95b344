"""Fairness and bootstrap on the Adult test set (16,281 rows): Keel against Fairlearn.

    .venv/bin/python benchmarks/evaluate/fairness.py [ROUNDS]

A LightGBM model (60 trees) is trained on adult.data; its decisions at 0.5 on adult.test are
audited by sex and by sex x race: Keel's ``audit_fairness`` against Fairlearn's ``MetricFrame``
(selection rate, TPR, FPR; then ``difference()`` and ``ratio()``, which is what the disparities
need), on the same predictions, median of ROUNDS (default 7) after one warm-up. The numbers
are checked equal to 1e-12 first. Then 1,000 bootstrap resamples of ROC AUC (and of every binary
metric) on the same rows: wall and CPU seconds, median of ROUNDS. Prints Markdown rows.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import lightgbm as lgb

    from keel.config import load_config
    from keel.data import read_source

    adult = ROOT / "examples" / "adult"
    cfg = load_config(adult, env="")
    assert cfg.data.test is not None

    def frame(table: Any) -> tuple[Any, np.ndarray]:
        df = table.to_pandas()
        y = (df.pop("income").astype(str).str.strip().str.rstrip(".") == ">50K").to_numpy()
        for name in df.columns:
            if df[name].dtype.kind not in "iufb":
                df[name] = df[name].astype("category")
        return df, y.astype(np.int64)

    x, y = frame(read_source(cfg.data.train, adult))
    model = lgb.LGBMClassifier(n_estimators=60, learning_rate=0.2, num_leaves=15, verbose=-1)
    model.fit(x, y)
    xt, yt = frame(read_source(cfg.data.test, adult))
    for name in xt.columns:
        if hasattr(x[name], "cat"):
            xt[name] = xt[name].astype(x[name].dtype)
    proba = model.predict_proba(xt)[:, 1]
    sex = xt["sex"].astype(str).to_numpy(dtype=object)
    race = xt["race"].astype(str).to_numpy(dtype=object)
    return yt, proba, sex, race


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Median wall and CPU seconds over ``rounds`` calls, after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(rounds):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main(rounds: int) -> None:
    import fairlearn
    import fairlearn.metrics as fm
    import pandas as pd

    from keel.evaluate.bootstrap import (
        BootstrapSettings,
        metric_draws,
        resample_counts,
        weighted_auc,
    )
    from keel.evaluate.fairness import audit_fairness

    y, proba, sex, race = predictions()
    h = (proba >= 0.5).astype(np.int64)
    rates = {"selection_rate": fm.selection_rate, "tpr": fm.true_positive_rate,
             "fpr": fm.false_positive_rate}  # fmt: skip

    def theirs(features: Any) -> Any:
        frame = fm.MetricFrame(metrics=rates, y_true=y, y_pred=h, sensitive_features=features)
        return frame.difference(), frame.ratio()

    both = pd.DataFrame({"sex": sex, "race": race})
    cases = {
        "sex": (lambda: audit_fairness({"sex": sex}, y, h, min_group_size=0),
                lambda: theirs(sex), "sex", sex),
        "sex × race": (lambda: audit_fairness({"sex": sex, "race": race}, y, h, min_group_size=0),
                       lambda: theirs(both), "sex&race", both),
    }  # fmt: skip
    print(f"fairlearn {fairlearn.__version__}, {len(y):,} rows, {rounds} rounds\n")
    print("| audit | Keel ms | Fairlearn MetricFrame ms | Fairlearn ÷ Keel | equal to 1e-12 |")
    print("|---|---|---|---|---|")
    for label, (ours, fair, key, features) in cases.items():
        audit = ours()[key].disparities
        expected = {
            "demographic_parity_difference": fm.demographic_parity_difference,
            "demographic_parity_ratio": fm.demographic_parity_ratio,
            "equalized_odds_difference": fm.equalized_odds_difference,
            "equalized_odds_ratio": fm.equalized_odds_ratio,
        }
        equal = all(
            abs((audit[name] or 0.0) - f(y, h, sensitive_features=features)) <= 1e-12
            for name, f in expected.items()
        )
        k, _ = timed(ours, rounds)
        f, _ = timed(fair, rounds)
        print(f"| by {label} | {k * 1e3:.2f} | {f * 1e3:.0f} | {f / k:.0f}× | {equal} |")
    settings = BootstrapSettings(resamples=1000, seed=0)
    # as metric_draws does: the counts' columns are the rows in score order (any fixed
    # assignment of rows to columns is the same bootstrap), so no gather per resample
    order = np.argsort(proba, kind="stable")
    ranked, labels = proba[order], y[order]

    def auc_only() -> None:
        for counts in resample_counts(len(y), settings):
            weighted_auc(counts, ranked, labels)

    def every_metric() -> None:
        metric_draws("binary", y, proba, [None], settings)

    print("\n| 1,000 bootstrap resamples, Adult test set | wall s | CPU s |")
    print("|---|---|---|")
    for label, fn in (("ROC AUC", auc_only), ("all 8 binary metrics", every_metric)):
        wall, cpu = timed(fn, rounds)
        print(f"| {label} | {wall:.3f} | {cpu:.3f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
