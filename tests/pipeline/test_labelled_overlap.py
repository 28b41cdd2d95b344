"""Retraining never trains on the rows it is tested on, on real UCI Adult rows.

- A labelled row whose feature values and label equal a test row is left out of training and
  counted (``rows_equal_to_test``): the rows a user predicted from the test file and labelled
  back would otherwise train the challenger that the gates and the champion comparison then
  judge on those same rows.
- Without ``data.test``, the declared data is split as in ``keel run`` (the same original test
  rows in every retrain) and the split's rule sends a share of the labelled rows to the test
  side, each row to the same side in every retrain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from rich.console import Console

import keel
from keel.data import read_snapshot
from keel.monitor.labelled import joined_key
from keel.pipeline.holdout import labelled_test_side, seeded_uniform
from keel.pipeline.labelled_rows import INSTANCE, REQUEST_ID, equal_rows
from keel.project import Project

ADULT = Path(__file__).resolve().parents[2] / "examples" / "adult"
TRAIN_ROWS, TEST_ROWS = 2000, 800


def _reference(rows: pa.Table, reference: pa.Table, columns: list[str]) -> np.ndarray:
    """The same question asked the slow, obvious way: row tuples in a set (NaN as None)."""

    def tuples(table: pa.Table) -> list[tuple[Any, ...]]:
        lists = [table.column(c).to_pylist() for c in columns]
        clean = [[None if isinstance(v, float) and v != v else v for v in c] for c in lists]
        return list(zip(*clean, strict=True))

    seen = set(tuples(reference))
    return np.array([row in seen for row in tuples(rows)], dtype=bool)


# --- equal rows ------------------------------------------------------------------------------


def test_rows_equal_to_a_test_row_are_found_exactly(
    adult_train_table: pa.Table, adult_test_table: pa.Table
) -> None:
    test = adult_test_table
    columns = test.column_names
    copied = test.slice(0, 300)
    assert copied.drop_null().num_rows < copied.num_rows  # Adult's "?": nulls compare too
    flipped = copied.set_column(
        columns.index("income"),
        "income",
        pc.if_else(pc.equal(copied.column("income"), ">50K"), "<=50K", ">50K"),
    )
    older = copied.set_column(0, "age", pc.add(copied.column("age"), 1000))
    production = adult_train_table.slice(0, 2000)
    rows = pa.concat_tables([copied, flipped, older, production])
    found = equal_rows(rows, test, columns)
    assert found.tolist() == _reference(rows, test, columns).tolist()
    assert found[:300].all()  # the test rows themselves, nulls included
    assert not found[600:900].any()  # no test row is 1000 years older
    # same features, another label: not the same row (unless another test row has it)
    assert found[300:600].sum() < 300
    assert not found[900:].any()  # genuine traffic (fnlwgt all but identifies a person)

    # the logged types differ (JSON numbers come back as floats; NaN where a null was sent):
    # the values still compare equal
    logged = copied.set_column(0, "age", pc.cast(copied.column("age"), pa.float64()))
    assert equal_rows(logged, test, columns).all()
    with_nan = logged.append_column("x", pa.array(np.full(300, np.nan)))
    nulls = test.append_column("x", pa.nulls(test.num_rows, pa.float64()))
    assert equal_rows(with_nan, nulls, [*columns, "x"]).all()
    minus_zero = with_nan.set_column(with_nan.num_columns - 1, "x", pa.array(np.full(300, -0.0)))
    zeros = test.append_column("x", pa.array(np.zeros(test.num_rows)))
    assert equal_rows(minus_zero, zeros, [*columns, "x"]).all()
    # only the named columns count; nothing to compare with: nothing is equal
    assert equal_rows(older, test, [c for c in columns if c != "age"]).all()
    assert not equal_rows(rows, test.slice(0, 0), columns).any()


def test_equal_rows_is_vectorised_on_the_whole_files(
    adult_train_table: pa.Table, adult_test_table: pa.Table
) -> None:
    import time

    columns = adult_test_table.column_names
    started = time.process_time()
    found = equal_rows(adult_train_table, adult_test_table, columns)
    cpu = time.process_time() - started
    assert found.tolist() == _reference(adult_train_table, adult_test_table, columns).tolist()
    assert cpu < 5.0, f"{cpu:.2f} CPU s for 32,561 x 16,281 rows"


# --- the holdout rule for labelled rows ------------------------------------------------------


def _identities(n: int, start: int = 0) -> pa.Array:
    ids = [f"{i // 7:032x}\x1f{i % 7}" for i in range(start, start + n)]
    return pa.array(ids, pa.string())


def test_a_labelled_row_keeps_its_side_whatever_came_back_with_it(
    adult_train_table: pa.Table, adult_test_table: pa.Table
) -> None:
    rows = adult_train_table.slice(0, 20000)
    identity = _identities(20000)
    holdout = {"method": "stratified", "test_fraction": 0.2, "seed": 42}
    sides, rule = labelled_test_side(
        rows, identity, train=adult_train_table, test=adult_test_table, holdout=holdout
    )
    assert rule == "request id and instance"
    assert 0.19 < sides.mean() < 0.21
    # a later retrain: a subset came back again, with new rows before and after them
    more = pa.concat_tables([adult_test_table.slice(0, 500), rows.slice(5000, 3000),
                             adult_test_table.slice(500, 500)])  # fmt: skip
    more_ids = pa.concat_arrays([_identities(500, 90000), identity[5000:8000],
                                 _identities(500, 95000)])  # fmt: skip
    again, _ = labelled_test_side(
        more, more_ids, train=adult_train_table, test=adult_test_table, holdout=holdout
    )
    assert again[500:3500].tolist() == sides[5000:8000].tolist()
    # the seed draws other sides; the same seed the same, in any process
    other, _ = labelled_test_side(rows, identity, train=adult_train_table,
                                  test=adult_test_table, holdout=holdout | {"seed": 7})  # fmt: skip
    assert 0.19 < other.mean() < 0.21 and (other != sides).mean() > 0.2
    assert seeded_uniform(pa.array(["a", "b", None]), 42).tolist() == pytest.approx(
        seeded_uniform(pa.array(["a", "b", ""]), 42).tolist()
    )


def test_groups_never_straddle_the_split(
    adult_train_table: pa.Table, adult_test_table: pa.Table
) -> None:
    """``group`` on occupation: a labelled row of a test group tests, of a training group
    trains, and a new group's rows all go to one side, chosen by a hash of its value."""
    column = "occupation"
    known = adult_train_table.filter(pc.is_valid(adult_train_table.column(column)))
    groups = pc.unique(known.column(column)).to_pylist()
    test_groups = sorted(groups)[:4]
    in_test = pc.is_in(known.column(column), value_set=pa.array(test_groups))
    test, train = known.filter(in_test), known.filter(pc.invert(in_test))
    rows = adult_test_table.filter(pc.is_valid(adult_test_table.column(column))).slice(0, 3000)
    renamed = pc.if_else(
        pc.equal(rows.column("workclass"), "Private"),
        pc.binary_join_element_wise(rows.column(column), "-new", ""),
        rows.column(column),
    )
    rows = rows.set_column(rows.column_names.index(column), column, renamed)
    holdout = {"method": "group", "column": column, "test_fraction": 0.3, "seed": 1}
    sides, rule = labelled_test_side(rows, _identities(3000), train=train, test=test,
                                     holdout=holdout)  # fmt: skip
    assert rule == "group of occupation"
    values = rows.column(column).to_pylist()
    for value, side in zip(values, sides.tolist(), strict=True):
        if value in test_groups:
            assert side
        elif value in groups:
            assert not side
    new = {v: {s for v2, s in zip(values, sides.tolist(), strict=True) if v2 == v}
           for v in set(values) if v.endswith("-new")}  # fmt: skip
    assert all(len(s) == 1 for s in new.values())  # a new group on one side only
    assert {True, False} == set().union(*new.values())
    # without the column in the logged rows: by identity
    _, rule = labelled_test_side(rows.drop_columns([column]), _identities(3000), train=train,
                                 test=test, holdout=holdout)  # fmt: skip
    assert rule == "request id and instance"


