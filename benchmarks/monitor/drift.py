"""`keel monitor` on a large prediction log: the whole command (start-up included), wall time
and peak RSS, as a user runs it, and the computation alone in-process.

A trained Adult project (the bundled example) serves nothing: the log is written directly in
the server's format by ``make_log.py`` (the Adult test rows, repeated, with the model's
probabilities), ``ROWS`` rows over ``DAYS`` days. Each measurement is its own process under
``/usr/bin/time -v``; the median of ``ROUNDS`` is reported.

    .venv/bin/python benchmarks/monitor/drift.py [WORKDIR]    # ROWS=1000000 ROUNDS=3

Evidently 0.7.23's figures on the same machine class (1M vs 1M rows, DataDriftPreset, default
tests) are in /work/shared/peer-bench/results/summary.md: 39.0 s process wall, 32.6 s compute,
1,461 MB peak RSS.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYTHON = sys.executable
ROWS = int(os.environ.get("ROWS", "1000000"))
DAYS = int(os.environ.get("DAYS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def timed(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and stdout of one process."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    rss = int(match.group(1)) / 1024 if match else float("nan")
    if result.returncode not in (0, 1):
        raise RuntimeError(result.stderr[-2000:])
    return wall, rss, result.stdout


def project(work: Path) -> Path:
    root = work / "adult"
    if not (root / ".keel" / "keel.db").exists():
        subprocess.run([PYTHON, "-m", "keel.cli", "init", str(root), "--example", "adult"],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([PYTHON, "-m", "keel.cli", "run"], cwd=root, check=True,
                       capture_output=True)  # fmt: skip
    log = root / ".keel" / "predictions" / "adult"
    marker = log / f".rows-{ROWS}"
    if not marker.exists():
        subprocess.run(["rm", "-rf", str(log)], check=True)
        subprocess.run([PYTHON, str(HERE / "make_log.py"), str(root), "adult", "test",
                        "--rows", str(ROWS), "--days", str(DAYS), "--per-request", "10"],
                       check=True)  # fmt: skip
        marker.touch()
    return root


def in_process(root: Path) -> float:
    code = (
        "import time, keel\n"
        "t = time.perf_counter()\n"
        "keel.monitor('adult', project='.', window='1d')\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([PYTHON, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/keel-monitor-bench")
    work.mkdir(parents=True, exist_ok=True)
    root = project(work)
    size = sum(p.stat().st_size for p in (root / ".keel" / "predictions").rglob("*.jsonl"))
    results: dict[str, list[tuple[float, float]]] = {"whole log": [], "1d windows": []}
    compute = []
    for _ in range(ROUNDS):
        for label, extra in (("whole log", []), ("1d windows", ["--window", "1d"])):
            wall, rss, out = timed(
                [PYTHON, "-m", "keel.cli", "monitor", "adult", "-f", "json", *extra], root
            )
            report = json.loads(out)
            assert report["rows"] == ROWS or abs(report["rows"] - ROWS) < ROWS // 100, report
            results[label].append((wall, rss))
        compute.append(in_process(root))
    startup, _, _ = timed([PYTHON, "-X", "importtime", "-c", "import keel.cli"], root)
    print(f"log: {ROWS:,} rows, {size / 1e6:.0f} MB of JSON Lines over {DAYS} days")
    for label, runs in results.items():
        walls = [w for w, _ in runs]
        rss = [r for _, r in runs]
        print(
            f"keel monitor ({label}): wall {statistics.median(walls):.2f} s "
            f"({min(walls):.2f}-{max(walls):.2f}), peak RSS {statistics.median(rss):.0f} MB"
        )
    print(f"in-process keel.monitor (1d windows): {statistics.median(compute):.2f} s")
    print(f"python -c 'import keel.cli': {startup:.2f} s")


if __name__ == "__main__":
    main()
