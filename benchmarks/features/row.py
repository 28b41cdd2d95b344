"""Row path and batch throughput of the Adult FeaturePipeline, against scikit-learn.

usage: .venv/bin/python benchmarks/features/row.py        (prints the raw JSON, then the section)
       from row import run, render                       (benchmarks/features/bench.py may call)

- Row path: ``FeaturePipeline.transform_row(dict)`` latency on adult.test rows (one call per
  request, as the server runs it; the Adult pipeline of ``keel run``: 14 inputs -> 105
  features). Target: p50 <= 50 us. For reference, the same single row through an equivalent
  fitted scikit-learn ``ColumnTransformer``, which needs a one-row DataFrame per request.
- Batch: ``transform(table)`` rows per second vs the ``ColumnTransformer`` (SimpleImputer +
  StandardScaler for numbers, SimpleImputer + dense OneHotEncoder for strings) on the same rows,
  adult.data tiled to ``ROW_BATCH_ROWS`` (Keel reads Arrow, scikit-learn a pandas DataFrame made
  once beforehand; median of 3 calls per round). The numeric columns of both outputs are
  checked to agree before timing.

Knobs (env): ``ROW_CALLS`` (20000 timed row calls), ``ROW_BATCH_ROWS`` (500000),
``ROW_ROUNDS`` (5; figures are medians over rounds), ``QUICK=1`` (2000 calls, 100k rows, 2
rounds). Bounded: each loop has a call count and a 60 s time limit.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
ADULT = ROOT / "examples" / "adult"
TIME_LIMIT_S = 60.0


def _knob(name: str, default: int, quick: int) -> int:
    if os.environ.get("QUICK") == "1":
        return quick
    return int(os.environ.get(name, default))


def adult() -> tuple[Any, pa.Table, list[dict[str, Any]], dict[str, str]]:
    """The fitted default Adult pipeline, the training table, the test rows, the inputs."""
    from keel.config import load_config
    from keel.data import read_source
    from keel.features import FeaturePipeline
    from keel.validate.schema import infer_schema
    from keel.validate.statistics import compute_statistics

    config = load_config(ADULT, env="")
    assert config.data.test is not None
    train = read_source(config.data.train, ADULT)
    test = read_source(config.data.test, ADULT).drop_columns([config.data.target])
    data = config.data
    schema = infer_schema(
        compute_statistics(train),
        target=data.target,
        sensitive=data.sensitive,
        drop=data.drop,
        max_null_fraction=data.max_null_fraction,
    )
    inputs = {name: schema.columns[name].type for name in schema.features()}
    features = config.features
    pipe = FeaturePipeline(
        inputs=inputs,
        numeric_impute=features.numeric_impute,
        categorical_impute=features.categorical_impute,
        scale=features.scale,
        max_categories=features.max_categories,
    ).fit(train)
    return pipe, train.select(list(inputs)), test.to_pylist(), inputs


def sklearn_equivalent(inputs: dict[str, str], frame: Any) -> Any:
    """The scikit-learn ColumnTransformer doing what the default Keel pipeline does."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [n for n, t in inputs.items() if t in ("int", "float")]
    strings = [n for n in inputs if n not in numeric]
    transformer = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                strings,
            ),
        ]
    )
    return transformer.fit(frame), numeric


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    values = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": float(np.percentile(values, 50)),
        "p99_us": float(np.percentile(values, 99)),
        "mean_us": float(values.mean()),
        "calls": len(samples_ns),
    }


def time_rows(call: Any, rows: list[Any], calls: int) -> dict[str, float]:
    """Per-call latency of ``call(row)`` over ``calls`` rows (cycled), after a warm-up."""
    for row in rows[: min(500, calls)]:
        call(row)
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.monotonic() + TIME_LIMIT_S
    gc.collect()
    for i in range(calls):
        row = rows[i % len(rows)]
        started = clock()
        call(row)
        samples.append(clock() - started)
        if not i % 1000 and time.monotonic() > deadline:
            break
    return _percentiles(samples)


def time_batch(call: Any, data: Any, rows: int, repeat: int = 3) -> float:
    """Rows per second of ``call(data)``: the median of ``repeat`` calls."""
    speeds = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        call(data)
        speeds.append(rows / (time.perf_counter() - started))
    return statistics.median(speeds)