def test_a_time_split_tests_on_the_latest_labelled_rows(adult_test_table: pa.Table) -> None:
    """``time``: the latest ``test_fraction`` of the labelled rows by ``split.column`` test
    (ties together), the rest train; rows without a time train."""
    from datetime import date, timedelta

    rows = adult_test_table.slice(0, 1000)
    days = [date(2024, 1, 1) + timedelta(days=(i * 37) % 500) for i in range(1000)]
    days[:10] = [None] * 10
    rows = rows.append_column("day", pa.array(days, pa.date32()))
    holdout = {"method": "time", "column": "day", "test_fraction": 0.25, "seed": 0}
    sides, rule = labelled_test_side(rows, _identities(1000), train=rows, test=rows,
                                     holdout=holdout)  # fmt: skip
    assert rule == "latest by day"
    assert not sides[:10].any()  # no time: trains
    tested = [d for d, s in zip(days, sides.tolist(), strict=True) if s]
    trained = [d for d, s in zip(days, sides.tolist(), strict=True) if not s and d]
    assert min(tested) > max(trained)
    assert 0.24 * 990 <= len(tested) <= 0.27 * 990


# --- a retraining run on an Adult project ----------------------------------------------------


def _adult_project(root: Path, *, with_test: bool) -> Path:
    (root / "data").mkdir(parents=True)
    train_lines = (ADULT / "data" / "adult.data").read_text().splitlines(keepends=True)
    (root / "data" / "adult.data").write_text("".join(train_lines[:TRAIN_ROWS]))
    config = yaml.safe_load((ADULT / "keel.yaml").read_text())
    config["model"]["params"] = {"n_estimators": 20, "num_leaves": 15}
    config["model"].pop("early_stopping_rounds", None)
    # gates no version passes: no canary starts, so one retrain does not block the next
    config["evaluate"] = {"gates": ["roc_auc >= 0.9999"]}
    config["monitor"] = {"alerts": [{"name": "quiet", "when": "rows < 1000"}]}
    config["retrain"] = {"on": "quiet", "data": {"labelled_since": "30d", "min_rows": 5}}
    if with_test:
        test_lines = (ADULT / "data" / "adult.test").read_text().splitlines(keepends=True)
        (root / "data" / "adult.test").write_text("".join(test_lines[: TEST_ROWS + 1]))
    else:
        del config["data"]["test"]
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _labelled(rows: pa.Table, first: int) -> pa.Table:
    """Rows as the labelled window has them: the model inputs, identity, then the label."""
    ids = [f"req-{(first + i) // 10:06d}" for i in range(rows.num_rows)]
    instances = [(first + i) % 10 for i in range(rows.num_rows)]
    return (
        rows.drop_columns(["income"])
        .append_column(REQUEST_ID, pa.array(ids, pa.string()))
        .append_column(INSTANCE, pa.array(instances, pa.int64()))
        .append_column("income", rows.column("income"))
    )


