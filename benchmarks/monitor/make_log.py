"""Write a synthetic prediction log for a trained project: rows of a data file scored by the
registered model, in the serving log's format, spread over days (for the monitor benchmarks).

    python benchmarks/monitor/make_log.py PROJECT MODEL DATA.csv --rows 1000000 --days 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("project", type=Path)
    parser.add_argument("model")
    parser.add_argument("data", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--per-request", type=int, default=10)
    parser.add_argument("--sort", default=None, help="Serve the rows sorted by this column.")
    args = parser.parse_args()

    import keel
    from keel.config import load_config
    from keel.data import read_source

    config = load_config(args.project, env="")
    source = config.data.test if args.data.name == "test" else config.data.train
    table: pa.Table = read_source(source, args.project)
    if config.data.target in table.column_names:
        table = table.drop_columns([config.data.target])
    if args.sort:
        table = table.sort_by(args.sort)
    model = keel.load_model(args.model, project=args.project)
    proba = np.asarray(model.predict_proba(table.to_pandas()), dtype=float)
    labels = [model.package.classes[int(p >= 0.5)] for p in proba]
    rows = table.to_pylist()
    version = str(model.version)
    start = time.time() - args.days * 86_400
    per_day = max(args.rows // args.days, 1)
    root = args.project / ".keel" / "predictions" / args.model
    written = 0
    day = 0
    while written < args.rows:
        stamp = time.strftime("%Y-%m-%d", time.gmtime(start + day * 86_400))
        folder = root / stamp
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for offset in range(0, per_day, args.per_request):
            i = (written + offset) % len(rows)
            j = min(i + args.per_request, len(rows))
            at = start + day * 86_400 + offset * 86_400 / per_day
            lines.append(
                orjson.dumps(
                    {
                        "request_id": f"r{written + offset}",
                        "time": at,
                        "model": args.model,
                        "model_version": version,
                        "role": "primary",
                        "feature_pipeline": "",
                        "inputs": rows[i:j],
                        "predictions": labels[i:j],
                        "probabilities": proba[i:j].tolist(),
                    }
                )
            )
        (folder / "1-bench.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        written += per_day
        day += 1
    print(f"wrote about {written} rows over {day} days to {root}")


if __name__ == "__main__":
    main()
