"""The baseline of an A/B comparison is the arm of the version the alias holds (``2/ab`` in an
A/B test, where no arm is ``primary``), and the notes agree with what was left out: Adult rows
logged as a trial's A/B test (issue 16), labels joined from the feedback store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from keel.monitor.arms import compare_joined
from keel.monitor.performance import join_labels
from keel.store import MetadataStore
from keel.store.database import Database
from keel.store.feedback_store import read_live
from tests.monitor.test_performance import CLASSES, SPEC, label, scores_for, write_requests


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as store:
        yield store.database


@pytest.fixture(scope="module")
def truth(adult_test_table: pa.Table) -> np.ndarray:
    return np.array(adult_test_table["income"].to_pylist(), dtype=object)


def _logged(
    db: Database, root: Path, rows: list[dict[str, Any]], truth: np.ndarray, arms: dict[str, int]
) -> None:
    """Each ``"version/role"`` arm logs that many labelled Adult rows (its own rows)."""
    start = 0
    for seed, (arm, n) in enumerate(arms.items()):
        version, role = arm.split("/")
        scores = scores_for(truth[start : start + n], 0.5, seed)
        where = write_requests(root, rows[start : start + n], scores, prefix=f"r{seed}x",
                               version=version, role=role)  # fmt: skip
        label(db, [(r, i, k + start) for r, i, k in where], truth, root)
        start += n


def test_an_ab_tests_baseline_is_the_alias_versions_arm(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], truth: np.ndarray
) -> None:
    root = tmp_path / "predictions"
    _logged(db, root, adult_rows, truth, {"1/ab": 300, "2/ab": 300, "2/primary": 20})
    joined = join_labels(root, SPEC, read_live(db, "adult"))
    compared = compare_joined("adult", "binary", CLASSES, joined, min_rows=100, baseline="2")
    assert compared.baseline == "2/ab"  # not 1/ab, the lowest version
    assert [arm.name for arm in compared.arms] == ["2/ab", "1/ab"]
    assert {t.baseline for t in compared.tests} == {"2/ab"}
    assert compared.notes == (
        "arms with fewer than 100 labels (monitor.min_rows) are left out: 2/primary (20)",
    )


def test_notes_agree_with_what_was_left_out_and_name_the_baseline(
    db: Database, tmp_path: Path, adult_rows: list[dict[str, Any]], truth: np.ndarray
) -> None:
    root = tmp_path / "predictions"
    _logged(db, root, adult_rows, truth, {"1/ab": 150, "2/primary": 40, "1/shadow": 30})
    joined = join_labels(root, SPEC, read_live(db, "adult"))
    compared = compare_joined("adult", "binary", CLASSES, joined, min_rows=100, baseline="2")
    assert compared.baseline == "1/ab"
    left, one, why = compared.notes
    assert left.endswith("left out: 2/primary (40), 1/shadow (30)")
    # not "fewer than two arms have labels" right after listing two arms that have some
    assert "fewer than two arms have 100 labels or more (only 1/ab)" in one
    assert "lower monitor.min_rows" in one
    assert why == (
        "the baseline is 1/ab: version 2 (the one the alias holds) has no arm with 100 labels "
        "or more."
    )
    none = compare_joined("adult", "binary", CLASSES, joined, min_rows=1000, baseline="2")
    assert none.baseline is None and none.arms == ()
    assert none.notes[-1].startswith("fewer than two arms have 1000 labels or more (none)")