def _retrain(root: Path, window: pa.Table, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The retraining policy for a new alert, its labelled window ``window`` (the serving log
    and the feedback store are the e2e test's: tests/e2e/test_retrain_loop.py)."""
    from datetime import UTC, datetime

    import keel.pipeline.retrain as retrain
    from keel.store.alert_store import AlertStore, NewAlert

    monkeypatch.setattr(retrain, "labelled_window", lambda *_: window)
    with Project(root) as project:
        alert = AlertStore(project.metadata.database).record(
            NewAlert(dedup_key=f"k{window.num_rows}", rule="quiet", model="adult", version="1",
                     role=None, severity="warning", condition="rows < 1000", window_start="0",
                     window_end="1", observed_at=datetime.now(UTC), value=1.0,
                     threshold=1000.0, message="quiet", evidence={})
        )  # fmt: skip
        assert alert is not None
        return retrain.run_policy(project, alert, console=Console(quiet=True)).to_dict()


def _steps(root: Path, run: str) -> dict[str, dict[str, Any]]:
    """Each step's tracked run in a pipeline run (inputs, outputs, params, warnings)."""
    steps = keel.api.get_pipeline_run(run, project=root)["steps"]
    return {s["step"]: keel.api.get_run(s["run_id"], project=root) for s in steps}


def _table(root: Path, sha: str) -> pa.Table:
    with Project(root) as project:
        return read_snapshot(project.artifacts, sha)


def test_rows_equal_to_the_declared_test_file_never_train(
    tmp_path: Path, adult_train_table: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _adult_project(tmp_path / "adult", with_test=True)
    first = keel.run(root)
    assert first["model"]["version"] == 1 and not first["model"]["promoted"]
    test_sha = next(s for s in first["steps"] if s["step"] == "ingest_test")["outputs"]
    test = _table(root, test_sha["test_snapshot"])
    columns = test.column_names
    # a user predicted 150 test rows and labelled them back; 400 rows are genuine traffic
    window = pa.concat_tables([
        _labelled(test.slice(100, 150), 0),
        _labelled(adult_train_table.slice(TRAIN_ROWS, 400), 150),
    ])  # fmt: skip
    expected = _reference(window, test, columns)
    assert expected[:150].all() and expected.sum() >= 150

    done = _retrain(root, window, monkeypatch)
    assert done["rows_equal_to_test"] == expected.sum()
    assert done["rows_added"] == window.num_rows - expected.sum()
    assert done["rows_to_test"] == 0
    assert f"left out: {expected.sum()} equal to test rows" in done["message"]
    steps = _steps(root, done["pipeline_run"])
    labelled = steps["labelled_rows"]
    assert any("left out: " in w for w in labelled["warnings"]), labelled["warnings"]
    assert labelled["params"]["rows_equal_to_test"] == expected.sum()  # keel runs show
    assert "test_snapshot" not in labelled["outputs"]  # the declared test file stays as it is
    assert steps["evaluate"]["inputs"]["test_snapshot"] == test_sha["test_snapshot"]
    trained_sha = labelled["outputs"]["train_snapshot"]
    with Project(root) as project:
        made = project.metadata.get_artifact(trained_sha)
    assert made.metadata["retrain"]["rows_equal_to_test"] == expected.sum()
    trained = _table(root, trained_sha)
    assert trained.num_rows == TRAIN_ROWS + done["rows_added"]
    assert not _reference(trained.slice(TRAIN_ROWS), test, columns).any()

    # keel run without the policy: the same cached pipeline, the same snapshots
    again = keel.run(root)
    assert {s["step"]: s["outputs"] for s in again["steps"]} == {
        s["step"]: s["outputs"] for s in first["steps"]
    }


def test_without_data_test_labelled_rows_join_the_split(
    tmp_path: Path, adult_test_table: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _adult_project(tmp_path / "adult", with_test=False)
    first = keel.run(root)
    split = next(s for s in first["steps"] if s["step"] == "split")["outputs"]
    declared_test = _table(root, split["test_snapshot"])
    declared_train = _table(root, split["train_snapshot"])
    columns = declared_test.column_names
    # production traffic: 1000 new rows, 60 rows of the declared test side, 60 training rows
    production = adult_test_table.slice(0, 1000)
    window = pa.concat_tables([
        _labelled(production, 0),
        _labelled(declared_test.slice(0, 60), 1000),
        _labelled(declared_train.slice(0, 60), 1060),
    ])  # fmt: skip

    done = _retrain(root, window, monkeypatch)
    steps = _steps(root, done["pipeline_run"])
    # the declared data splits as in keel run: the same original test rows
    assert steps["split"]["outputs"] == split
    labelled = steps["labelled_rows"]
    test_sha = labelled["outputs"]["test_snapshot"]
    assert steps["evaluate"]["inputs"]["test_snapshot"] == test_sha
    assert labelled["params"]["test_side_by"] == "request id and instance"
    test = _table(root, test_sha)
    trained = _table(root, labelled["outputs"]["train_snapshot"])
    to_test = done["rows_to_test"]
    assert 150 < to_test < 290  # about 20 % of 1120
    assert test.num_rows == declared_test.num_rows + to_test
    assert test.slice(0, declared_test.num_rows).equals(declared_test)
    assert trained.slice(0, declared_train.num_rows).equals(declared_train)
    # every labelled row is on one side, or left out for equalling a test row
    assert done["rows_added"] + to_test + done["rows_equal_to_test"] == window.num_rows
    # the same sides, worked out here: the rule, less the rows equal to a declared training row
    with Project(root) as project:  # the split as it ran, recorded with its test side
        facts = project.metadata.get_artifact(split["test_snapshot"]).metadata["holdout"]
    sides, _ = labelled_test_side(
        window, joined_key([window.column(REQUEST_ID), window.column(INSTANCE)]),
        train=declared_train, test=declared_test,
        holdout={"method": facts["method"], "test_fraction": facts["test_fraction"],
                 "seed": facts["seed"]},
    )  # fmt: skip
    seen = _reference(window, declared_train, columns)
    assert done["rows_equal_to_train"] == (sides & seen).sum() > 0
    assert to_test == (sides & ~seen).sum()
    assert done["rows_equal_to_test"] == _reference(window, test, columns)[~sides | seen].sum()
    assert done["rows_equal_to_test"] >= 40  # the declared test rows, bar those sent to test
    # no row trains that is tested on; no labelled test row is a declared training row
    added = trained.slice(declared_train.num_rows)
    assert not _reference(added, test, columns).any()
    assert not _reference(test.slice(declared_test.num_rows), declared_train, columns).any()

    # a later retrain: 300 more rows; the first window's rows keep their sides
    more = pa.concat_tables([window, _labelled(adult_test_table.slice(2000, 300), 5000)])
    later = _retrain(root, more, monkeypatch)
    # new rows: a new training snapshot and version (not the first window's, from the cache)
    assert later["status"] == done["status"] == "gates_failed", later
    assert later["version"] == done["version"] + 1
    steps2 = _steps(root, later["pipeline_run"])
    assert steps2["split"]["outputs"] == split
    test2 = _table(root, steps2["labelled_rows"]["outputs"]["test_snapshot"])
    assert _reference(test.slice(declared_test.num_rows), test2, columns).all()
    assert later["rows_to_test"] >= to_test
    assert test2.num_rows == declared_test.num_rows + later["rows_to_test"]
