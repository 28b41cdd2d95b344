"""A labelled log read once (drift and the label join from the same blocks) against twice.

The Adult test set (16,281 rows) is logged as 3,257 requests over about 23 days (JSON Lines,
the server's format), every other row labelled; then, interleaved, CPU seconds (min and median
of ``ROUNDS``, default 5) of

- **twice**: ``monitor_log`` (drift) then ``join_labels`` (the label reader's own pass);
- **once**: ``monitor_log(join=LabelJoin(...))``, the join fed the drift reader's blocks;

each followed by the same ``realised_performance`` (1d windows), whose results are checked
equal. The log is then compacted to Parquet (sketches deleted, so rows are read) and timed again.

    nice .venv/bin/python benchmarks/monitor/read_once.py          # ROUNDS=5
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks" / "monitor"))

from tests.monitor.conftest import DAY, T0  # noqa: E402
from tests.monitor.test_performance import SPEC, label, scores_for, write_requests  # noqa: E402
from windows import reference  # noqa: E402

from keel.monitor.compact import LoggedVersions, compact_log  # noqa: E402
from keel.monitor.performance import (  # noqa: E402
    LabelJoin,
    join_labels,
    realised_performance,
)
from keel.monitor.report import MonitorSettings, monitor_log  # noqa: E402
from keel.monitor.window import parse_window  # noqa: E402
from keel.store import MetadataStore  # noqa: E402
from keel.store.feedback_store import read_live  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "5"))
SETTINGS = MonitorSettings(window=parse_window("1d"), min_rows=50)


def twice(model: Any, root: Path, labels: Any) -> dict[str, Any]:
    monitor_log(model, root, settings=SETTINGS)
    joined = join_labels(root, SPEC, labels, window=SETTINGS.window)
    return realised_performance(joined, SPEC, SETTINGS.window, labels=1, min_rows=50).to_dict()


def once(model: Any, root: Path, labels: Any) -> dict[str, Any]:
    join = LabelJoin(SPEC, labels)
    monitor_log(model, root, settings=SETTINGS, join=join)
    joined = join.joined()
    return realised_performance(joined, SPEC, SETTINGS.window, labels=1, min_rows=50).to_dict()


def timed(run: Any, *args: Any) -> float:
    start = time.process_time()
    run(*args)
    return time.process_time() - start


def measure(name: str, model: Any, root: Path, labels: Any) -> None:
    assert twice(model, root, labels) == once(model, root, labels)
    before, after = [], []
    for _ in range(ROUNDS):
        before.append(timed(twice, model, root, labels))
        after.append(timed(once, model, root, labels))
    print(
        f"{name}: twice min {min(before):.3f} median {statistics.median(before):.3f}; once min "
        f"{min(after):.3f} median {statistics.median(after):.3f} CPU s "
        f"({1 - min(after) / min(before):.0%} less)"
    )


def main() -> None:
    model, test = reference()
    truth = np.array(test["income"].to_pylist(), dtype=object)
    rows = test.drop_columns(["income"]).to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "predictions"
        where = write_requests(root, rows, scores_for(truth, 0.6, 5), prefix="b")
        with MetadataStore(f"sqlite:///{tmp}/keel.db") as store:
            label(store.database, where[::2], truth, root)
            labels = read_live(store.database, "adult")
        print(f"{len(rows)} rows logged, {len(where[::2])} labelled; CPU s, {ROUNDS} rounds")
        measure("JSON Lines", model, root, labels)
        for path in root.rglob("*.jsonl"):
            os.utime(path, (T0 + 40 * DAY, T0 + 40 * DAY))
        compact_log(root / "adult", lambda: LoggedVersions({"1": model}), now=T0 + 60 * DAY)
        for sketch in root.rglob("*.sketch"):
            sketch.unlink()
        measure("Parquet rows", model, root, labels)


if __name__ == "__main__":
    main()
