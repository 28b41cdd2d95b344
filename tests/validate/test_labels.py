"""Label checks: class-prior shift against the reference, and flipped labels found by cleanlab."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.anomalies import validate_data
from keel.validate.labels import feature_matrix, find_label_noise, is_classes
from keel.validate.schema import Schema


def test_resampled_label_mix_is_a_label_shift(
    adult_train_table: pa.Table, adult_statistics: dict[str, Any], adult_schema: Schema
) -> None:
    rich = pc.equal(adult_train_table["income"], ">50K")
    # keep every >50K row and a fifth of the others: 24% -> about 61% positive
    keep = pc.or_(rich, pa.array(np.random.default_rng(0).random(adult_train_table.num_rows) < 0.2))
    shifted = adult_train_table.filter(keep)
    report = validate_data(shifted, schema=adult_schema, reference=adult_statistics)
    labels = [a for a in report.anomalies if a.kind == "label_shift"]
    assert [(a.column, a.severity) for a in labels] == [("income", "error")]
    share = labels[0].details["proportions"][">50K"]
    assert abs(share["reference"] - 0.2408) < 0.001
    assert 0.55 < share["current"] < 0.65
    assert not [
        a for a in report.anomalies if a.kind == "distribution_shift" and a.column == "income"
    ]


def test_is_classes() -> None:
    assert is_classes({"kind": "categorical"})
    assert is_classes({"kind": "numeric", "distinct": 2})
    assert not is_classes({"kind": "numeric", "distinct": 500})


def test_feature_matrix_codes_categories_and_keeps_nulls() -> None:
    table = pa.table({"x": [1.0, None, 3.0], "c": ["a", "b", None]})
    matrix = feature_matrix(table, ["x", "c"])
    assert matrix.shape == (3, 2)
    assert np.isnan(matrix[1, 0]) and np.isnan(matrix[2, 1])
    assert matrix[0, 1] != matrix[1, 1]


def _separable(rows: int, flipped: float, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    label = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    flips = np.flatnonzero(rng.random(rows) < flipped)
    label[flips] = np.where(label[flips] == "yes", "no", "yes")
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": label})
    return table, flips


def test_flipped_labels_are_found_by_row_id() -> None:
    table, flips = _separable(4000, 0.03)
    found = find_label_noise(table, "y", name="d", examples=1000)
    assert [(a.column, a.kind, a.severity) for a in found] == [("y", "label_noise", "warning")]
    ids = set(found[0].details["row_ids"])
    recall = len(ids & set(flips.tolist())) / len(flips)
    precision = len(ids & set(flips.tolist())) / len(ids)
    assert recall > 0.7 and precision > 0.6, (recall, precision)
    assert found[0].details["sampled"] == 4000


def test_label_noise_samples_at_most_max_rows() -> None:
    table, _ = _separable(3000, 0.05)
    found = find_label_noise(table, "y", max_rows=1000)
    assert found[0].details["sampled"] == 1000
    assert max(found[0].details["row_ids"]) < 3000


def test_no_label_noise_check_without_classes() -> None:
    table = pa.table({"x": np.arange(100.0), "y": np.arange(100.0) * 2})
    assert find_label_noise(table, "y") == []  # a regression target
    assert find_label_noise(table, None) == []
    assert find_label_noise(table, "missing") == []