def run() -> dict[str, Any]:
    """Measure and return the raw figures (JSON-able)."""
    import pandas as pd

    calls = _knob("ROW_CALLS", 20_000, 2_000)
    batch_rows = _knob("ROW_BATCH_ROWS", 500_000, 100_000)
    rounds = _knob("ROW_ROUNDS", 5, 2)
    pipe, train, test_rows, inputs = adult()
    frame_train = train.to_pandas()
    transformer, numeric = sklearn_equivalent(inputs, frame_train)
    tiles = -(-batch_rows // train.num_rows)
    big = pa.concat_tables([train] * tiles).slice(0, batch_rows).combine_chunks()
    big_frame = big.to_pandas()

    ours = pipe.transform(big.slice(0, 20_000))
    theirs = transformer.transform(big_frame.iloc[:20_000])
    numeric_agree = bool(
        np.allclose(
            ours[:, [pipe.feature_names_.index(n) for n in numeric]],
            theirs[:, : len(numeric)],
            rtol=1e-9,
            atol=1e-9,
        )
    )
    columns = list(inputs)

    def sklearn_row(row: dict[str, Any]) -> Any:
        return transformer.transform(pd.DataFrame([row], columns=columns))

    result: dict[str, Any] = {
        "rows_in_test": len(test_rows),
        "n_features": pipe.n_features_,
        "sklearn_features": int(theirs.shape[1]),
        "numeric_columns_agree": numeric_agree,
        "batch_rows": batch_rows,
        "rounds": [],
    }
    for _ in range(rounds):
        result["rounds"].append(
            {
                "keel_row": time_rows(pipe.transform_row, test_rows, calls),
                "sklearn_row": time_rows(sklearn_row, test_rows, max(calls // 20, 200)),
                "keel_batch_rows_per_s": time_batch(pipe.transform, big, batch_rows),
                "sklearn_batch_rows_per_s": time_batch(
                    transformer.transform, big_frame, batch_rows
                ),
            }
        )
    result["environment"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    return result


def _median(rounds: list[dict[str, Any]], *path: str) -> float:
    values = []
    for r in rounds:
        value: Any = r
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def render(raw: dict[str, Any]) -> str:
    """The RESULTS.md section for the row benchmark."""
    rounds = raw["rounds"]
    keel_p50 = _median(rounds, "keel_row", "p50_us")
    keel_p99 = _median(rounds, "keel_row", "p99_us")
    sk_p50 = _median(rounds, "sklearn_row", "p50_us")
    sk_p99 = _median(rounds, "sklearn_row", "p99_us")
    keel_rps = _median(rounds, "keel_batch_rows_per_s")
    sk_rps = _median(rounds, "sklearn_batch_rows_per_s")
    verdict = "met" if keel_p50 <= 50 else "NOT met"
    lines = [
        "### Feature pipeline: row path and batch throughput (Adult)",
        "",
        f"The Adult pipeline of `keel run` ({raw['n_features']} features from 14 inputs; the "
        f"scikit-learn equivalent makes {raw['sklearn_features']}); medians of "
        f"{len(rounds)} rounds. Numeric columns of both outputs agree: "
        f"{'yes' if raw['numeric_columns_agree'] else 'NO'}.",
        "",
        "| Path | Keel | scikit-learn ColumnTransformer | Ratio |",
        "|---|---:|---:|---:|",
        f"| one row, p50 (us) | {keel_p50:.1f} | {sk_p50:.0f} (one-row DataFrame) | "
        f"{sk_p50 / keel_p50:.0f}x faster |",
        f"| one row, p99 (us) | {keel_p99:.1f} | {sk_p99:.0f} | {sk_p99 / keel_p99:.0f}x faster |",
        f"| batch, {raw['batch_rows']:,} rows (rows/s) | {keel_rps:,.0f} | {sk_rps:,.0f} | "
        f"{keel_rps / sk_rps:.1f}x |",
        "",
        f"Target p50 <= 50 us for `transform_row`: {verdict}. Row calls are timed one by "
        "one (`perf_counter_ns`) over adult.test rows; batch is the median of 3 `transform` "
        "calls on the tiled adult.data (Keel from Arrow, scikit-learn from a pandas DataFrame "
        "built beforehand).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raw = run()
    print(json.dumps(raw))
    print(render(raw), file=sys.stderr)
