"""Evidently 0.7's DataDriftPreset on the task `keel monitor` does: the served rows of the
benchmark's prediction log (exported to Parquet) against the Adult training data.

Run with Evidently's own venv (not a Keel dependency):

    /work/bench-venvs/evidently/bin/python benchmarks/monitor/evidently_drift.py \
        TRAIN.csv CURRENT.parquet

Prints ``RESULT {json}``: import, load and compute seconds, and the drifted columns' count.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import pandas as pd  # noqa: E402
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country",
]  # fmt: skip
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = [c for c in COLUMNS if c not in NUMERIC]

t_import = time.perf_counter() - t0
train, current = sys.argv[1], sys.argv[2]
t1 = time.perf_counter()
reference = pd.read_csv(
    train, header=None, names=[*COLUMNS, "income"], na_values=["?"], skipinitialspace=True
)[COLUMNS]
cur = pd.read_parquet(current)[COLUMNS]
t_load = time.perf_counter() - t1

t2 = time.perf_counter()
definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
snapshot = Report([DataDriftPreset()]).run(
    current_data=Dataset.from_pandas(cur, data_definition=definition),
    reference_data=Dataset.from_pandas(reference, data_definition=definition),
)
body = snapshot.dict()
t_compute = time.perf_counter() - t2
drifted = None
for metric in body.get("metrics", []):
    name = str(metric.get("metric_name", metric.get("metric_id", "")))
    if name.startswith("DriftedColumnsCount"):
        value = metric.get("value")
        drifted = value.get("count") if isinstance(value, dict) else value
print(
    "RESULT "
    + json.dumps(
        {
            "rows": len(cur),
            "reference_rows": len(reference),
            "t_import_s": t_import,
            "t_load_s": t_load,
            "t_compute_s": t_compute,
            "drifted_columns": drifted,
        }
    )
)
