"""`keel monitor` with realised performance: 1M logged predictions, every one labelled.

A copy of the compacted 1M-row Adult project of ``drift.py`` (run that first) gets one live
label per logged prediction, stored straight into the ``feedback`` table (by request id and
instance, as ``keel feedback`` stores them; the label is the logged prediction, flipped for one
row in seven, so accuracy is about 0.857). Then ``keel monitor adult -w 1d -f json`` runs in its
own process under ``/usr/bin/time -v``: wall time, CPU time and peak RSS, best and median of
``ROUNDS``, and the realised accuracy it reports, which must be the one written.

    .venv/bin/python benchmarks/monitor/labels.py [DRIFT_WORKDIR] [WORKDIR]
    # defaults: /tmp/h7-fresh (drift.py's) and /tmp/keel-labels; ROUNDS=3
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from drift import KEEL, timed  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
FLIP = 7  # every seventh label disagrees with the prediction


def labelled(source: Path, work: Path) -> tuple[Path, int, float]:
    """The project copy with one live label per logged row; (root, labels, written accuracy)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from keel.project import Project
    from keel.store.tables import feedback

    root = work / "adult"
    marker = root / ".keel" / "bench-labels"
    log = root / ".keel" / "predictions" / "adult" / "_compacted"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root)
        parts = sorted(log.rglob("*.parquet"))
        total = correct = 0
        with Project(root) as project:
            db = project.metadata.database
            with db.write() as conn:
                conn.execute(feedback.delete())
            for part in parts:
                table = pq.read_table(part, columns=["request_id", "time", "prediction"])
                ids = table["request_id"].to_numpy(zero_copy_only=False)
                new = np.ones(len(ids), dtype=bool)
                new[1:] = ids[1:] != ids[:-1]
                starts = np.maximum.accumulate(np.where(new, np.arange(len(ids)), 0))
                instance = np.arange(len(ids)) - starts
                predictions = table["prediction"].to_pylist()
                flip = (np.arange(total, total + len(ids)) % FLIP) == 0
                classes = sorted(set(predictions) | {">50K", "<=50K"})
                other = {c: next(o for o in classes if o != c) for c in classes}
                times = pc.cast(table["time"], "float64").to_numpy()
                rows = [
                    {
                        "model_name": "adult",
                        "request_id": str(ids[i]),
                        "instance": int(instance[i]),
                        "key": None,
                        "key_hash": None,
                        "label": other[predictions[i]] if flip[i] else predictions[i],
                        "received_at": datetime.fromtimestamp(float(times[i]) + 3600, UTC),
                        "source": "bench",
                        "status": "accepted",
                        "replaced_by": None,
                        "live_request": str(ids[i]),
                        "live_key": None,
                    }
                    for i in range(len(ids))
                ]
                with db.write() as conn:
                    conn.execute(sa.insert(feedback), rows)
                total += len(ids)
                correct += int((~flip).sum())
        marker.write_text(json.dumps({"labels": total, "accuracy": correct / total}))
    written = json.loads(marker.read_text())
    return root, int(written["labels"]), float(written["accuracy"])


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/h7-fresh") / "adult-compacted"
    work = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/keel-labels")
    work.mkdir(parents=True, exist_ok=True)
    root, labels, accuracy = labelled(source, work)
    command = [*KEEL, "monitor", "adult", "-w", "1d", "-f", "json"]
    timed(command, root)  # warm-up: bytecode and the page cache
    runs = [timed(command, root) for _ in range(ROUNDS)]
    report = json.loads(str(runs[-1]["stdout"]))
    realised = report["realised"] or {}
    print(f"load: {os.getloadavg()}")
    print(f"labels stored: {labels:,}, accuracy written: {accuracy:.6f}")
    print(f"realised: {json.dumps(realised)[:600]}")
    for key in ("wall", "cpu", "rss"):
        values = [float(r[key]) for r in runs]
        print(f"{key}: best {min(values):.2f} median {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
