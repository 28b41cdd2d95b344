"""A labelled log is read once: drift and the label join come from the same blocks.

The readers are wrapped to count their calls per file, on a labelled JSON Lines log and on the
same log compacted to Parquet (rows read, and stored sketches merged), and the realised
performance of the one read equals the label reader's own join (``join_labels``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from keel.monitor import labelled, window
from keel.monitor.compact import LoggedVersions, compact_log
from keel.monitor.feedback import LabelSpec
from keel.monitor.performance import LabelJoin, join_labels, realised_performance
from keel.monitor.report import MonitorSettings, monitor_log
from keel.monitor.window import parse_window
from keel.store import MetadataStore
from keel.store.database import Database
from keel.store.feedback_store import read_live
from tests.monitor.conftest import DAY, T0
from tests.monitor.test_performance import SPEC, label, scores_for, write_requests

READERS = (
    (window, "read_jsonl"),
    (window, "read_parquet"),
    (labelled, "_read_file"),
    (labelled, "_read_part"),
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        yield store.database


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """(reader, folder/file) -> calls, for every reader of the log's files."""
    counted: Counter[tuple[str, str]] = Counter()
    for module, name in READERS:
        original = getattr(module, name)

        def wrapped(path: Path, *args: Any, _f: Any = original, _n: str = name, **kw: Any) -> Any:
            counted[(_n, _key(Path(path)))] += 1
            return _f(path, *args, **kw)

        monkeypatch.setattr(module, name, wrapped)
    return counted


@pytest.fixture
def labelled_log(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], adult_test_table: pa.Table
) -> Path:
    """1,200 Adult rows over two days in two files (240 requests), every other row labelled."""
    truth = np.array(adult_test_table["income"].to_pylist()[:1200], dtype=object)
    root = tmp_path / "predictions"
    scores = scores_for(truth, 0.6, 3)
    where = write_requests(root, adult_rows[:1200], scores, prefix="q")
    label(db, where[::2], truth, root)
    return root


def one_read(reference: Any, db: Database, root: Path, spec: str) -> tuple[Any, Any]:
    join = LabelJoin(SPEC, read_live(db, "adult"))
    settings = MonitorSettings(window=parse_window(spec), min_rows=50)
    report = monitor_log(reference, root, settings=settings, join=join)
    realised = realised_performance(
        join.joined(), SPEC, settings.window, labels=600, min_rows=50
    ).to_dict()
    return report, realised


def by_the_label_reader(db: Database, root: Path, spec: str) -> Any:
    joined = join_labels(root, SPEC, read_live(db, "adult"), window=parse_window(spec))
    return realised_performance(joined, SPEC, parse_window(spec), labels=600, min_rows=50).to_dict()


def compact(root: Path, reference: Any) -> None:
    for path in root.rglob("*.jsonl"):
        os.utime(path, (T0 + 3 * DAY, T0 + 3 * DAY))  # closed long ago
    versions = LoggedVersions({"1": reference})
    done = compact_log(root / "adult", lambda: versions, now=T0 + 30 * DAY)
    assert done.rows == 1200 and done.parts == 2


@pytest.mark.parametrize("spec", ["1d", "300rows"])
def test_a_labelled_json_lines_log_is_read_once(
    adult_reference: Any,
    db: Database,
    labelled_log: Path,
    reads: Counter[tuple[str, str]],
    spec: str,
) -> None:
    report, realised = one_read(adult_reference, db, labelled_log, spec)
    files = sorted(_key(p) for p in labelled_log.rglob("*.jsonl"))
    assert len(files) == 2
    assert reads == Counter({("read_jsonl", f): 1 for f in files})  # once each, no label read
    assert realised["labelled"] == 600 and realised["windows"]
    assert [w["rows"] for w in realised["windows"]] == [w.rows for w in report.windows]
    reads.clear()
    assert realised == by_the_label_reader(db, labelled_log, spec)  # what the join found before
    assert sum(n for (reader, _), n in reads.items() if reader == "_read_file") == 2


def test_a_labelled_parquet_log_is_read_once(
    adult_reference: Any, db: Database, labelled_log: Path, reads: Counter[tuple[str, str]]
) -> None:
    expected = by_the_label_reader(db, labelled_log, "1d")
    compact(labelled_log, adult_reference)
    for sketch in labelled_log.rglob("*.sketch"):
        sketch.unlink()  # no stored counts: the parts' rows are read, for drift and labels
    reads.clear()
    report, realised = one_read(adult_reference, db, labelled_log, "1d")
    parts = sorted(_key(p) for p in labelled_log.rglob("*.parquet"))
    assert reads == Counter({("read_parquet", p): 1 for p in parts})
    assert realised == expected
    assert report.overall.rows == 1200


def test_parts_with_stored_sketches_are_read_for_labels_only(
    adult_reference: Any, db: Database, labelled_log: Path, reads: Counter[tuple[str, str]]
) -> None:
    rows_read = monitor_log(
        adult_reference, labelled_log, settings=MonitorSettings(window=parse_window("1d"))
    ).to_dict()
    expected = by_the_label_reader(db, labelled_log, "1d")
    compact(labelled_log, adult_reference)
    reads.clear()
    report, realised = one_read(adult_reference, db, labelled_log, "1d")
    parts = sorted(_key(p) for p in labelled_log.rglob("*.parquet"))
    # drift from the sketches, the parts read once for their request ids
    assert reads == Counter({("_read_part", p): 1 for p in parts})
    assert realised == expected
    again = replace(report, settings=replace(report.settings, min_rows=100)).to_dict()
    assert again["windows"] == rows_read["windows"]


def test_key_labels_join_from_the_drift_readers_blocks(
    adult_reference: Any,
    db: Database,
    tmp_path: Path,
    adult_rows: list[dict[str, Any]],
    adult_test_table: pa.Table,
    reads: Counter[tuple[str, str]],
) -> None:
    from keel.monitor.feedback import submit_labels

    spec = LabelSpec("adult", "binary", SPEC.classes, {"fnlwgt": pa.float64()})
    truth = np.array(adult_test_table["income"].to_pylist()[:400], dtype=object)
    root = tmp_path / "keyed"
    write_requests(root, adult_rows[:400], scores_for(truth, 0.6, 4), prefix="k")
    items = [{"key": {"fnlwgt": r["fnlwgt"]}, "label": truth[i]} for i, r in
             enumerate(adult_rows[:400]) if i % 3 == 0]  # fmt: skip
    result = submit_labels(db, spec, items, log_dir=root, now=T0 + DAY)
    assert result.counts["rejected"] == 0
    reads.clear()  # the submission looked the keys up in the log
    join = LabelJoin(spec, read_live(db, "adult"))
    monitor_log(adult_reference, root, settings=MonitorSettings(min_rows=50), join=join)
    assert set(reads.values()) == {1} and {r for r, _ in reads} == {"read_jsonl"}
    one = join.joined()
    two = join_labels(root, spec, read_live(db, "adult"))
    assert one.rows == two.rows >= len(items)
    assert list(one.request_id) == list(two.request_id) and list(one.label) == list(two.label)
