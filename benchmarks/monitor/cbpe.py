"""CBPE: Keel's estimate against NannyML's, per window, against the realised metrics.

Two datasets, each under several covariate shifts (the analysis rows sorted by a feature, so
each window holds a different slice of the population) and in file order:

- **Adult** (the acceptance test of issue 17): LightGBM fitted on 80% of adult.data, the other
  20% (with labels) is the reference both tools calibrate on; adult.test in windows of 2,000
  rows, in file order and sorted by age, hours-per-week and education-num.
- **California housing**, median house value above $200,000 (a shift Keel was not developed
  on): LightGBM on 50% of the districts, 20% reference, the other 30% in windows of 1,000 rows,
  in file order and sorted by median income, housing median age and latitude.

For each tool: the mean absolute error (MAE) of the estimated ROC AUC and accuracy against the
realised ones (scikit-learn, from the rows) over the windows, and the wall and CPU time of fit +
estimate (median of ``ROUNDS``). Keel's ROC AUC is also given from the window's rows instead of
its 500 score bins (production keeps only the bins), and the noise floor: the mean |realised -
expected| when the labels are drawn from the calibrated probabilities, i.e. the error of an
estimate that knew P(y | x). Then the same for ``SEEDS`` other random splits (another reference,
another model), to show how much of a difference between the tools is noise: the mean
difference in MAE with its standard error, and in how many splits Keel was better.
NannyML runs in its own venv (``NANNYML_PYTHON``, default /work/bench-venvs/nannyml/bin/python),
never as a dependency of Keel.

    nice .venv/bin/python benchmarks/monitor/cbpe.py          # SEEDS=8 ROUNDS=5 by default
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
SEEDS = int(os.environ.get("SEEDS", "8"))
NANNYML = os.environ.get("NANNYML_PYTHON", "/work/bench-venvs/nannyml/bin/python")
CALIFORNIA = Path(os.environ.get("CALIFORNIA", "/work/shared/data/california-housing/housing.csv"))

NANNY_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
import nannyml as nml
jobs = json.load(open(sys.argv[1])); out = []
for job in jobs:
    d = np.load(job["path"])
    ref = pd.DataFrame({"score": d["ref_s"], "pred": (d["ref_s"] >= 0.5).astype(int),
                        "y": d["ref_y"]})
    ana = pd.DataFrame({"score": d["score"], "pred": (d["score"] >= 0.5).astype(int)})
    times, cpus = [], []
    for _ in range(job["rounds"]):
        t, c = time.perf_counter(), time.process_time()
        est = nml.CBPE(y_pred_proba="score", y_pred="pred", y_true="y",
                       metrics=["roc_auc", "accuracy"], chunk_size=job["window"],
                       problem_type="classification_binary")
        est.fit(ref)
        res = est.estimate(ana).filter(period="analysis").to_df()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    out.append({"times": times, "cpus": cpus, "roc_auc": res[("roc_auc", "value")].tolist(),
                "accuracy": res[("accuracy", "value")].tolist(),
                "calibrated": bool(est.needs_calibration)})
print(json.dumps({"version": nml.__version__, "results": out}))
"""


