"""Submitting labels: one typed answer per item, and nothing a bad item carries is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from keel.errors import DataValidationError
from keel.monitor.feedback import MAX_ITEMS, LabelSpec, RecentIds, submit_labels
from keel.monitor.labelled import read_logged
from keel.store import MetadataStore
from keel.store.database import Database
from keel.store.feedback_store import count_live, read_live
from tests.monitor.conftest import DAY, T0, Writer

SPEC = LabelSpec("adult", "binary", ("<=50K", ">50K"), {})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        yield store.database


@pytest.fixture
def logged(write_log: Writer, adult_rows: list[dict[str, Any]]) -> Path:
    """50 rows in 5 requests r0, r10, ... r40 of 10 instances each."""
    return write_log(adult_rows[:50], per_request=10)


def submit(db: Database, root: Path, items: list[Any], **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("now", T0 + DAY)
    return [i.to_dict() for i in submit_labels(db, SPEC, items, log_dir=root, **kw).items]


def test_each_item_gets_its_own_answer(db: Database, logged: Path) -> None:
    answers = submit(
        db,
        logged,
        [
            {"request_id": "r0", "label": ">50K"},
            {"request_id": "r10", "instance": 3, "label": "<=50K"},
            {"request_id": "nope", "label": ">50K"},
            {"request_id": "r20", "label": ">60K"},
            {"request_id": "r30"},
            {"label": ">50K"},
            {"request_id": "r20", "instance": 10, "label": ">50K"},
            {"request_id": "r0", "label": "<=50K"},
            {"request_id": "r40", "lable": ">50K"},
            "r40",
            {"key": {"id": 1}, "label": ">50K"},
            {"request_id": "r40", "label": [1]},
        ],
    )
    status = [a["status"] for a in answers]
    assert status[:2] == ["accepted", "accepted"]
    assert status[2:] == ["rejected"] * 10
    reasons = [a.get("reason", "") for a in answers]
    assert "unknown request id 'nope'" in reasons[2]
    assert "'>60K' is not one of the target's values (<=50K, >50K)" in reasons[3]
    assert "missing field 'label'" in reasons[4]
    assert "either 'request_id' or 'key'" in reasons[5]
    assert "had 10 instance(s); instance 10 is out of range" in reasons[6]
    assert "already has a label" in reasons[7] and "on_duplicate" in reasons[7]
    assert "unknown field(s) ['lable']" in reasons[8]
    assert "must be an object" in reasons[9]
    assert "monitor.feedback.key" in reasons[10]
    assert "one of the target's values" in reasons[11]
    live = read_live(db, "adult")
    assert [(x.request_id, x.instance, x.label) for x in live] == [
        ("r0", 0, ">50K"),
        ("r10", 3, "<=50K"),
    ]


def test_replace_keeps_the_old_label_as_replaced(db: Database, logged: Path) -> None:
    first = submit(db, logged, [{"request_id": "r0", "label": ">50K"}])
    again = submit(
        db,
        logged,
        [{"request_id": "r0", "label": "<=50K"}, {"request_id": "r0", "label": ">50K"}],
        on_duplicate="replace",
    )
    assert [a["status"] for a in again] == ["replaced", "replaced"]
    assert again[0]["replaced"] == first[0]["id"] and again[1]["replaced"] == again[0]["id"]
    assert count_live(db, "adult") == 1
    assert read_live(db, "adult")[0].label == ">50K"


def test_a_recently_issued_id_is_known_before_the_log_is_written(
    db: Database, tmp_path: Path
) -> None:
    recent = RecentIds(capacity=2)
    recent.add("adult", "fresh", [{}, {}])
    answers = submit(
        db,
        tmp_path / "empty-log",
        [{"request_id": "fresh", "instance": 1, "label": "<=50K"}],
        recent=recent,
    )
    assert answers[0]["status"] == "accepted"
    recent.add("adult", "b", [{}])
    recent.add("adult", "c", [{}])  # the capacity is 2: "fresh" is forgotten
    assert recent.instances("adult", "fresh") is None
    assert recent.instances("adult", "c") == 1


def test_labels_outside_max_delay_are_unknown(db: Database, logged: Path) -> None:
    late = submit(db, logged, [{"request_id": "r0", "label": ">50K"}], now=T0 + 40 * DAY)
    assert late[0]["status"] == "rejected" and "max_delay" in late[0]["reason"]
    kept = submit(
        db, logged, [{"request_id": "r0", "label": ">50K"}], now=T0 + 40 * DAY, max_delay="60d"
    )
    assert kept[0]["status"] == "accepted"


def test_regression_labels_must_be_finite_numbers(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec("bikes", "regression", (), {})
    recent = RecentIds()
    recent.add("bikes", "q", [{}])
    items: list[Any] = [
        {"request_id": "q", "label": "12.5"},
        {"request_id": "q", "label": "many"},
        {"request_id": "q", "label": float("nan")},
        {"request_id": "q", "label": True},
    ]
    result = submit_labels(db, spec, items, log_dir=tmp_path, recent=recent)
    assert [i.status for i in result.items] == ["accepted", "rejected", "rejected", "rejected"]
    assert "not a finite number" in result.items[1].reason
    assert read_live(db, "bikes")[0].label == 12.5


def test_key_joined_labels(
    db: Database, write_log: Writer, adult_rows: list[dict[str, Any]]
) -> None:
    rows = [{**row, "txn": f"t{i}"} for i, row in enumerate(adult_rows[:30])]
    root = write_log(rows, per_request=10)
    spec = LabelSpec("adult", "binary", ("<=50K", ">50K"), {"txn": pa.string()})
    result = submit_labels(
        db,
        spec,
        [
            {"key": {"txn": "t5"}, "label": ">50K"},
            {"key": {"txn": "t999"}, "label": ">50K"},
            {"key": {"user": "t5"}, "label": ">50K"},
            {"key": {"txn": "t5"}, "label": "<=50K"},
        ],
        log_dir=root,
        now=T0 + DAY,
    )
    assert [i.status for i in result.items] == ["accepted", "rejected", "rejected", "rejected"]
    assert "has the key {'txn': 't999'}" in result.items[1].reason
    assert "exactly the columns ['txn']" in result.items[2].reason
    assert "already has a label" in result.items[3].reason
    block = next(read_logged(root, "adult", keys=dict(spec.key)))
    assert block.keys["txn"][5].as_py() == "t5" and block.instance[15] == 5


def test_a_batch_too_large_is_refused_whole(db: Database, tmp_path: Path) -> None:
    items = [{"request_id": "x", "label": ">50K"}] * (MAX_ITEMS + 1)
    with pytest.raises(DataValidationError, match="at most 10000 labels"):
        submit_labels(db, SPEC, items, log_dir=tmp_path)
    assert count_live(db, "adult") == 0


def test_recent_keys_answer_before_the_log(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec("adult", "binary", ("<=50K", ">50K"), {"age": pa.float64()})
    recent = RecentIds()
    recent.add("adult", "r", [{"age": 39}, {"age": "41"}], spec.key)
    result = submit_labels(
        db,
        spec,
        [{"key": {"age": 39.0}, "label": ">50K"}, {"key": {"age": 41}, "label": ">50K"},
         {"key": {"age": "old"}, "label": ">50K"}],
        log_dir=tmp_path,
        recent=recent,
    )  # fmt: skip
    assert [i.status for i in result.items] == ["accepted", "accepted", "rejected"]
    assert "key.age: 'old' is not a number" in result.items[2].reason
