"""What the coercion rules add to one served row: ``transform_row`` before and after, same run.

usage: python coercion.py OLD_SRC [CALLS] [ROUNDS]

Fits the Adult feature pipeline in two child processes, one importing Keel from OLD_SRC (a
checkout of the commit before the coercion path, e.g. made with ``git worktree add``, or a
copy of ``src/`` before any later change to the row path, such as the row plan of
:mod:`keel.features.rowplan`) and one from this tree, and times
``pipeline.transform_row(dict)`` on the same request row, rounds alternating between the two.
The new pipeline carries the rules ``keel run`` gives it (ranges and categories from the
inferred schema), so every value is checked as the server checks it.
Prints one JSON object: per side the median over rounds of the per-round p50, and the added
microseconds per row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADULT = ROOT / "examples" / "adult"

CHILD = r"""
import json, sys, time
import numpy as np
from pathlib import Path
from keel.config import load_config
from keel.data.sources import read_source
from keel.features.pipeline import FeaturePipeline

root = Path(sys.argv[1])
calls = int(sys.argv[2])
config = load_config(root / "keel.yaml")
table = read_source(config.data.train, root)
names = [n for n in table.column_names if n != "income"]
try:
    from keel.validate.coerce import Coercer
    from keel.validate.schema import infer_schema
    from keel.validate.statistics import compute_statistics
    schema = infer_schema(compute_statistics(table), target="income")
    inputs = {n: schema.columns[n].type for n in names}
    pipe = FeaturePipeline(inputs=inputs, rules=Coercer.from_schema(schema, names).state())
except ImportError:  # the commit before the coercion path
    from keel.validate.schema import infer_schema
    from keel.validate.statistics import compute_statistics
    schema = infer_schema(compute_statistics(table), target="income")
    pipe = FeaturePipeline(inputs={n: schema.columns[n].type for n in names})
pipe.fit(table)
row = {n: table.column(n)[7].as_py() for n in names}
for _ in range(2000):
    pipe.transform_row(row)
samples = np.empty(calls)
for i in range(calls):
    start = time.perf_counter()
    pipe.transform_row(row)
    samples[i] = time.perf_counter() - start
print(json.dumps({"p50_us": float(np.median(samples) * 1e6)}))
"""


def _round(src: Path, calls: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ADULT), str(calls)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["p50_us"])


def main(old_src: Path, calls: int, rounds: int) -> dict[str, object]:
    old, new = [], []
    for _ in range(rounds):
        old.append(_round(old_src, calls))
        new.append(_round(ROOT / "src", calls))
    old.sort()
    new.sort()
    before, after = old[len(old) // 2], new[len(new) // 2]
    return {
        "calls": calls,
        "rounds": rounds,
        "before_p50_us": round(before, 2),
        "after_p50_us": round(after, 2),
        "added_us_per_row": round(after - before, 2),
        "before_rounds": [round(v, 2) for v in old],
        "after_rounds": [round(v, 2) for v in new],
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    calls = int(args[1]) if len(args) > 1 else 20000
    rounds = int(args[2]) if len(args) > 2 else 5
    print(json.dumps(main(Path(args[0]), calls, rounds)))
