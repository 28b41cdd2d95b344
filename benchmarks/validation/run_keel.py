"""Keel: statistics + the 15 checks, as a Keel user runs them.

usage: .venv/bin/python run_keel.py PARQUET

The checks are a Keel Schema (per column: type, nullable, min/max, categories). With
``keel.validate.anomalies.validate_data`` (the ``keel validate`` path) one call computes the
statistics and every anomaly; it also runs its own extra checks (duplicate rows, constant
columns), reported as ``extra``. When ``validate_data`` takes a path it gets the Parquet path
(Keel streams it; the read is then inside validate); otherwise the table from
``keel.data.sources.read_table``. Without ``validate_data`` (older Keel) the runner calls
``compute_statistics`` and ``validate_table``. Phases: import, read, validate (and stats).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import Phases, emit

phases = Phases()
from keel_side import schema, tally  # noqa: E402

import keel  # noqa: E402
from keel.validate import anomalies  # noqa: E402

phases.mark("import")
contract = schema()
path = sys.argv[1]
api = "compute_statistics + validate_table"
if hasattr(anomalies, "validate_data"):
    first = next(iter(inspect.signature(anomalies.validate_data).parameters.values()))
    streams = any(word in str(first.annotation) for word in ("str", "Path", "DataInput"))
    api = "validate_data(path)" if streams else "validate_data(read_table(path))"
if api == "validate_data(path)":  # Keel reads (streams) the file itself
    phases.mark("read")
    report = anomalies.validate_data(path, schema=contract, name="adult")
    found, rows = report.anomalies, report.rows
    phases.mark("validate")
else:  # older Keel; imported here so the current path times only what a user imports
    from keel.data.sources import read_table
    from keel.validate.statistics import compute_statistics

    table = read_table(path)
    rows = table.num_rows
    phases.mark("read")
    if api.startswith("validate_data"):
        found = anomalies.validate_data(table, schema=contract, name="adult").anomalies
        phases.mark("validate")
    else:
        statistics = compute_statistics(table)
        phases.mark("stats")
        found = anomalies.validate_table(table, contract, name="adult")
        phases.mark("validate")

results = tally([a.to_dict() for a in found], rows)
results["api"] = api
emit("Keel", keel.__version__, rows, phases, results)
