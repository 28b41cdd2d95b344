"""In-process floor of a 1-row prediction with Keel's model (run pinned to the server's CPU).

usage: python floor.py PROJECT_DIR REQUEST_JSON [CALLS]

Times, each as the median (and p99) of CALLS calls after a warm-up:

- ``booster_numpy``: ``Booster.predict`` on the already-transformed float64 row: the physical
  limit of a 1-row prediction with this model.
- ``transform_row_predict``: ``pipeline.transform_row(dict)`` + ``Booster.predict``: Keel's
  in-process path from a request dict.
- ``handler``: what Keel's server does per request besides HTTP: ``orjson.loads`` of the body,
  ``predict_rows``, a request id, ``orjson.dumps`` of the answer (no prediction log).
- ``booster_pandas``: ``Booster.predict`` on a 1-row pandas DataFrame of the transformed
  features (reference: the DataFrame path MLflow's pyfunc takes).

Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd

import keel


def timed(fn: Callable[[], object], calls: int) -> dict[str, float]:
    for _ in range(max(50, calls // 10)):
        fn()
    samples = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    return {
        "p50_us": float(np.median(samples) * 1e6),
        "p99_us": float(np.percentile(samples, 99) * 1e6),
        "min_us": float(samples.min() * 1e6),
    }


def main(project: str, request_path: str, calls: int) -> dict[str, Any]:
    package = keel.load_model("adult@production", project=project).package
    booster, pipeline = package.booster, package.pipeline
    with open(request_path, "rb") as handle:
        body = handle.read()
    row = orjson.loads(body)["instances"][0]
    x = pipeline.transform_row(row)
    frame = pd.DataFrame(x, columns=pipeline.feature_names())

    def handler() -> bytes:
        instances = orjson.loads(body)["instances"]
        labels, probabilities = package.predict_rows(instances)
        return orjson.dumps(
            {
                "predictions": labels,
                "probabilities": probabilities,
                "model_version": "1",
                "request_id": uuid.uuid4().hex,
            }
        )

    reference = float(booster.predict(x)[0])
    for other in (
        float(booster.predict(pipeline.transform_row(row))[0]),
        float(booster.predict(frame)[0]),
        orjson.loads(handler())["probabilities"][0],
    ):
        assert abs(other - reference) < 1e-12, (other, reference)
    return {
        "calls": calls,
        "n_features": int(x.shape[1]),
        "n_trees": int(booster.num_trees()),
        "probability": reference,
        "booster_numpy": timed(lambda: booster.predict(x), calls),
        "transform_row_predict": timed(lambda: booster.predict(pipeline.transform_row(row)), calls),
        "handler": timed(handler, calls),
        "booster_pandas": timed(lambda: booster.predict(frame), calls),
    }


if __name__ == "__main__":
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    print(json.dumps(main(sys.argv[1], sys.argv[2], n)))
