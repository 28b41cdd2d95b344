"""Drift of many windows: the former per-window loop against the vectorised judge.

The Adult test set (16,281 rows) is cut into ``WINDOWS`` consecutive windows (default 50) and
counted as monitoring counts the log; then every window's drift (14 features and the output:
PSI, JS, Wasserstein, chi-square/G test, BH, verdicts) is computed two ways, interleaved:

- **before**: one ``column_drift`` per feature per window, then ``decide`` per window (the
  report's former loop, kept as ``per_window_reference`` in tests/monitor/test_windowed.py);
- **after**: :func:`keel.monitor.report.judge_windows` (:mod:`keel.monitor.windowed`).

CPU seconds (``time.process_time``) of each, min and median of ``ROUNDS`` (default 5), rows in
file order and sorted by age (most windows drift: p-values near 0, the slow end of the chi-square
tail). Both results are checked equal first.

    nice .venv/bin/python benchmarks/monitor/windows.py          # WINDOWS=50 ROUNDS=5
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.monitor.test_windowed import (  # noqa: E402
    adult_panes,
    assert_same,
    per_window_reference,
    vectorised,
)

from keel.config import load_config  # noqa: E402
from keel.data import read_source  # noqa: E402
from keel.monitor.report import ModelReference, MonitorSettings  # noqa: E402
from keel.validate.coerce import Coercer  # noqa: E402
from keel.validate.statistics import compute_statistics  # noqa: E402

WINDOWS = int(os.environ.get("WINDOWS", "50"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))


def reference() -> tuple[ModelReference, pa.Table]:
    root = REPO / "examples" / "adult"
    config = load_config(root, env="")
    train = read_source(config.data.train, root)
    assert config.data.test is not None
    test = read_source(config.data.test, root)
    inputs = {
        f.name: "int" if pa.types.is_integer(f.type) else "string"
        for f in train.schema
        if f.name != "income"
    }
    model = ModelReference(
        name="adult", version="1", task="binary", classes=("<=50K", ">50K"), inputs=inputs,
        statistics=compute_statistics(train), coercer=Coercer.from_types(inputs), target="income",
    )  # fmt: skip
    return model, test


def cpu(run: Any, *args: Any) -> float:
    start = time.process_time()
    run(*args)
    return time.process_time() - start


def main() -> None:
    model, test = reference()
    settings = MonitorSettings(min_rows=100)
    print(f"Adult test set, {test.num_rows} rows in {WINDOWS} windows; CPU s, {ROUNDS} rounds")
    for order in ("file order", "sorted by age"):
        table = test
        if order != "file order":
            table = test.take(pa.array(np.argsort(test.column("age").to_numpy(), kind="stable")))
        panes = adult_panes(model, table, WINDOWS)
        old = per_window_reference(model, panes, settings)
        new = vectorised(model, panes, settings)
        for (a, ao), (b, bo) in zip(old, new, strict=True):
            for x, y in zip([*a, ao], [*b, bo], strict=True):
                assert_same(x, y)
        before, after = [], []
        for _ in range(ROUNDS):  # interleaved
            before.append(cpu(per_window_reference, model, panes, settings))
            after.append(cpu(vectorised, model, panes, settings))
        print(
            f"{order}: before min {min(before):.4f} median {statistics.median(before):.4f}; "
            f"after min {min(after):.4f} median {statistics.median(after):.4f}; "
            f"{min(before) / min(after):.1f}x"
        )


if __name__ == "__main__":
    main()
