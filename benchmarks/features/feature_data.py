"""Benchmark data for the feature store, written once under benchmarks/.work/features/.

- ``wide.parquet``: 10,000 entities (``user_id``), one row each, 100 float features
  ``f0..f99`` stamped 2024-01-01: the online lookup data (10 features = ``f0..f9``).
- ``view_a/b/c.parquet``: three views over 100,000 keys (``k``), 10 event times per key over
  2024 (1M rows each), with 4 + 3 + 3 = 10 float features.
- ``entities.parquet``: 1M entity rows (``k``, ``ts``) with random keys and times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORK = Path(__file__).resolve().parents[1] / ".work" / "features"
N_ONLINE = 10_000
N_KEYS = 100_000
PER_KEY = 10
N_ENTITIES = 1_000_000
VIEWS = {
    "view_a": ["a0", "a1", "a2", "a3"],
    "view_b": ["b0", "b1", "b2"],
    "view_c": ["c0", "c1", "c2"],
}
START = np.datetime64("2024-01-01T00:00:00", "us")
YEAR_US = 366 * 86400 * 10**6


def make(work: Path = WORK) -> Path:
    """Write the files (skipped when they exist); returns the directory."""
    work.mkdir(parents=True, exist_ok=True)
    done = work / ".done"
    if done.exists():
        return work
    rng = np.random.default_rng(7)
    wide = {"user_id": np.arange(N_ONLINE, dtype=np.int64), "ts": np.full(N_ONLINE, START)}
    wide |= {f"f{i}": rng.normal(size=N_ONLINE) for i in range(100)}
    pq.write_table(pa.table(wide), work / "wide.parquet")
    for seed, (name, columns) in enumerate(VIEWS.items()):
        rng = np.random.default_rng(100 + seed)
        keys = np.repeat(np.arange(N_KEYS, dtype=np.int64), PER_KEY)
        offsets = rng.integers(0, YEAR_US, size=keys.size)
        table = {"k": keys, "ts": START + offsets.astype("timedelta64[us]")}
        table |= {c: rng.normal(size=keys.size) for c in columns}
        pq.write_table(pa.table(table), work / f"{name}.parquet")
    rng = np.random.default_rng(1)
    entities = {
        "k": rng.integers(0, N_KEYS, size=N_ENTITIES, dtype=np.int64),
        "ts": START + rng.integers(0, YEAR_US, size=N_ENTITIES).astype("timedelta64[us]"),
    }
    pq.write_table(pa.table(entities), work / "entities.parquet")
    done.write_text("ok\n")
    return work


if __name__ == "__main__":
    print(make())
