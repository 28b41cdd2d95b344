"""MLflow's column of the tracked-fit benchmark: ``mlflow.lightgbm.autolog()`` around lgb.train.

usage: python fit_mlflow.py DATA_DIR ROUNDS NATIVE_PARAMS_JSON   (MLflow's venv; one JSON doc)

Same arrays, same native parameters and validation set as Keel's side; autolog with its
defaults (params, metrics per iteration, the model, the datasets, pip requirements) into a
SQLite tracking store, each fit in its own run. Bare fits alternate in the same process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")
logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)

import lightgbm as lgb  # noqa: E402
import mlflow  # noqa: E402


def train(data: dict[str, np.ndarray], params: dict[str, Any], rounds: int) -> None:
    train_set = lgb.Dataset(data["x"], label=data["y"], free_raw_data=True)
    valid_set = lgb.Dataset(data["x_valid"], label=data["y_valid"], reference=train_set)
    lgb.train(params, train_set, num_boost_round=rounds, valid_sets=[valid_set],
              valid_names=["validation"])  # fmt: skip


def main() -> None:
    directory, rounds = Path(sys.argv[1]), int(sys.argv[2])
    params = json.loads(sys.argv[3])
    trees = params.pop("num_boost_round")
    names = ("x", "y", "x_valid", "y_valid")
    data = {name: np.load(directory / f"{name}.npy") for name in names}
    times: dict[str, list[float]] = {"bare": [], "autolog": []}
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        # MLflow puts run artifacts under ./mlruns of the working directory: keep them in tmp
        os.chdir(tmp)
        mlflow.set_experiment("fit")
        train(data, params, trees)  # warm-up
        for i in range(rounds):
            for side in ("bare", "autolog") if i % 2 == 0 else ("autolog", "bare"):
                started = time.perf_counter()
                if side == "bare":
                    mlflow.lightgbm.autolog(disable=True)
                    train(data, params, trees)
                else:
                    mlflow.lightgbm.autolog(silent=True)
                    with mlflow.start_run():
                        train(data, params, trees)
                times[side].append(time.perf_counter() - started)
    print(json.dumps({"rows": len(data["y"]), "rounds": rounds, "mlflow": mlflow.__version__,
                      **times}))  # fmt: skip


if __name__ == "__main__":
    main()
