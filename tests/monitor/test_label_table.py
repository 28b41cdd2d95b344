"""Labels held as columns: the hash lookup joins exactly what Arrow's set lookup joins, the
table streamed from the database equals the label rows it replaces, and ``since`` reads only
labels received after the selection starts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from keel.monitor import labelled
from keel.monitor.feedback import LabelSpec, submit_labels
from keel.monitor.label_table import CLOCK_SKEW_SECONDS, LabelTable, read_label_table
from keel.monitor.labelled import Lookup, joined_key, key_hashes
from keel.monitor.performance import join_labels
from keel.monitor.window import parse_window
from keel.store import MetadataStore
from keel.store.database import Database
from keel.store.feedback_store import read_live
from keel.store.tables import feedback
from tests.monitor.conftest import DAY, T0
from tests.monitor.test_performance import CLASSES, SPEC, scores_for, write_requests


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        yield store.database


def random_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Request ids of 1 to 40 characters, some of them not ASCII."""
    alphabet = [*"abcdefghijklmnopqrstuvwxyz0123456789-", "é", "ß", "→"]
    lengths = rng.integers(1, 41, size=n)
    return ["".join(rng.choice(alphabet, size=int(k))) for k in lengths]


def test_lookup_joins_what_arrow_set_lookup_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labelled, "_HASH_ROWS", 97)  # many chunks of keys of mixed lengths
    rng = np.random.default_rng(5)
    ids = random_ids(rng, 3000)
    instance = rng.integers(0, 12, size=len(ids))
    keys = joined_key([pa.array(ids), pa.array(instance)])
    lookup = Lookup(keys, np.arange(len(ids), dtype=np.int64) * 3)
    # a probe: labelled rows in another order, near misses (same id, other instance), strangers
    pick = rng.permutation(len(ids))[:1500]
    probe_ids = [ids[i] for i in pick] + [ids[i] for i in pick[:300]] + random_ids(rng, 500)
    probe_instance = np.concatenate([instance[pick], instance[pick[:300]] + 1, np.zeros(500)])
    columns = [pa.array(probe_ids), pa.array(probe_instance.astype(np.int64))]
    rows, found = lookup.find(columns)
    expected = pc.index_in(joined_key(columns), value_set=keys)
    expected_rows = np.flatnonzero(expected.is_valid().to_numpy(zero_copy_only=False))
    assert rows.tolist() == expected_rows.tolist()
    assert len(rows) >= 1500
    at = expected.take(pa.array(expected_rows)).to_numpy()
    assert found.tolist() == (at * 3).tolist()


def test_a_key_hash_depends_on_the_key_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labelled, "_HASH_ROWS", 4)
    keys = pa.array(["a", "b" * 70, "short", "", "ümlaut-ß", "x" * 9, "y" * 8])
    whole, _ = key_hashes(keys)
    alone = [key_hashes(pa.array([k]))[0][0] for k in keys.to_pylist()]
    assert whole.tolist() == [int(h) for h in alone]
    assert len(set(whole.tolist())) == len(keys)
    assert key_hashes(keys.slice(2, 3))[0].tolist() == whole[2:5].tolist()


def test_a_null_key_joins_nothing() -> None:
    keys = pa.array(["r1\x1f0", None, "r2\x1f0"])
    lookup = Lookup(keys, np.array([0, 1, 2], dtype=np.int64))
    rows, found = lookup.find([pa.array(["r2", None, "r1", "r3"]), pa.array([0, 0, 0, 0])])
    assert rows.tolist() == [0, 2]
    assert found.tolist() == [2, 0]


def labelled_log(
    db: Database, root: Path, rows: list[dict[str, Any]], truth: np.ndarray
) -> list[tuple[str, int, int]]:
    n = 600
    where = write_requests(root, rows[:n], scores_for(truth[:n], 0.6, 3), prefix="t")
    items = [{"request_id": r, "instance": i, "label": truth[k]} for r, i, k in where[::2]]
    result = submit_labels(db, SPEC, items, log_dir=root, now=T0 + DAY)
    assert result.counts["accepted"] == len(items)
    return where


