"""The floor of the point-in-time join: one hand-written DuckDB query, three ASOF LEFT JOINs.

The same answer as Keel's (latest row at or before each entity time, NULL when older than the
30-day TTL) without deduplicating ties or any checks: what an engineer would write by hand.
Prints one JSON line. usage: run_floor.py
"""

from __future__ import annotations

import json
import time

import duckdb
import numpy as np
from feature_data import VIEWS, WORK


def main() -> dict[str, object]:
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    select = ["e.k", "e.ts"]
    joins = []
    for name, cols in VIEWS.items():
        fresh = f"e.ts - {name}.ts <= INTERVAL 30 DAY"
        select += [f"CASE WHEN {fresh} THEN {name}.{c} END AS {c}" for c in cols]
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{WORK / f'{name}.parquet'}') {name} "
            f"ON e.k = {name}.k AND e.ts >= {name}.ts"
        )
    query = (
        f"SELECT {', '.join(select)} FROM read_parquet('{WORK / 'entities.parquet'}') e "
        + " ".join(joins)
    )
    t1 = time.perf_counter()
    joined = con.sql(query).to_arrow_table()
    t2 = time.perf_counter()
    return {
        "rows": joined.num_rows,
        "columns": joined.num_columns,
        "join_s": t2 - t1,
        "setup_s": t1 - t0,
        "non_null_a0": joined.num_rows - joined.column("a0").null_count,
        "checksum": float(np.nansum(joined.column("c2").to_numpy(zero_copy_only=False))),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
