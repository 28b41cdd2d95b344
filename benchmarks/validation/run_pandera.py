"""pandera (pandas backend): the 15 checks as a DataFrameSchema, validated lazily.

usage: benchmarks/.peers/pandera/bin/python run_pandera.py PARQUET

``lazy=True`` so every failing check is collected (the default stops at the first). Columns
without a not-null check are ``nullable=True``; the two type checks are the column dtype; the
range and set checks are ``Check.in_range`` / ``Check.isin`` (pandera skips nulls in checks).
Phases: import, read (pandas.read_parquet), setup (schema), validate.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from runner import Phases, emit  # noqa: E402

phases = Phases()
import pandas as pd  # noqa: E402
import pandera  # noqa: E402
import pandera.pandas as pa  # noqa: E402
from checks import CHECKS, check_id, check_ids  # noqa: E402

phases.mark("import")
frame = pd.read_parquet(sys.argv[1])
phases.mark("read")

columns: dict[str, dict[str, object]] = {}
for kind, column, params in CHECKS:
    spec = columns.setdefault(column, {"checks": [], "nullable": True, "dtype": None})
    if kind == "not_null":
        spec["nullable"] = False
    elif kind == "between":
        spec["checks"].append(pa.Check.in_range(params["min"], params["max"]))  # type: ignore[union-attr]
    elif kind == "in_set":
        spec["checks"].append(pa.Check.isin(params["values"]))  # type: ignore[union-attr]
    else:
        spec["dtype"] = params["type"]
schema = pa.DataFrameSchema(
    {name: pa.Column(**spec) for name, spec in columns.items()}, strict=False
)
phases.mark("setup")

# pandera's check names -> our kinds
KINDS = {"not_nullable": "not_null", "in_range": "between", "isin": "in_set"}
results: dict[str, object] = {ident: 0 for ident in check_ids()}
results["failed"] = []
try:
    schema.validate(frame, lazy=True)
    cases = None
except pa.errors.SchemaErrors as exc:
    cases = exc.failure_cases
phases.mark("validate")
if cases is not None:
    for (column, check), group in cases.groupby(["column", "check"]):
        name = str(check)
        kind = "of_type" if name.startswith("dtype(") else KINDS.get(name.split("(")[0], name)
        ident = check_id(kind, str(column))
        results[ident] = len(group)
        results["failed"].append(ident)  # type: ignore[union-attr]
emit("pandera (pandas)", pandera.__version__, len(frame), phases, results)
