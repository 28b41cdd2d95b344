"""`keel monitor` on a large prediction log, beside Evidently 0.7 in the same run: the whole
command (start-up included) as a user runs it, wall time, CPU time and peak RSS of the process.

A trained Adult project (the bundled example) serves nothing: the log is written directly in
the server's format by ``make_log.py`` (the Adult test rows, repeated, with the model's
probabilities), ``ROWS`` rows over ``DAYS`` days, dated in the past so that every file is
closed. A copy of the project is compacted (``keel monitor compact``: Parquet partitions with
stored sketches). Each round runs, in rotating order, each its own process under
``/usr/bin/time -v``:

- ``evidently``: DataDriftPreset on the same served rows (exported to Parquet) against the
  Adult training CSV (``evidently_drift.py`` in Evidently's venv, ``EVIDENTLY``);
- ``json``: ``keel monitor adult -f json --no-compact`` reading the JSON Lines log;
- ``sketches``: ``keel monitor adult -f json`` on the compacted copy (stored sketches merged);
- ``parquet rows``: the same with ``--since`` inside an hour, so the Parquet rows are read;
- ``sketches 1d``: ``keel monitor adult -w 1d -f json`` on the compacted copy.

Then drift from stored sketches in process (``keel.monitor.report.monitor_log``), best of 20.

    .venv/bin/python benchmarks/monitor/drift.py [WORKDIR]   # ROWS=1000000 ROUNDS=3
    ROWS=10000000 ROUNDS=1 EVIDENTLY= .venv/bin/python benchmarks/monitor/drift.py /tmp/m10m

Python writes bytecode for the modules it imports once (a warm-up run of each Keel command), as
an installed package has it (pip compiled Evidently's); ``PYTHONDONTWRITEBYTECODE`` is cleared
for the children.

``BASELINE=DIR`` (a folder holding an earlier copy of the ``keel`` package, e.g. from
``git worktree`` or ``cp -r src/keel``) also times both sketch commands with that copy first on
``PYTHONPATH``, in the same rounds: a before/after under the same load.

    BASELINE=/tmp/keel-before ROUNDS=3 .venv/bin/python benchmarks/monitor/drift.py /tmp/m1m
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
ROWS = int(os.environ.get("ROWS", "1000000"))
DAYS = int(os.environ.get("DAYS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
EVIDENTLY = os.environ.get("EVIDENTLY", "/work/bench-venvs/evidently/bin/python")
BASELINE = os.environ.get("BASELINE", "")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
# the installed `keel` entry point, as a user runs it (`python -m keel.cli` would also compile
# cli.py from source on every run: __main__ gets no cached bytecode)
_ENTRY = Path(PYTHON).with_name("keel")
KEEL = [str(_ENTRY)] if _ENTRY.exists() else [PYTHON, "-m", "keel.cli"]


def timed(args: list[str], cwd: Path, baseline: bool = False) -> dict[str, float | str]:
    """Wall seconds, CPU seconds, peak RSS (MB) and stdout of one process (``baseline``: with
    :data:`BASELINE`'s keel first on the path)."""
    env = ENV | {"PYTHONPATH": BASELINE} if baseline else ENV
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", *args], cwd=cwd, capture_output=True, text=True, env=env,
        check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise RuntimeError(result.stderr[-3000:])

    def field(name: str) -> float:
        match = re.search(rf"{name}: ([\d.]+)", result.stderr)
        return float(match.group(1)) if match else float("nan")

    return {
        "wall": wall,
        "cpu": field(r"User time \(seconds\)") + field(r"System time \(seconds\)"),
        "rss": field(r"Maximum resident set size \(kbytes\)") / 1024,
        "stdout": result.stdout,
    }


def project(work: Path) -> Path:
    """The trained project with its JSON Lines log, every file closed (dated in the past)."""
    root = work / "adult"
    if not (root / ".keel" / "keel.db").exists():
        subprocess.run([*KEEL, "init", str(root), "--example", "adult"], check=True,
                       capture_output=True, env=ENV)  # fmt: skip
        subprocess.run([*KEEL, "run"], cwd=root, check=True, capture_output=True, env=ENV)
    log = root / ".keel" / "predictions" / "adult"
    marker = root / ".keel" / f"bench-rows-{ROWS}"
    if not marker.exists():
        shutil.rmtree(log, ignore_errors=True)
        subprocess.run([PYTHON, str(HERE / "make_log.py"), str(root), "adult", "test",
                        "--rows", str(ROWS), "--days", str(DAYS), "--per-request", "10"],
                       check=True, env=ENV)  # fmt: skip
        past = time.time() - 7200  # written two hours ago: closed
        for path in log.rglob("*.jsonl"):
            os.utime(path, (past, past))
        marker.touch()
    return root


def compacted(work: Path, root: Path) -> tuple[Path, dict[str, float | str]]:
    """A copy of the project with its log compacted, and the compaction's measurement."""
    copy = work / "adult-compacted"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(root, copy)
    return copy, timed([*KEEL, "monitor", "compact", "adult", "-f", "json"], copy)


def export_current(copy: Path, target: Path) -> None:
    """The served rows as one flat Parquet file, for Evidently."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if target.exists():
        return
    parts = sorted((copy / ".keel" / "predictions" / "adult" / "_compacted").rglob("*.parquet"))
    writer = None
    for part in parts:
        struct = pq.read_table(part, columns=["inputs"]).column("inputs").combine_chunks()
        table = pa.table({f.name: struct.field(f.name) for f in struct.type})
        writer = writer or pq.ParquetWriter(target, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def in_process(copy: Path) -> dict[str, float]:
    """Drift from stored sketches inside a process: best of 20, whole log and 1d windows."""
    code = """
import time, json
from dataclasses import replace
from keel.project import Project
from keel.monitor.calibrate import calibration_for
from keel.monitor.report import load_reference, monitor_log, settings_of
from keel.monitor.window import LogFilter, parse_window
out = {}
with Project(".") as p:
    v = p.metadata.resolve("adult")
    ref = load_reference(p.artifacts, v.package_sha256, version=str(v.version),
                         target=p.config.data.target)
    ref = replace(ref, calibration=calibration_for(p, v.package_sha256, ref.target, ref.classes))
    for label, window in (("all", None), ("1d", "1d")):
        settings = settings_of(p.config.monitor, parse_window(window))
        best = []
        for _ in range(20):
            t = time.perf_counter()
            report = monitor_log(ref, p.predictions_dir, select=LogFilter(version="1"),
                                 settings=settings)
            best.append(time.perf_counter() - t)
        out[label] = min(best) * 1000
        out[label + "_median"] = sorted(best)[10] * 1000
        out[label + "_rows"] = report.overall.rows
print(json.dumps(out))
"""
    result = subprocess.run([PYTHON, "-c", code], cwd=copy, capture_output=True, text=True,
                            check=True, env=ENV)  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/keel-monitor-bench")
    work.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
    root = project(work)
    size = sum(p.stat().st_size for p in (root / ".keel" / "predictions").rglob("*.jsonl"))
    copy, compaction = compacted(work, root)
    parquet = sum(p.stat().st_size for p in (copy / ".keel" / "predictions").rglob("*.parquet"))
    current = work / f"current-{ROWS}.parquet"
    commands: dict[str, tuple[list[str], Path] | tuple[list[str], Path, bool]] = {
        "json": ([*KEEL, "monitor", "adult", "-f", "json", "--no-compact"], root),
        "sketches": ([*KEEL, "monitor", "adult", "-f", "json"], copy),
        "parquet rows": (
            [*KEEL, "monitor", "adult", "-f", "json", "--since", "2000-01-01T00:00:01"],
            copy,
        ),
        "sketches 1d": ([*KEEL, "monitor", "adult", "-w", "1d", "-f", "json"], copy),
    }
    if BASELINE:
        commands["sketches, before"] = ([*KEEL, "monitor", "adult", "-f", "json"], copy, True)
        commands["sketches 1d, before"] = (
            [*KEEL, "monitor", "adult", "-w", "1d", "-f", "json"],
            copy,
            True,
        )
    if EVIDENTLY:
        export_current(copy, current)
        train = root / "data" / "adult.data"
        commands["evidently"] = ([EVIDENTLY, str(HERE / "evidently_drift.py"), str(train),
                                  str(current)], root)  # fmt: skip
    for name, command in commands.items():  # warm-up: bytecode written, caches filled
        if name != "evidently":  # pip compiled its bytecode at install
            timed(*command)
    results: dict[str, list[dict[str, float | str]]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(ROUNDS):
        load.append(os.getloadavg()[0])
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run = timed(*commands[name])
            if name != "evidently":
                report = json.loads(str(run["stdout"]))
                assert abs(report["rows"] - ROWS) < ROWS // 100, (name, report["rows"])
            results[name].append(run)
    load.append(os.getloadavg()[0])
    inside = in_process(copy)
    print(f"log: {ROWS:,} rows over {DAYS} days: {size / 1e6:.0f} MB of JSON Lines, "
          f"{parquet / 1e6:.0f} MB of Parquet once compacted")  # fmt: skip
    print(f"1-minute load average during the run: {min(load):.2f}-{max(load):.2f}")
    print(f"keel monitor compact adult: wall {compaction['wall']:.2f} s, CPU "
          f"{compaction['cpu']:.2f} s, peak RSS {compaction['rss']:.0f} MB")  # fmt: skip
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        walls, cpus, rss = ([float(r[k]) for r in runs] for k in ("wall", "cpu", "rss"))
        summary[name] = {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}
        print(f"{name:19s} wall {statistics.median(walls):7.2f} s ({min(walls):.2f}-"
              f"{max(walls):.2f}), CPU {statistics.median(cpus):6.2f} s, peak RSS "
              f"{statistics.median(rss):5.0f} MB")  # fmt: skip
        if name == "evidently":
            print("   evidently:", str(runs[-1]["stdout"]).strip().splitlines()[-1])
    if "evidently" in summary:
        for name in (n for n in summary if n != "evidently"):
            ratio = summary["evidently"]["wall"] / summary[name]["wall"]
            cpu = summary["evidently"]["cpu"] / summary[name]["cpu"]
            print(f"Evidently / keel ({name}): {ratio:.1f}x wall, {cpu:.1f}x CPU")
    print(f"in process, from stored sketches: whole log {inside['all']:.1f} ms (median "
          f"{inside['all_median']:.1f}), 1d windows {inside['1d']:.1f} ms (median "
          f"{inside['1d_median']:.1f}), {inside['all_rows']:,} rows")  # fmt: skip


if __name__ == "__main__":
    main()