@dataclass(frozen=True)
class Scored:
    """One split: reference scores and labels, analysis scores, labels and shift columns."""

    ref_s: np.ndarray
    ref_y: np.ndarray
    score: np.ndarray
    label: np.ndarray
    shifts: dict[str, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    name: str
    window: int
    orders: tuple[str, ...]  # "file" or a key of Scored.shifts


def _lgbm() -> Any:
    import lightgbm

    return lightgbm.LGBMClassifier(n_estimators=150, learning_rate=0.1, verbose=-1)


def adult(seed: int) -> Scored:
    import pandas as pd
    import pyarrow as pa

    from keel.config import load_config
    from keel.data import read_source

    root = REPO / "examples" / "adult"
    config = load_config(root, env="")
    assert config.data.test is not None
    train_t, test_t = read_source(config.data.train, root), read_source(config.data.test, root)
    train, test = train_t.to_pandas(), test_t.to_pandas()
    for field in train_t.schema:
        if pa.types.is_string(field.type) and field.name != "income":
            cats = sorted(set(train[field.name].dropna()))
            for frame in (train, test):
                frame[field.name] = pd.Categorical(frame[field.name], categories=cats)
    y = (train.pop("income") == ">50K").to_numpy(int)
    y_test = (test.pop("income") == ">50K").to_numpy(int)
    is_ref = np.random.default_rng(seed).random(len(train)) < 0.2
    model = _lgbm().fit(train[~is_ref], y[~is_ref])
    shifts = {k: test[k].to_numpy(float) for k in ("age", "hours-per-week", "education-num")}
    return Scored(model.predict_proba(train[is_ref])[:, 1], y[is_ref],
                  model.predict_proba(test)[:, 1], y_test, shifts)  # fmt: skip


def california(seed: int) -> Scored:
    import pandas as pd

    frame = pd.read_csv(CALIFORNIA)
    frame["ocean_proximity"] = frame["ocean_proximity"].astype("category")
    y = (frame.pop("median_house_value") > 200_000).to_numpy(int)
    u = np.random.default_rng(seed).random(len(frame))
    train, ref, ana = u < 0.5, (u >= 0.5) & (u < 0.7), u >= 0.7
    model = _lgbm().fit(frame[train], y[train])
    rows = frame[ana]
    shifts = {
        k: rows[k].to_numpy(float) for k in ("median_income", "housing_median_age", "latitude")
    }
    return Scored(model.predict_proba(frame[ref])[:, 1], y[ref],
                  model.predict_proba(rows)[:, 1], y[ana], shifts)  # fmt: skip


DATASETS = {
    "adult": (Dataset("adult", 2000, ("file", "age", "hours-per-week", "education-num")), adult),
    "california": (
        Dataset("california", 1000, ("file", "median_income", "housing_median_age", "latitude")),
        california,
    ),
}


def ordered(data: Scored, order: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels in ``order``, cut to whole windows (both tools see the same ones)."""
    index = np.arange(data.score.size)
    if order != "file":
        index = np.argsort(data.shifts[order], kind="stable")
    usable = index.size - index.size % window
    return data.score[index[:usable]], data.label[index[:usable]]


def realised(score: np.ndarray, label: np.ndarray, window: int) -> np.ndarray:
    """(windows, 2): realised ROC AUC and accuracy."""
    from sklearn.metrics import roc_auc_score

    return np.array([
        (roc_auc_score(label[s:s + window], score[s:s + window]),
         np.mean((score[s:s + window] >= 0.5) == label[s:s + window]))
        for s in range(0, score.size, window)
    ])  # fmt: skip


def keel_cbpe(data: Scored, score: np.ndarray, window: int, rounds: int) -> dict[str, Any]:
    """Keel's estimates per window ("est": ROC AUC, accuracy, their stated errors), the same ROC
    AUC from the rows instead of score bins ("rows"), the noise floor ("floor"), and the median
    wall and CPU seconds of fit + estimate over ``rounds``."""
    from keel.monitor.cbpe import estimate_performance, fit_calibration, score_bins

    walls, cpus, out = [], [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        calibration = fit_calibration(data.ref_s, data.ref_y)
        out = []
        for s in range(0, score.size, window):
            part = score[s : s + window]
            p = part if calibration is None else calibration(part)
            e = estimate_performance(score_bins(part, p))
            out.append((e.roc_auc, e.accuracy, e.roc_auc_error, e.accuracy_error))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    probability = score if calibration is None else calibration(score)
    rows, floor = [], []
    for s in range(0, score.size, window):
        rows.append(row_auc(score[s : s + window], probability[s : s + window]))
        floor.append(noise_floor(score[s : s + window], probability[s : s + window], seed=s))
    return {"est": np.array(out, dtype=np.float64), "rows": np.array(rows),
            "floor": np.mean(floor, axis=0), "wall": statistics.median(walls),
            "cpu": statistics.median(cpus)}  # fmt: skip


def row_auc(score: np.ndarray, probability: np.ndarray) -> float:
    """CBPE's ROC AUC from the window's rows (sorted by score), without score bins."""
    p = probability[np.argsort(score, kind="stable")[::-1]]
    tp, fp = np.append(0, np.cumsum(p)), np.append(0, np.cumsum(1 - p))
    return float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2) / (tp[-1] * fp[-1]))


def noise_floor(score: np.ndarray, probability: np.ndarray, seed: int, draws: int = 400) -> Any:
    """E|M - E[M]| of the realised ROC AUC and accuracy when the labels are Bernoulli(p) with the
    calibrated p (the rows fixed): the error of an estimate that knew P(y | x) exactly."""
    from scipy.stats import rankdata

    labels = np.random.default_rng(seed).random((draws, score.size)) < probability
    k = labels.sum(axis=1).astype(np.float64)
    ok = (k > 0) & (k < score.size)
    auc = (labels @ rankdata(score) - k * (k + 1) / 2)[ok] / (k * (score.size - k))[ok]
    accuracy = (labels == (score >= 0.5)).mean(axis=1)
    return np.abs(auc - auc.mean()).mean(), np.abs(accuracy - accuracy.mean()).mean()


def nannyml_available() -> bool:
    if not Path(NANNYML).exists():
        return False
    probe = subprocess.run([NANNYML, "-c", "import nannyml"], capture_output=True, check=False)
    return probe.returncode == 0


def nannyml_cbpe(jobs: list[tuple[Scored, np.ndarray, int, int]]) -> tuple[list[Any], str]:
    """NannyML's estimates for each (split, ordered scores, window, rounds), in one process."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = []
        for i, (data, score, window, rounds) in enumerate(jobs):
            path = f"{tmp}/{i}.npz"
            np.savez(path, ref_s=data.ref_s, ref_y=data.ref_y, score=score)
            spec.append({"path": path, "window": window, "rounds": rounds})
        Path(f"{tmp}/jobs.json").write_text(json.dumps(spec))
        env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
        result = subprocess.run([NANNYML, "-c", NANNY_SCRIPT, f"{tmp}/jobs.json"],
                                capture_output=True, text=True, check=True, env=env)  # fmt: skip
    body = json.loads(result.stdout.strip().splitlines()[-1])
    return body["results"], body["version"]


def mae(estimates: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    gap = np.abs(np.asarray(estimates)[:, :2] - truth)
    return float(gap[:, 0].mean()), float(gap[:, 1].mean())


def main() -> None:
    have_nannyml = nannyml_available()
    if not have_nannyml:
        print(f"NannyML not installed at {NANNYML}: Keel measured alone")
    version = ""
    for dataset, split in DATASETS.values():
        cells: dict[str, list[dict[str, Any]]] = {order: [] for order in dataset.orders}
        for seed in range(SEEDS + 1):  # seed 0: the headline run, timed; the rest: replicates
            data = split(seed)
            rounds = ROUNDS if seed == 0 else 1
            runs = []
            for order in dataset.orders:
                score, label = ordered(data, order, dataset.window)
                ours = keel_cbpe(data, score, dataset.window, rounds)
                runs.append((order, score, realised(score, label, dataset.window), ours))
            theirs: list[Any] = [None] * len(runs)
            if have_nannyml:
                jobs = [(data, score, dataset.window, rounds) for _, score, *_ in runs]
                theirs, version = nannyml_cbpe(jobs)
            for (order, _, truth, ours), nanny in zip(runs, theirs, strict=True):
                cell: dict[str, Any] = {
                    "keel": mae(ours["est"], truth),
                    "rows": float(np.abs(ours["rows"] - truth[:, 0]).mean()),
                    "floor": ours["floor"], "wall": ours["wall"], "cpu": ours["cpu"],
                }  # fmt: skip
                if nanny is not None:
                    pairs = np.column_stack([nanny["roc_auc"], nanny["accuracy"]])
                    cell |= {"nanny": mae(pairs, truth), "n_wall": statistics.median(
                        nanny["times"]), "n_cpu": statistics.median(nanny["cpus"]),
                        "n_calibrated": nanny["calibrated"]}  # fmt: skip
                cells[order].append(cell)
        report(dataset, cells, len(truth), version)
    sys.stdout.flush()


def report(
    dataset: Dataset, cells: dict[str, list[dict[str, Any]]], windows: int, version: str
) -> None:
    print(f"\n{dataset.name}: {windows} windows of {dataset.window} rows. MAE ROC AUC / accuracy; "
          f"'rows': Keel's ROC AUC from rows, not score bins; 'floor': noise floor. Seed 0, fit + "
          f"estimate wall / CPU ms, median of {ROUNDS}:")  # fmt: skip
    for order, runs_of in cells.items():
        c = runs_of[0]
        line = (f"  {order:18s} Keel {c['keel'][0]:.4f} / {c['keel'][1]:.4f} rows {c['rows']:.4f} "
                f"floor {c['floor'][0]:.4f} / {c['floor'][1]:.4f}; {c['wall'] * 1e3:.1f} / "
                f"{c['cpu'] * 1e3:.1f} ms")  # fmt: skip
        if "nanny" in c:
            state = "calibrated" if c["n_calibrated"] else "uncalibrated"
            wall, cpu = c["n_wall"] / c["wall"], c["n_cpu"] / c["cpu"]
            line += (f" | NannyML {version} {c['nanny'][0]:.4f} / {c['nanny'][1]:.4f}; "
                     f"{c['n_wall'] * 1e3:.0f} / {c['n_cpu'] * 1e3:.0f} ms ({state}) | NannyML ÷ "
                     f"Keel {wall:.0f}x wall, {cpu:.0f}x CPU")  # fmt: skip
        print(line)
    if SEEDS == 0:
        return
    print(f"  {SEEDS} other splits (seeds 1..{SEEDS}), means; Δ = Keel − NannyML ± standard error "
          f"(< 0: Keel better), and in how many splits Keel was better:")  # fmt: skip
    for order, runs_of in cells.items():
        rest = runs_of[1:]
        keel = np.array([c["keel"] for c in rest])
        floor = np.mean([c["floor"] for c in rest], axis=0)
        rows = np.mean([c["rows"] for c in rest])
        line = (f"  {order:18s} Keel {keel[:, 0].mean():.4f} / {keel[:, 1].mean():.4f} rows "
                f"{rows:.4f} floor {floor[0]:.4f} / {floor[1]:.4f}")  # fmt: skip
        if "nanny" in rest[0]:
            nanny = np.array([c["nanny"] for c in rest])
            diff = keel - nanny
            se = diff.std(axis=0, ddof=1) / np.sqrt(len(diff))
            wins = (diff < 0).sum(axis=0)
            line += (f" | NannyML {nanny[:, 0].mean():.4f} / {nanny[:, 1].mean():.4f} | Δ "
                     f"{diff[:, 0].mean():+.4f} ± {se[0]:.4f} ({wins[0]}/{len(diff)}) / "
                     f"{diff[:, 1].mean():+.4f} ± {se[1]:.4f} ({wins[1]}/{len(diff)})")  # fmt: skip
        print(line)


if __name__ == "__main__":
    main()
