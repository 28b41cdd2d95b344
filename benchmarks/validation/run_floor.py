"""The floor: one hand-written DuckDB SELECT over the Parquet file computes every check's count.

usage: .venv/bin/python run_floor.py PARQUET [checks|stats]

``checks``: the 15 checks' unexpected counts in one SELECT (types from the file's schema).
``stats``: the same SELECT plus per-column statistics: non-null count, and for numbers min, max,
mean, std, 7 approximate quantiles and an approximate distinct count; for strings the exact count
of every value (``histogram``: top-k with counts, and the distinct count).
Phases: import, read (the schema), validate (the SELECT, reading the file as it goes).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import Phases, emit

phases = Phases()
import duckdb  # noqa: E402
from checks import CHECKS, COLUMNS, INTEGER_COLUMNS, check_id  # noqa: E402

phases.mark("import")
path, mode = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "checks")
con = duckdb.connect()
source = f"read_parquet('{path}')"
types = {
    name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
}
phases.mark("read")

DUCK_TYPES = {"int64": "BIGINT"}
QUANTILES = "[0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]"


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'" if isinstance(value, str) else str(value)


select: list[str] = ["count(*)"]
for kind, column, params in CHECKS:
    col = q(column)
    if kind == "not_null":
        select.append(f"count_if({col} IS NULL)")
    elif kind == "between":
        select.append(f"count_if({col} < {params['min']} OR {col} > {params['max']})")
    elif kind == "in_set":
        allowed = ", ".join(literal(v) for v in params["values"])
        select.append(f"count_if({col} NOT IN ({allowed}))")  # NULL NOT IN (...) is not counted
    else:
        select.append("0")
if mode == "stats":
    for column in COLUMNS:
        col = q(column)
        select.append(f"count({col})")
        if column in INTEGER_COLUMNS:
            select += [
                f"min({col})",
                f"max({col})",
                f"avg({col})",
                f"stddev_pop({col})",
                f"approx_quantile({col}, {QUANTILES})",
            ]
            select.append(f"approx_count_distinct({col})")
        else:
            select.append(f"histogram({col})")  # distinct = its size
row = con.execute(f"SELECT {', '.join(select)} FROM {source}").fetchone()
phases.mark("validate")
con.close()
assert row is not None
results: dict[str, object] = {"failed": []}
for index, (kind, column, params) in enumerate(CHECKS, start=1):
    ident = check_id(kind, column)
    if kind == "of_type":
        bad = types[column] != DUCK_TYPES[params["type"]]
        results[ident] = None
    else:
        results[ident] = int(row[index])
        bad = row[index] > 0
    if bad:
        results["failed"].append(ident)  # type: ignore[union-attr]
tool = "DuckDB floor, checks + statistics" if mode == "stats" else "DuckDB floor, checks"
emit(tool, duckdb.__version__, int(row[0]), phases, results)
