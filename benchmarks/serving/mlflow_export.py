"""Log Keel's LightGBM model to MLflow (runs inside the MLflow venv, not Keel's).

usage: python mlflow_export.py WORK_DIR

Reads from WORK_DIR ``model.txt`` (``Booster.model_to_string()`` of Keel's model) and
``features.json`` (the transformed column names and one transformed row), loads the booster with
``lightgbm.Booster(model_str=...)``, logs it with ``mlflow.lightgbm.log_model`` to a local file
store (``WORK_DIR/mlruns``) and prints one JSON line: the tracking URI, the model URI and the
probability this booster gives the row (must equal Keel's).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

# MLflow 3.17 refuses the file store (maintenance mode) unless told it is wanted.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

import lightgbm
import mlflow
import mlflow.lightgbm
import pandas as pd
from mlflow.models import infer_signature


def main(work: Path) -> dict[str, object]:
    booster = lightgbm.Booster(model_str=(work / "model.txt").read_text())
    spec = json.loads((work / "features.json").read_text())
    row = pd.DataFrame([spec["row"]], columns=spec["columns"], dtype="float64")
    probability = float(booster.predict(row)[0])
    tracking_uri = (work / "mlruns").as_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("keel-serving-bench")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(run_name="adult-from-keel"):
            info = mlflow.lightgbm.log_model(
                booster,
                name="adult",
                signature=infer_signature(row, booster.predict(row)),
            )
    return {
        "tracking_uri": tracking_uri,
        "model_uri": info.model_uri,
        "probability": probability,
        "mlflow": mlflow.__version__,
        "lightgbm": lightgbm.__version__,
        "pandas": pd.__version__,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