def test_the_streamed_table_joins_like_the_label_rows(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], adult_test_table: pa.Table
) -> None:
    truth = np.array(adult_test_table["income"].to_pylist(), dtype=object)
    root = tmp_path / "predictions"
    labelled_log(db, root, adult_rows, truth)
    table = read_label_table(db, SPEC)
    rows = read_live(db, "adult")
    assert table.count == len(rows) == 300
    assert isinstance(table.values, pa.Array)
    assert table.values.to_pylist() == [str(r.label) for r in rows]
    window = parse_window("1d")
    streamed = join_labels(root, SPEC, table, window=window)
    listed = join_labels(root, SPEC, LabelTable.of(rows, SPEC), window=window)
    assert streamed.rows == listed.rows == 300
    for name in ("pane", "label", "prediction", "version", "role", "request_id", "instance"):
        assert getattr(streamed, name).tolist() == getattr(listed, name).tolist(), name
    assert set(streamed.label.tolist()) <= set(CLASSES)
    # the rows labelled are those written: each label is its row's truth
    assert streamed.pane_rows == listed.pane_rows


def test_since_reads_only_labels_received_after_the_selection_starts(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], adult_test_table: pa.Table
) -> None:
    truth = np.array(adult_test_table["income"].to_pylist(), dtype=object)
    labelled_log(db, tmp_path / "predictions", adult_rows, truth)
    received = datetime.fromtimestamp(T0 + DAY, UTC)
    with db.write() as conn:  # received a day after T0, the first 100 three days earlier
        old = datetime.fromtimestamp(T0 - 2 * DAY, UTC)
        conn.execute(feedback.update().values(received_at=received))
        conn.execute(feedback.update().where(feedback.c.id <= 100).values(received_at=old))
    assert read_label_table(db, SPEC).count == 300
    assert read_label_table(db, SPEC, since=T0).count == 200
    assert read_label_table(db, SPEC, since=T0 - 2 * DAY + CLOCK_SKEW_SECONDS).count == 300
    later = received.timestamp() + CLOCK_SKEW_SECONDS + 1
    assert read_label_table(db, SPEC, since=later).count == 0


def test_regression_labels_are_numbers_and_not_a_number_is_nan() -> None:
    spec = LabelSpec("bikes", "regression", (), {})
    table = LabelTable.of([], spec)
    assert table.count == 0
    assert table.take(np.zeros(0, dtype=np.int64)).tolist() == []
    from keel.store.feedback_store import LiveLabel

    rows = [LiveLabel(1, "r", 0, None, 12.5), LiveLabel(2, "r", 1, None, "abc")]
    table = LabelTable.of(rows, spec)
    values = table.take(np.array([0, 1]))
    assert values[0] == 12.5 and np.isnan(values[1])


def test_joining_labels_imports_no_pandas(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], adult_test_table: pa.Table
) -> None:
    """pyarrow imports pandas (0.85 s) for a Python ``str`` given to a compute function or an
    array's ``to_numpy``: the label join never gives it one."""
    import subprocess
    import sys

    truth = np.array(adult_test_table["income"].to_pylist(), dtype=object)
    root = tmp_path / "predictions"
    labelled_log(db, root, adult_rows, truth)
    code = (
        "import sys\n"
        "from keel.store import MetadataStore\n"
        "from keel.monitor.label_table import read_label_table\n"
        "from keel.monitor.performance import join_labels, realised_performance\n"
        "from keel.monitor.window import parse_window\n"
        "from tests.monitor.test_performance import SPEC\n"
        f"with MetadataStore('sqlite:///{tmp_path}/keel.db') as store:\n"
        "    table = read_label_table(store.database, SPEC)\n"
        "from pathlib import Path\n"
        f"joined = join_labels(Path({str(root)!r}), SPEC, table, window=parse_window('1d'))\n"
        "report = realised_performance(joined, SPEC, parse_window('1d'), labels=table.count,\n"
        "                            min_rows=100)\n"
        "heavy = [m for m in ('lightgbm', 'sklearn', 'scipy', 'pandas') if m in sys.modules]\n"
        "print('JOINED', joined.rows, 'HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).parents[2])  # fmt: skip
    assert "JOINED 300 HEAVY []" in result.stdout, result.stderr[-2000:]
