"""CBPE on Adult: Keel's estimate against NannyML's, per window, against the realised metrics.

A LightGBM model is fitted on 80% of adult.data; the other 20% (with labels) is the reference
both tools calibrate on. The analysis data is adult.test in file order and sorted by age
(covariate shift), in windows of ``WINDOW`` rows. For each tool: the mean absolute error of the
estimated ROC AUC and accuracy against the realised ones per window, and the time of fit +
estimate (median of ``ROUNDS``). NannyML runs in its own venv (``NANNYML_PYTHON``, default
/work/bench-venvs/nannyml/bin/python), never as a dependency of Keel.

    .venv/bin/python benchmarks/monitor/cbpe.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
WINDOW = int(os.environ.get("WINDOW", "2000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
NANNYML = os.environ.get("NANNYML_PYTHON", "/work/bench-venvs/nannyml/bin/python")

NANNY_SCRIPT = r"""
import json, sys, time
import pandas as pd
import nannyml as nml
ref = pd.read_parquet(sys.argv[1]); ana = pd.read_parquet(sys.argv[2])
rounds = int(sys.argv[3]); window = int(sys.argv[4])
times = []
for _ in range(rounds):
    t = time.perf_counter()
    est = nml.CBPE(y_pred_proba="score", y_pred="pred", y_true="y", metrics=["roc_auc", "accuracy"],
                   chunk_size=window, problem_type="classification_binary")
    est.fit(ref)
    out = est.estimate(ana.drop(columns=["y"])).filter(period="analysis").to_df()
    times.append(time.perf_counter() - t)
auc = out[("roc_auc", "value")].tolist(); acc = out[("accuracy", "value")].tolist()
print(json.dumps({"times": times, "roc_auc": auc, "accuracy": acc, "version": nml.__version__}))
"""


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import lightgbm
    import pandas as pd
    import pyarrow as pa

    from keel.config import load_config
    from keel.data import read_source

    adult = REPO / "examples" / "adult"
    config = load_config(adult, env="")
    assert config.data.test is not None
    train_t, test_t = read_source(config.data.train, adult), read_source(config.data.test, adult)
    train, test = train_t.to_pandas(), test_t.to_pandas()
    for field in train_t.schema:
        if pa.types.is_string(field.type) and field.name != "income":
            cats = sorted(set(train[field.name].dropna()))
            for frame in (train, test):
                frame[field.name] = pd.Categorical(frame[field.name], categories=cats)
    y = (train.pop("income") == ">50K").to_numpy(int)
    y_test = (test.pop("income") == ">50K").to_numpy(int)
    is_ref = np.random.default_rng(0).random(len(train)) < 0.2
    model = lightgbm.LGBMClassifier(n_estimators=150, learning_rate=0.1, verbose=-1)
    model.fit(train[~is_ref], y[~is_ref])
    return (model.predict_proba(train[is_ref])[:, 1], y[is_ref],
            model.predict_proba(test)[:, 1], y_test, test["age"].to_numpy())  # fmt: skip


def realised(score: np.ndarray, label: np.ndarray) -> list[tuple[float, float]]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    return [
        (float(roc_auc_score(label[s:s + WINDOW], score[s:s + WINDOW])),
         float(accuracy_score(label[s:s + WINDOW], score[s:s + WINDOW] >= 0.5)))
        for s in range(0, score.size - WINDOW + 1, WINDOW)
    ]  # fmt: skip


def keel_cbpe(ref_s: np.ndarray, ref_y: np.ndarray, score: np.ndarray) -> tuple[list[Any], float]:
    from keel.monitor.cbpe import estimate_performance, fit_calibration, score_bins

    times, out = [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        calibration = fit_calibration(ref_s, ref_y)
        out = []
        for s in range(0, score.size - WINDOW + 1, WINDOW):
            window = score[s : s + WINDOW]
            p = window if calibration is None else calibration(window)
            estimate = estimate_performance(score_bins(window, p))
            out.append((estimate.roc_auc, estimate.accuracy))
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def nannyml_cbpe(
    ref_s: np.ndarray, ref_y: np.ndarray, score: np.ndarray, label: np.ndarray
) -> tuple[list[Any], float, str] | None:
    if (
        not Path(NANNYML).exists()
        or subprocess.run(
            [NANNYML, "-c", "import nannyml"], capture_output=True, check=False
        ).returncode
    ):
        return None
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        ref = pd.DataFrame({"score": ref_s, "pred": (ref_s >= 0.5).astype(int), "y": ref_y})
        usable = score.size - score.size % WINDOW  # full windows only, as for Keel
        ana = pd.DataFrame({"score": score[:usable], "pred": (score[:usable] >= 0.5).astype(int),
                            "y": label[:usable]})  # fmt: skip
        ref.to_parquet(f"{tmp}/ref.parquet")
        ana.to_parquet(f"{tmp}/ana.parquet")
        result = subprocess.run(
            [NANNYML, "-c", NANNY_SCRIPT, f"{tmp}/ref.parquet", f"{tmp}/ana.parquet",
             str(ROUNDS), str(WINDOW)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    body = json.loads(result.stdout.strip().splitlines()[-1])
    pairs = list(zip(body["roc_auc"], body["accuracy"], strict=True))
    return pairs, statistics.median(body["times"]), body["version"]


def errors(estimates: list[Any], truth: list[tuple[float, float]]) -> tuple[float, float]:
    auc = [abs(e[0] - t[0]) for e, t in zip(estimates, truth, strict=False)]
    acc = [abs(e[1] - t[1]) for e, t in zip(estimates, truth, strict=False)]
    return float(np.mean(auc)), float(np.mean(acc))


def main() -> None:
    ref_s, ref_y, score, label, age = data()
    for order in ("file", "age"):
        s, y = (score, label)
        if order == "age":
            sort = np.argsort(age, kind="stable")
            s, y = score[sort], label[sort]
        truth = realised(s, y)
        ours, t_ours = keel_cbpe(ref_s, ref_y, s)
        auc_e, acc_e = errors(ours, truth)
        print(
            f"[{order} order, {len(truth)} windows of {WINDOW}] Keel CBPE: MAE roc_auc "
            f"{auc_e:.4f}, accuracy {acc_e:.4f}; fit+estimate {t_ours * 1000:.1f} ms"
        )
        theirs = nannyml_cbpe(ref_s, ref_y, s, y)
        if theirs is None:
            print(f"  NannyML not installed at {NANNYML}: Keel measured alone")
            continue
        pairs, t_theirs, version = theirs
        auc_n, acc_n = errors(pairs, truth)
        print(
            f"  NannyML {version} CBPE: MAE roc_auc {auc_n:.4f}, accuracy {acc_n:.4f}; "
            f"fit+estimate {t_theirs * 1000:.1f} ms ({t_theirs / t_ours:.0f}x Keel's time)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
