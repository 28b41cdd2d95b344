"""The filter and sort languages: what parses, what it means, and the errors for what does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keel.errors import ConfigError
from keel.tracking import Condition, Order, parse_filter, parse_sort


def test_the_documented_example_parses() -> None:
    text = ('metrics.roc_auc > 0.9 and params.num_leaves <= 64 and tags.team = "x" '
            'and step = "train" and status = "succeeded"')  # fmt: skip
    assert parse_filter(text) == [
        Condition("metrics", "roc_auc", ">", 0.9),
        Condition("params", "num_leaves", "<=", 64),
        Condition("tags", "team", "=", "x"),
        Condition("run", "step", "=", "train"),
        Condition("run", "status", "=", "succeeded"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.val.auc >= -1e-3", Condition("metrics", "val.auc", ">=", -0.001)),
        ("params.`odd key` == 'a \\'b'", Condition("params", "odd key", "=", "a 'b")),
        ("params.deterministic != TRUE", Condition("params", "deterministic", "!=", True)),
        ('status in ("failed", "cached")', Condition("run", "status", "in", ("failed", "cached"))),
        ("duration < 2.5", Condition("run", "duration", "<", 2.5)),
        ('started_at >= "2026-11-01"',
         Condition("run", "started_at", ">=", datetime(2026, 11, 1, tzinfo=UTC))),
        ("tags.fold = 3", Condition("tags", "fold", "=", 3)),
    ],
)  # fmt: skip
def test_forms(text: str, expected: Condition) -> None:
    assert parse_filter(text) == [expected]


def test_empty_filter_means_everything() -> None:
    assert parse_filter(None) == parse_filter("  ") == []


@pytest.mark.parametrize(
    ("text", "position", "why"),
    [
        ("metrics.roc_auc >> 0.9", 18, "expected a value"),
        ('metrics.roc_auc > "high"', 19, "compares with a number"),
        ("metric.roc_auc > 0.9", 1, "did you mean 'metrics'?"),
        ("metrics.a > 1 or metrics.b > 2", 15, "only 'and'"),
        ('status = "done"', 10, "status is one of running, succeeded, failed, cached"),
        ("metrics.a > 1 and", 18, "expected a condition after 'and'"),
        ("metrics.a 1", 11, "expected an operator"),
        ("params.x = 1 params.y = 2", 14, "expected 'and' or the end"),
        ('step in ("a" "b")', 14, "expected ',' or ')'"),
        ("step = train", 8, "expected a value"),
        ("step = 3", 8, "step compares with quoted text"),
        ('started_at > "yesterday"', 14, "not a date or time"),
        ("metrics.a > 1 ; drop table runs", 15, "unexpected character ';'"),
        ("metrics.a >", 12, "the filter ends"),
    ],
)
def test_bad_expressions_name_the_position_and_the_valid_forms(
    text: str, position: int, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_filter(text)
    message = caught.value.message
    assert f"filter at position {position}: " in message
    assert why in message
    assert text in message and "valid forms" in message
    assert caught.value.exit_code == 2 and caught.value.field == "filter"


def test_sort() -> None:
    assert parse_sort("metrics.roc_auc desc, duration") == [
        Order("metrics", "roc_auc", descending=True),
        Order("run", "duration", descending=False),
    ]
    assert parse_sort("params.num_leaves ASC") == [Order("params", "num_leaves")]
    assert parse_sort(None) == []
    with pytest.raises(ConfigError, match="direction 'down' must be asc or desc"):
        parse_sort("metrics.auc down")
    with pytest.raises(ConfigError, match="unknown field 'colour'"):
        parse_sort("colour")
    with pytest.raises(ConfigError, match="expected FIELD"):
        parse_sort("metrics.auc,,duration")
