"""Data-parallel LightGBM on Ray Train vs a bare ``lightgbm.train``: Adult replicated to 1M rows.

Sides, each in its own process (``python ray_train.py --side NAME DIR``): ``bare``
(``lgb.train``, ``num_threads=2``), ``ray-1`` (Keel's ``fit_data_parallel``, 1 worker x 2 CPUs)
and ``ray-2`` (2 workers x 1 CPU, rows split in two). All train the same 100 rounds with the
same native parameters (no early stopping, learning curve on the validation rows). The Adult rows
are split once: a fixed 10% is held out as the test set (its ROC AUC is reported), 10% validates,
the rest is repeated up to the row count. Ray's start (``ray.init`` of a local 2-CPU instance) is
timed apart from the fit; each Ray side also reports the seconds its workers spent in LightGBM,
so the rest is Ray Train's own cost (controller, worker processes, network set-up).
Knobs: ``RAY_TRAIN_ROWS`` (1000000; quick 200000), ``RAY_TRAIN_ROUNDS`` (3; quick 1: medians),
``RAY_TRAIN_SIDES`` (bare,ray-1,ray-2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / ".work" / "training" / "ray-train"
KEEL_PYTHON = HERE.parents[1] / ".venv" / "bin" / "python"
PART = "ray_train"
TITLE = "Data-parallel LightGBM on Ray Train vs bare lightgbm.train"
TIMEOUT_S = 900
SIDES = ("bare", "ray-1", "ray-2")


def run(quick: bool = False) -> dict[str, Any]:
    """Raw results: seconds, Ray start, worker fit seconds and test AUC per side."""
    rows = int(os.environ.get("RAY_TRAIN_ROWS", 200_000 if quick else 1_000_000))
    chosen = os.environ.get("RAY_TRAIN_SIDES", ",".join(SIDES)).split(",")
    directory = WORK / f"rows-{rows}"
    _write(directory, rows)
    rounds = int(os.environ.get("RAY_TRAIN_ROUNDS", 1 if quick else 3))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    for _ in range(rounds):  # sides interleaved, so a burst of load hits every side alike
        for name in chosen:
            command = [str(KEEL_PYTHON), __file__, "--side", name, str(directory)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  env=env, check=False)  # fmt: skip
            if done.returncode != 0:
                runs[name].append({"side": name, "error": done.stderr[-2000:]})
            else:
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"rows": rows, "rounds": rounds, "cpus": os.cpu_count(),
            "sides": [_median(name, found) for name, found in runs.items()]}  # fmt: skip


def _median(name: str, found: list[dict[str, Any]]) -> dict[str, Any]:
    """A side's medians over rounds (the round with the median fit time), or its error."""
    ok = sorted((r for r in found if "error" not in r), key=lambda r: r["seconds"])
    if not ok:
        return found[-1]
    middle = dict(ok[len(ok) // 2])
    middle["all_seconds"] = [round(r["seconds"], 2) for r in ok]
    return middle


def render(raw: dict[str, Any]) -> str:
    """The RESULTS.md section: seconds, ratio to bare, Ray's start and test AUC per side."""
    lines = [f"### {TITLE}", ""]
    by = {s["side"]: s for s in raw.get("sides", [])}
    bare = by.get("bare")
    lines += [
        f"LightGBM, 100 rounds, Adult replicated to {raw['rows']:,} rows, the same native "
        f"parameters on every side, {raw['cpus']} CPUs, median of {raw.get('rounds', 1)} runs "
        "(sides interleaved); test ROC AUC on held-out Adult rows. "
        "Ray start is `ray.init` of a local instance, timed apart from the fit; 'in LightGBM' is "
        "what the workers spent reading their shard and training.",
        "",
        "| side | fit seconds | vs bare | in LightGBM | Ray start | test AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {"bare": "bare lgb.train, 2 threads", "ray-1": "Ray Train, 1 worker x 2 CPUs",
              "ray-2": "Ray Train, 2 workers x 1 CPU"}  # fmt: skip
    for name, s in by.items():
        label = labels.get(name, name)
        if "error" in s:
            last = s["error"].strip().splitlines()[-1][:100] if s["error"].strip() else "?"
            lines.append(f"| {label} | failed: `{last}` | | | | |")
            continue
        ratio = f"{s['seconds'] / bare['seconds']:.2f}x" if bare and "seconds" in bare else "-"
        inner = f"{s['worker_seconds']:.1f}" if "worker_seconds" in s else "-"
        start = f"{s['ray_init_s']:.1f}" if "ray_init_s" in s else "-"
        lines.append(f"| {label} | {s['seconds']:.1f} | {ratio} | {inner} | {start} "
                     f"| {s['test_auc']:.4f} |")  # fmt: skip
    costs = [
        f"{labels[n].split(', ')[1]} {by[n]['seconds'] - by[n]['worker_seconds']:.1f} s"
        for n in ("ray-1", "ray-2")
        if n in by and "worker_seconds" in by[n]
    ]
    if costs:
        lines += ["", "Ray Train's own cost per fit (fit seconds - in LightGBM: controller and "
                  f"worker processes, placement, network set-up, result): {', '.join(costs)}; "
                  "plus starting Ray once per process."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _write(directory: Path, rows: int) -> None:
    """Train / validation / test arrays (cached per row count)."""
    if (directory / "y_test.npy").exists():
        return
    sys.path.insert(0, str(HERE))
    import fit_data

    x, y = fit_data.adult()
    order = np.random.default_rng(fit_data.SEED).permutation(len(y))
    tenth = len(y) // 10
    test, valid, train = order[:tenth], order[tenth : 2 * tenth], order[2 * tenth :]
    take = np.resize(train, rows)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"x": x[take], "y": y[take], "x_valid": x[valid], "y_valid": y[valid],
              "x_test": x[test], "y_test": y[test]}  # fmt: skip
    for name, values in arrays.items():
        np.save(directory / f"{name}.npy", values)


def _side(name: str, directory: Path) -> dict[str, Any]:
    """One side, in this process: its JSON result."""
    from sklearn.metrics import roc_auc_score

    sys.path.insert(0, str(HERE))
    from fit_data import PARAMS, SEED

    data = {p.stem: np.load(p) for p in directory.glob("*.npy")}
    common = {"x_valid": data["x_valid"], "y_valid": data["y_valid"]}
    result: dict[str, Any] = {"side": name, "rows": len(data["y"])}
    if name == "bare":
        import lightgbm as lgb

        from keel.train.lightgbm import check_params, native_params

        native = native_params("binary", check_params(PARAMS), 2, SEED) | {"num_threads": 2}
        started = time.perf_counter()
        train = lgb.Dataset(data["x"], label=data["y"])
        valid = lgb.Dataset(common["x_valid"], label=common["y_valid"], reference=train)
        booster = lgb.train(native, train, num_boost_round=PARAMS["n_estimators"],
                            valid_sets=[valid], valid_names=["validation"],
                            callbacks=[lgb.record_evaluation({})])  # fmt: skip
        result["seconds"] = time.perf_counter() - started
        predict = booster.predict
    else:
        import ray

        from keel.config import ResourcesConfig
        from keel.train.ray_train import fit_data_parallel

        workers = int(name.split("-")[1])
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        result["ray_init_s"] = time.perf_counter() - started
        started = time.perf_counter()
        each = ResourcesConfig(cpus=2 // workers)
        fitted = fit_data_parallel(data["x"], data["y"], flavor="lightgbm", task="binary",
                                   params=PARAMS, seed=SEED, workers=workers, resources=each,
                                   **common)  # fmt: skip
        result["seconds"] = time.perf_counter() - started
        result["worker_seconds"] = fitted.facts["worker_fit_seconds"]
        predict = fitted.model.predict
        ray.shutdown()
    result["test_auc"] = float(roc_auc_score(data["y_test"], predict(data["x_test"])))
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        print(json.dumps(_side(sys.argv[2], Path(sys.argv[3]))))
    else:
        outcome = run(quick="--quick" in sys.argv)
        print(json.dumps(outcome, indent=1))
        print(render(outcome))
