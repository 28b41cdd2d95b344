"""Compaction of the prediction log into Parquet with stored sketches, and retention.

The log is written in the server's format (conftest ``write_log``), compacted as ``keel monitor
compact`` does it, and monitored before and after: the same report, row for row, whether read
from Parquet or merged from sketches; crashes at each step neither lose nor duplicate rows.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel.monitor import compact as compact_module
from keel.monitor import window as window_module
from keel.monitor.compact import LoggedVersions, closed_files, compact_log
from keel.monitor.logfiles import COMPACTED, read_records
from keel.monitor.report import MonitorSettings, monitor_log
from keel.monitor.sketches import stored_counts
from keel.monitor.window import LogFilter, log_sources, parse_window

from .conftest import DAY, T0, Writer

LATER = T0 + 30 * DAY  # every written day is closed by then


def settings(window: str | None = None, step: str | None = None) -> MonitorSettings:
    return MonitorSettings(window=parse_window(window, step))


def shifted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "age": r["age"] + 20, "occupation": "Sales"} for r in rows]


def versions_of(reference: Any) -> LoggedVersions:
    return LoggedVersions({"1": reference, "2": replace(reference, version="2")})


def three_days(rows: list[dict[str, Any]], write_log: Writer) -> Path:
    write_log(rows[:3000], start=T0, gap=20)
    write_log(rows[3000:6000], start=T0 + DAY, gap=20)
    return write_log(shifted(rows[6000:9000]), start=T0 + 2 * DAY, gap=20)


def old_mtimes(root: Path, when: float = T0 + 3 * DAY) -> None:
    """The files were last written at ``when`` (by default after their days were over)."""
    import os

    for path in root.rglob("*.jsonl"):
        os.utime(path, (when, when))


def run(root: Path, reference: Any, **kw: Any) -> Any:
    return compact_log(root / "adult", lambda: versions_of(reference), now=LATER, **kw)


@pytest.mark.parametrize(("window", "step"), [("1d", None), (None, None), ("2d", "1d")])
def test_compaction_keeps_every_row_and_the_same_report(
    adult_reference: Any,
    adult_rows: list[dict[str, Any]],
    write_log: Writer,
    window: str | None,
    step: str | None,
) -> None:
    root = three_days(adult_rows, write_log)
    old_mtimes(root)
    before = monitor_log(adult_reference, root, settings=settings(window, step)).to_dict()
    done = run(root, adult_reference)
    assert (done.files, done.rows, done.parts, done.sketches) == (3, 9000, 3, 3)
    assert not list(root.rglob("*.jsonl"))  # deleted once the Parquet was durable
    assert len(list((root / "adult" / COMPACTED).rglob("*.parquet"))) == 3
    # merged from the stored sketches: no part is read
    stored = stored_counts(adult_reference, root, LogFilter(), parse_window(window, step))
    assert len(stored.parts) == 3
    after = monitor_log(adult_reference, root, settings=settings(window, step)).to_dict()
    assert after == before
    assert after["latest_verdict"] == "drift" if window else after["rows"] == 9000


def test_rows_read_from_parquet_give_the_same_report(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = three_days(adult_rows, write_log)
    old_mtimes(root)
    before = monitor_log(adult_reference, root, settings=settings("1000rows")).to_dict()
    run(root, adult_reference)
    for sketch in root.rglob("*.sketch"):
        sketch.unlink()  # nothing to merge: every part is read
    after = monitor_log(adult_reference, root, settings=settings("1000rows")).to_dict()
    assert after == before and after["rows"] == 9000 and len(after["windows"]) == 9
    daily = monitor_log(adult_reference, root, settings=settings("1d"))
    assert [w.rows for w in daily.windows] == [3000, 3000, 3000]


def test_compaction_is_idempotent(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = three_days(adult_rows, write_log)
    old_mtimes(root)
    run(root, adult_reference)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    again = run(root, adult_reference)
    assert (again.files, again.rows, again.parts) == (0, 0, 0)
    assert sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) == files


def test_a_crash_after_the_record_neither_loses_nor_duplicates_rows(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer, tmp_path: Path
) -> None:
    root = three_days(adult_rows, write_log)
    old_mtimes(root)
    kept = tmp_path / "kept"
    shutil.copytree(root, kept)
    run(root, adult_reference)
    # the crash: the JSON Lines files are still there beside their records and parts
    for path in kept.rglob("*.jsonl"):
        target = root / path.relative_to(kept)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    assert len(list(root.rglob("*.jsonl"))) == 3
    report = monitor_log(adult_reference, root, settings=settings("1000rows"))
    assert report.overall.rows == 9000  # each request read once: the record wins
    rerun = run(root, adult_reference)
    assert (rerun.files, rerun.parts) == (3, 0)  # only the deletion was left to do
    assert not list(root.rglob("*.jsonl"))
    assert monitor_log(adult_reference, root).overall.rows == 9000


def test_a_crash_before_the_record_leaves_the_log_as_it_was(
    adult_reference: Any,
    adult_rows: list[dict[str, Any]],
    write_log: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = three_days(adult_rows, write_log)
    old_mtimes(root)
    before = monitor_log(adult_reference, root, settings=settings("1d")).to_dict()

    def crash(path: Path, data: bytes) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(compact_module, "durable_write", crash)
    with pytest.raises(OSError, match="disk gone"):
        run(root, adult_reference)
    # parts were written but no record lists them: they are not read, the JSON Lines are
    assert list(root.rglob("*.parquet")) and len(list(root.rglob("*.jsonl"))) == 3
    assert monitor_log(adult_reference, root, settings=settings("1d")).to_dict() == before
    monkeypatch.undo()
    done = run(root, adult_reference)
    assert (done.files, done.rows) == (3, 9000)
    assert len(list(root.rglob("*.parquet"))) == 3  # the crashed run's parts were replaced
    assert monitor_log(adult_reference, root, settings=settings("1d")).to_dict() == before


def test_files_still_being_written_are_left_alone(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    write_log(adult_rows[:500], start=T0, gap=20)
    root = write_log(adult_rows[500:1000], start=T0 + DAY, gap=20)
    old_mtimes(root, T0 + DAY + 60)
    today = T0 + DAY + 3600  # the second day is today: the server still appends to its file
    files, still_open = closed_files(root / "adult", now=today)
    assert [f.parent.name for f in files] == ["2023-11-15"] and still_open == 1
    done = compact_log(root / "adult", lambda: versions_of(adult_reference), now=today)
    assert (done.files, done.open_files) == (1, 1)
    assert [p.parent.name for p in root.rglob("*.jsonl")] == ["2023-11-16"]
    # a closed day's file modified a moment ago (a late flush) waits for the grace period
    import os

    late = next(root.rglob("*.jsonl"))
    os.utime(late, (T0 + 2 * DAY + 100, T0 + 2 * DAY + 100))
    assert closed_files(root / "adult", now=T0 + 2 * DAY + 200)[0] == []
    assert monitor_log(adult_reference, root).overall.rows == 1000  # Parquet + JSON Lines


def test_retention_removes_old_days_only(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = three_days(adult_rows, write_log)
    old_mtimes(root)
    run(root, adult_reference)
    # 11 days kept: the first day ended 11.5 days ago and goes, the second ended 10.5 ago
    now = T0 + 12.5 * DAY
    done = compact_log(
        root / "adult", lambda: versions_of(adult_reference), now=now, retention_days=11
    )
    assert done.expired_days == 1
    assert sorted(r[0] for r in read_records(root / "adult")) == ["2023-11-16", "2023-11-17"]
    assert not list((root / "adult" / COMPACTED).glob("version=*/role=*/day=2023-11-15"))
    report = monitor_log(adult_reference, root, settings=settings("1d"))
    assert [w.rows for w in report.windows] == [3000, 3000]
    # raw JSON Lines of an expired day go too, compacted or not
    write_log(adult_rows[:100], start=T0 - 5 * DAY)
    old_mtimes(root)
    compact_log(root / "adult", lambda: None, now=now, retention_days=11)
    assert not (root / "adult" / "2023-11-10").exists()


def test_the_reader_prunes_parts_by_version_and_role(
    adult_reference: Any,
    adult_rows: list[dict[str, Any]],
    write_log: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_log(adult_rows[:300], version="1", role=None)
    write_log(adult_rows[300:500], version="2", role="canary")  # same file, other version
    root = write_log(adult_rows[500:600], version="1", role="shadow", name="3-test.jsonl")
    old_mtimes(root)
    before = {
        key: monitor_log(adult_reference, root, select=LogFilter(version=v, role=r)).to_dict()
        for key, (v, r) in {
            "all": (None, None),
            "1": ("1", None),
            "canary": (None, "canary"),
        }.items()
    }
    done = run(root, adult_reference)
    assert (done.files, done.parts) == (2, 3)  # one file held two (version, role) pairs
    opened: list[Path] = []
    reader = window_module.read_parquet

    def spy(path: Path, *args: Any, **kw: Any) -> Any:
        opened.append(path)
        return reader(path, *args, **kw)

    monkeypatch.setattr(window_module, "read_parquet", spy)
    canary = LogFilter(role="canary")
    sources = log_sources(root / "adult", canary)
    assert [(s.version, s.role) for s in sources] == [("2", "canary")]  # type: ignore[union-attr]
    # sketches are counted on each version's own bins; version 2's are not version 1's
    report = monitor_log(adult_reference, root, select=canary, settings=settings("1000rows"))
    assert report.overall.rows == 200 and report.versions == ("2",)
    assert [p.parent.parent.name for p in opened] == ["role=canary"]
    for key, (v, r) in {"all": (None, None), "1": ("1", None), "canary": (None, "canary")}.items():
        after = monitor_log(adult_reference, root, select=LogFilter(version=v, role=r))
        assert after.to_dict() == before[key]
    assert monitor_log(adult_reference, root, select=LogFilter(version="1")).overall.rows == 400


def test_sketches_give_the_same_drift_as_rows_for_hours_and_ranges(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = three_days(adult_rows, write_log)
    old_mtimes(root)
    cases = [
        (settings("6h"), LogFilter()),
        (settings("1d"), LogFilter(since=T0 + DAY, until=T0 + 2 * DAY + 3600)),
        (settings("1d"), LogFilter(since=T0 + 100)),  # inside an hour: rows are read
    ]
    before = [monitor_log(adult_reference, root, select=f, settings=s).to_dict() for s, f in cases]
    run(root, adult_reference)
    covered = [len(stored_counts(adult_reference, root, f, s.window).parts) for s, f in cases]
    assert covered == [3, 2, 0]
    after = [monitor_log(adult_reference, root, select=f, settings=s).to_dict() for s, f in cases]
    assert after == before


def test_a_sketch_of_other_bins_is_not_merged(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = write_log(adult_rows[:2000], start=T0, gap=20)
    old_mtimes(root)
    run(root, adult_reference)
    other = replace(adult_reference, calibration=None, target=None)  # another key
    assert not stored_counts(other, root, LogFilter(), parse_window("1d")).parts
    report = monitor_log(other, root, settings=settings("1d"))
    assert report.overall.rows == 2000 and report.overall.prediction is None


def test_mixed_types_survive_compaction(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    rows = [dict(r) for r in adult_rows[:3000]]
    for r in rows[2500:]:
        r["age"] = str(r["age"])  # a client that sent text for a number, late in the file
    root = write_log(rows, start=T0, gap=20, probabilities=np.linspace(0, 1, 3000))
    old_mtimes(root)
    before = monitor_log(adult_reference, root, settings=settings("1d")).to_dict()
    done = run(root, adult_reference)
    assert done.rows == 3000 and done.parts >= 1
    assert monitor_log(adult_reference, root, settings=settings("1d")).to_dict() == before


def test_a_file_written_again_under_a_compacted_name_is_read(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    root = write_log(adult_rows[:500], start=T0, gap=20)
    old_mtimes(root)
    run(root, adult_reference)
    write_log(adult_rows[500:700], start=T0 + 1000, gap=20)  # same day, same file name
    old_mtimes(root)
    assert monitor_log(adult_reference, root).overall.rows == 700  # never silently dropped
    done = run(root, adult_reference)
    assert done.files == 0 and "written again" in done.notes[0]
    assert monitor_log(adult_reference, root).overall.rows == 700


def keel_cli(*args: str, cwd: Path) -> Any:
    import os
    import subprocess
    import sys

    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    import keel

    root = tmp_path_factory.mktemp("compacted") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["n_estimators"] = 40  # fast; the model's quality is not tested
    config["evaluate"]["gates"] = []
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    keel.run(root)
    return root


def test_keel_monitor_compact_from_the_cli(trained: Path, adult_rows: list[dict[str, Any]]) -> None:
    import json
    import os

    import orjson

    log = trained / ".keel" / "predictions" / "adult"
    scores = np.random.default_rng(1).random(3000)
    for day in range(3):
        at = T0 + day * DAY
        folder = log / time_name(at)
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            orjson.dumps(
                {"request_id": f"r{day}-{i}", "time": at + i, "model": "adult",
                 "model_version": "1", "role": "primary", "inputs": adult_rows[i : i + 10],
                 "predictions": [">50K" if s >= 0.5 else "<=50K" for s in scores[i : i + 10]],
                 "probabilities": scores[i : i + 10].tolist()}
            )
            for i in range(0, 1000, 10)
        ]  # fmt: skip
        path = folder / "1-cli.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        os.utime(path, (T0 + 3 * DAY, T0 + 3 * DAY))
    before = keel_cli("monitor", "adult", "-w", "1d", "-f", "json", "--no-compact", cwd=trained)
    assert before.returncode in (0, 1), before.stderr
    assert len(list(log.rglob("*.jsonl"))) == 3  # --no-compact left the log as it was
    result = keel_cli("monitor", "compact", "adult", "-f", "json", cwd=trained)
    assert result.returncode == 0, result.stderr
    (done,) = json.loads(result.stdout)
    assert (done["files"], done["rows"], done["sketches"]) == (3, 3000, 3)
    after = keel_cli("monitor", "adult", "-w", "1d", "-f", "json", cwd=trained)
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert json.loads(after.stdout)["rows"] == 3000
    text = keel_cli("monitor", "compact", cwd=trained)  # every model; nothing left to do
    assert text.returncode == 0 and "adult: 0 files" in text.stdout
    unknown = keel_cli("monitor", "compact", "nosuch", cwd=trained)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr + unknown.stdout
    assert "nosuch" in unknown.stderr + unknown.stdout


def time_name(at: float) -> str:
    import time

    return time.strftime("%Y-%m-%d", time.gmtime(at))


def test_a_second_compaction_at_the_same_time_leaves_the_log_to_the_first(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    import fcntl

    root = write_log(adult_rows[:500], start=T0, gap=20)
    old_mtimes(root)
    lock = root / "adult" / COMPACTED / ".lock"
    lock.parent.mkdir(parents=True)
    with lock.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # another process is compacting
        busy = run(root, adult_reference)
        assert busy.files == 0 and "another compaction" in busy.notes[0]
        assert len(list(root.rglob("*.jsonl"))) == 1
    assert run(root, adult_reference).files == 1


def test_parquet_keeps_each_rows_request_fields(
    adult_reference: Any, adult_rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    import os

    import orjson
    import pyarrow.parquet as pq

    folder = tmp_path / "predictions" / "adult" / time_name(T0)
    folder.mkdir(parents=True)
    records = [
        {"request_id": f"q{i}", "time": T0 + i, "model": "adult", "model_version": "1",
         "role": "canary" if i % 2 else None, "feature_pipeline": "abc",
         "hashed": ["fnlwgt"] if i % 2 else None, "inputs": adult_rows[3 * i : 3 * i + 3],
         "predictions": ["<=50K"] * 3, "probabilities": [0.1, 0.2, 0.3]}
        for i in range(40)
    ]  # fmt: skip
    path = folder / "7-rec.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    os.utime(path, (T0 + 3 * DAY, T0 + 3 * DAY))
    done = run(tmp_path / "predictions", adult_reference)
    assert (done.rows, done.parts) == (120, 2)
    canary = pq.read_table(next((tmp_path / "predictions").rglob("role=canary/*/*.parquet")))
    assert canary.column("request_id").to_pylist()[:4] == ["q1", "q1", "q1", "q3"]
    assert set(canary.column("role").to_pylist()) == {"canary"}
    assert canary.column("hashed").to_pylist()[0] == ["fnlwgt"]
    assert canary.column("feature_pipeline").to_pylist()[0] == "abc"
    primary = pq.read_table(next((tmp_path / "predictions").rglob("role=primary/*/*.parquet")))
    assert primary.num_rows == 60 and primary.column("hashed").null_count == 60


def test_lineage_finds_compacted_requests(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    from keel.serve.lookup import LoggedPredictions

    root = write_log(adult_rows[:300], start=T0, gap=20)  # 30 requests of 10 rows
    old_mtimes(root)
    logged = LoggedPredictions(root)
    before = logged.find("r20"), logged.of_version("adult", 1, 5)
    run(root, adult_reference)
    assert not list(root.rglob("*.jsonl"))
    after = logged.find("r20"), logged.of_version("adult", 1, 5)
    assert after[0] is not None and before[0] is not None
    assert (after[0].model, after[0].version, after[0].rows, after[0].role) == (
        "adult",
        1,
        10,
        "primary",
    )
    assert after[0].time == before[0].time
    assert after[1][0] == before[1][0] == 30 and len(after[1][1]) == 5
    assert logged.find("nope") is None and logged.of_version("adult", 2, 5) == (0, [])
