"""The runs both tracking stores receive: same params, metrics, tags, status and times.

Plain Python (no numpy) so that Keel's venv and MLflow's venv generate the identical runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

SEED = 20261122
VERSION = 3  # bump when the generated runs change: cached stores are rebuilt
TEAMS = ("risk", "growth", "fraud", "churn", "search")
BOOSTING = ("gbdt", "dart", "goss")
START_MS = 1_790_000_000_000  # 2026-09-21, one run a minute from there

# The same queries on both sides: (name, Keel filter, Keel sort, MLflow filter, MLflow order_by).
QUERIES = (
    ("filter metric, sort by it", "metrics.roc_auc > 0.9", "metrics.roc_auc desc",
     "metrics.roc_auc > 0.9", ["metrics.roc_auc DESC"]),
    ("metric + param + tag", 'metrics.roc_auc > 0.85 and params.boosting = "goss" and '
     'tags.team = "risk"', None,
     "metrics.roc_auc > 0.85 and params.boosting = 'goss' and tags.team = 'risk'", None),
    ("newest runs", None, None, "", None),
    ("failed runs", 'status = "failed"', None, "attributes.status = 'FAILED'", None),
    ("sort by a metric", None, "metrics.log_loss asc", "", ["metrics.log_loss ASC"]),
)  # fmt: skip
LIMIT = 100


def generate(n: int) -> Iterator[dict[str, Any]]:
    """``n`` runs: 6 params, 4 metrics, 2 tags each; 5% failed (no metrics)."""
    rng = random.Random(SEED)
    for i in range(n):
        failed = rng.random() < 0.05
        auc = round(rng.uniform(0.70, 0.95), 6)
        params = {
            "num_leaves": rng.choice((8, 15, 31, 63, 127, 255)),
            "learning_rate": round(rng.uniform(0.01, 0.3), 4),
            "min_child_samples": rng.randint(5, 100),
            "feature_fraction": round(rng.uniform(0.5, 1.0), 3),
            "boosting": rng.choice(BOOSTING),
            "objective": "binary",
        }
        metrics = {
            "roc_auc": auc,
            "log_loss": round(0.9 - auc * 0.7 + rng.uniform(-0.02, 0.02), 6),
            "accuracy": round(0.6 + auc * 0.3, 6),
            "f1": round(rng.uniform(0.4, 0.8), 6),
        }
        yield {
            "i": i,
            "status": "failed" if failed else "succeeded",
            "start_ms": START_MS + i * 60_000,
            "duration_ms": rng.randint(500, 60_000),
            "params": params,
            "metrics": {} if failed else metrics,
            "tags": {"team": rng.choice(TEAMS), "dataset": "adult"},
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]
