"""Keel ingesting a large CSV into a Parquet snapshot (wall and peak RSS are measured outside).

usage: .venv/bin/python run_ingest.py CSV WORKDIR [keel|floor]

With ``keel.data.ingest`` (the streaming ingest API) the CSV becomes a snapshot artifact of a
throwaway project in WORKDIR whose ``data.train`` is the CSV (default CSV options: header row,
dialect and encoding detected). Without it (older Keel), what issue 2's ingest step does:
``read_source`` (whole table in memory) and one Parquet write. ``floor``: one DuckDB statement,
``COPY (SELECT * FROM read_csv(CSV)) TO snapshot.parquet`` (zstd): no cleaning, no bad-row
quarantine, no artifact store. Phases: import, ingest.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import Phases, emit

phases = Phases()
csv, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
if sys.argv[3:4] == ["floor"]:
    import duckdb

    phases.mark("import")
    with duckdb.connect() as con:
        target = work / "snapshot.parquet"
        con.execute(
            f"COPY (SELECT * FROM read_csv('{csv}')) TO '{target}' (FORMAT parquet, "
            "COMPRESSION zstd)"
        )
        row = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()
    phases.mark("ingest")
    size_mb = round(target.stat().st_size / 2**20, 1)
    floor = {"failed": [], "api": "DuckDB COPY csv -> parquet", "snapshot_mb": size_mb}
    emit("DuckDB floor", duckdb.__version__, int(row[0]) if row else 0, phases, floor)
    sys.exit(0)

import keel  # noqa: E402
import keel.data  # noqa: E402
from keel.config import SourceConfig  # noqa: E402

phases.mark("import")
source = SourceConfig(path=str(csv), format="csv", header=True)
info: dict[str, Any] = {"failed": []}
ingest = getattr(keel.data, "ingest", None)
if ingest is not None:
    from keel.project import Project

    # a throwaway project whose data.train is the CSV, as `keel data ingest` would use
    (work / "keel.yaml").write_text(
        f"project: bench\ndata:\n  train:\n    path: {json.dumps(str(csv))}\n"
        "  target: income\nmodel:\n  name: bench\n  flavor: lightgbm\n  task: binary\n"
    )
    project = Project(work)
    outcome = ingest(project.config.data.train, project.root, project)
    phases.mark("ingest")
    rows = outcome.rows
    info["api"] = "keel.data.ingest"
    info["bad_rows"] = outcome.bad_rows
    info["snapshot_mb"] = round(outcome.snapshot.size / 2**20, 1)
else:
    import pyarrow.parquet as pq

    from keel.data.sources import read_source

    table = read_source(source, work)
    pq.write_table(table, work / "snapshot.parquet", compression="zstd")
    phases.mark("ingest")
    rows = table.num_rows
    info["api"] = "read_source + pq.write_table (no keel.data.ingest yet)"
emit("Keel ingest", keel.__version__, rows, phases, info)
