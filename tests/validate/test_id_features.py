"""A model input that names rows (an id, a row counter) is a validation finding (`id_feature`):
a warning with the column and the fix by default, an error where the schema's severities say
so; the example projects' inputs give none; `keel run` says it among the run's warnings."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from keel.config import load_config
from keel.data import read_source
from keel.validate.anomalies import validate_data
from keel.validate.schema import ColumnSchema, Schema, infer_schema
from keel.validate.statistics import compute_statistics

REPO = Path(__file__).resolve().parents[2]
BIKES = REPO / "examples" / "bike-sharing"


def _id_findings(report: Any) -> list[Any]:
    return [a for a in report.anomalies if a.kind == "id_feature"]


def _with_id(schema: Schema, **column: Any) -> Schema:
    columns = dict(schema.columns) | {"id": ColumnSchema(**column)}
    return Schema(columns=columns, severities=dict(schema.severities))


@pytest.fixture(scope="module")
def bikes() -> tuple[pa.Table, dict[str, Any]]:
    config = load_config(BIKES, env="")
    table = read_source(config.data.train, BIKES)
    return table, compute_statistics(table)


def test_adult_with_an_id_column_as_input_is_warned_with_the_fix(
    adult_train_table: pa.Table, adult_schema: Schema
) -> None:
    assert not _id_findings(validate_data(adult_train_table, schema=adult_schema, name="train"))
    ids = np.random.default_rng(0).permutation(adult_train_table.num_rows) + 1000
    table = adult_train_table.append_column("id", pa.array(ids))
    schema = _with_id(adult_schema, type="int", role="feature")
    report = validate_data(table, schema=schema, name="train")
    [finding] = _id_findings(report)
    assert (finding.column, finding.severity, finding.details["kind"]) == ("id", "warning", "id")
    assert "train: column 'id' is a model input but looks like an identifier" in finding.message
    assert "'role: entity'" in finding.message and "data.drop" in finding.message
    assert report.ok  # a warning does not stop a run
    entity = _with_id(adult_schema, type="int", role="entity")
    assert not _id_findings(validate_data(table, schema=entity, name="train"))
    stricter = _with_id(
        adult_schema, type="int", role="feature", severities={"id_feature": "error"}
    )
    strict = validate_data(table, schema=stricter, name="train")
    [blocking] = _id_findings(strict)
    assert blocking.severity == "error" and not strict.ok
    assert "(a warning" in finding.message and "(a warning" not in blocking.message


def test_bike_sharing_counter_is_found_unless_dropped(
    bikes: tuple[pa.Table, dict[str, Any]],
) -> None:
    table, statistics = bikes
    kept = infer_schema(statistics, target="cnt")  # a keel.yaml without drop: [instant, ...]
    assert kept.columns["instant"].role == "feature"  # 1..17379 with test days missing
    [finding] = _id_findings(validate_data(table, schema=kept, target="cnt", name="train"))
    assert finding.column == "instant" and finding.details["kind"] == "counter"
    assert "rises by one from row to row" in finding.message
    config = load_config(BIKES, env="")
    dropped = infer_schema(statistics, target="cnt", drop=config.data.drop)
    assert not _id_findings(validate_data(table, schema=dropped, target="cnt", name="train"))
    # the test split is compared with a reference: judged once, on the training data
    assert not _id_findings(validate_data(table, schema=kept, reference=statistics, name="test"))


def test_a_streamed_parquet_file_with_a_text_id_is_judged_on_its_head(
    tmp_path: Path, adult_train_table: pa.Table, adult_schema: Schema
) -> None:
    rows = adult_train_table.num_rows
    text_ids = pa.array([f"C-{i:06d}" for i in range(rows)])  # strings: dictionary-encoded
    path = tmp_path / "train.parquet"
    pq.write_table(adult_train_table.append_column("id", text_ids), path, row_group_size=5000)
    schema = _with_id(adult_schema, type="string", role="feature")
    [finding] = _id_findings(validate_data(path, schema=schema, name="train.parquet"))
    assert finding.column == "id" and "32,561 distinct values in 32,561 rows" in finding.message


def test_keel_run_warns_of_an_input_that_names_rows(tmp_path: Path) -> None:
    root = tmp_path / "bikes"
    shutil.copytree(BIKES, root, ignore=shutil.ignore_patterns(".keel", "schema.yaml"))
    config = root / "keel.yaml"
    text = config.read_text().replace("drop: [casual, registered, instant, dteday]",
                                      "drop: [casual, registered, dteday]")  # fmt: skip
    config.write_text(re.sub(r"n_estimators: \d+", "n_estimators: 30", text))
    summary = keel.run(root)
    [validate] = [s for s in summary["steps"] if s["step"] == "validate"]
    warning = validate["warnings"][0]  # the run's other validation warnings come after it
    assert "train: column 'instant' is a model input but looks like an identifier" in warning
