"""The HTML report: self-contained, every anomaly shown, charts for each column, text escaped."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from keel.validate.anomalies import ColumnProfile, validate_data
from keel.validate.report import bar_chart
from keel.validate.schema import Schema


def test_report_shows_every_anomaly_and_every_column(
    adult_test_table: pa.Table, adult_statistics: dict[str, Any], adult_schema: Schema
) -> None:
    mutated = adult_test_table.rename_columns(
        ["Age" if n == "age" else n for n in adult_test_table.column_names]
    )
    report = validate_data(mutated, schema=adult_schema, reference=adult_statistics, name="test")
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?https?:""", page)  # no CDN, nothing fetched
    assert "<script" not in page
    assert "FAILED" in page and "missing_column" in page
    for anomaly in report.anomalies:
        assert anomaly.kind in page
    # one chart per column of the data, with reference and current bars where both exist
    assert page.count("<svg") == len(mutated.column_names)
    assert 'aria-label="distribution of workclass"' in page
    assert page.count('fill="#9aa5b1"') > 0  # reference bars


def test_names_and_values_are_escaped() -> None:
    table = pa.table({"<b>x</b>": ["<script>alert(1)</script>"] * 3})
    page = validate_data(table, name="<i>data</i>").to_html()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<i>data</i>" not in page


def test_many_categories_are_folded_into_one_bar() -> None:
    labels = [f"c{i}" for i in range(100)]
    share = list(np.full(100, 0.01))
    svg = str(bar_chart(ColumnProfile("c", "categorical", labels, share, share)))
    assert svg.count("<rect") == 2 * 30
    assert "(71 more)" in svg
