"""Adult-shaped benchmark tables: the real rows of adult.data replicated, with a few defects.

usage: .venv/bin/python benchmarks/validation/make_data.py [SIZE ...]   (e.g. 1m 10m)

Writes ``benchmarks/.work/validation/adult_<size>.parquet`` for every size and
``adult_<size>.csv`` (header row, empty cell = missing) for the sizes in ``CSV_SIZES``; the files
are reused while ``data.json`` says they were made from the same source, sizes and defects.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from checks import COLUMNS, DEFECTS  # noqa: E402

ROOT = HERE.parent.parent
SOURCE = ROOT / "examples" / "adult" / "data" / "adult.data"
WORK = HERE.parent / ".work" / "validation"
SIZES = {"1m": 1_000_000, "10m": 10_000_000}
CSV_SIZES = ("10m",)
SEED = 20261122


def read_adult() -> pa.Table:
    """adult.data as Keel reads it: trimmed strings, ``?`` as missing."""
    from keel.config import SourceConfig
    from keel.data.sources import read_source

    source = SourceConfig(
        path=str(SOURCE), header=False, columns=list(COLUMNS), na_values=["?"], format="csv"
    )
    return read_source(source, ROOT)


def replicate(base: pa.Table, rows: int, seed: int) -> pa.Table:
    """``rows`` rows cycling through ``base``, then the defects of checks.DEFECTS set in place."""
    table = base.take(pa.array(np.resize(np.arange(base.num_rows), rows)))
    rng = np.random.default_rng(seed)
    for fraction, column, value in DEFECTS:
        hit = pa.array(rng.random(rows) < fraction)
        col = table.column(column)
        fixed = pc.if_else(hit, pa.scalar(value, type=col.type), col)
        table = table.set_column(table.column_names.index(column), column, fixed)
    return table


def _stamp(size: str) -> dict[str, Any]:
    return {
        "source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "rows": SIZES[size],
        "defects": DEFECTS,
        "seed": SEED,
        "csv": size in CSV_SIZES,
    }


def paths(size: str) -> dict[str, Path]:
    """Where the files of one size live."""
    return {
        "parquet": WORK / f"adult_{size}.parquet",
        "csv": WORK / f"adult_{size}.csv",
        "stamp": WORK / f"adult_{size}.json",
    }


def ensure(size: str) -> dict[str, Path]:
    """Make the files of one size unless they are already there and current."""
    where = paths(size)
    stamp = _stamp(size)
    fresh = where["stamp"].exists() and json.loads(where["stamp"].read_text()) == json.loads(
        json.dumps(stamp)
    )
    if fresh and where["parquet"].exists() and (not stamp["csv"] or where["csv"].exists()):
        return where
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    table = replicate(read_adult(), SIZES[size], SEED + SIZES[size])
    pq.write_table(table, where["parquet"])
    if stamp["csv"]:
        pv.write_csv(table, where["csv"])
    where["stamp"].write_text(json.dumps(stamp, indent=1))
    took = time.perf_counter() - started
    print(f"[validation] wrote {where['parquet'].name} ({table.num_rows:,} rows) in {took:.1f} s")
    return where


if __name__ == "__main__":
    for wanted in sys.argv[1:] or list(SIZES):
        ensure(wanted)
