"""The HTML monitoring report is one self-contained page (every section, inline SVG, no script,
no external URL) that html.parser reads; the Prometheus text holds the latest window's gauges."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from keel.monitor.html import render_html, render_prometheus
from keel.monitor.report import MonitorSettings, monitor_log
from keel.monitor.window import parse_window

from .conftest import DAY, T0, Writer

SECTIONS = {"summary", "drift", "drift-latest", "prediction-drift", "estimated-performance",
            "realised-performance", "latency", "alerts"}  # fmt: skip


class Page(HTMLParser):
    """Collects section ids, tags, and every attribute value."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: set[str] = set()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.charts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.attributes += [(k, v or "") for k, v in attrs]
        if tag == "section" and values.get("id"):
            self.sections.add(str(values["id"]))
        if tag == "svg":
            self.charts.append(str(values.get("data-chart")))


@pytest.fixture
def report(adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer) -> Any:
    rows = adult_rows[:3000]
    old = sorted(adult_rows, key=lambda r: -int(r["age"]))[:1000]
    for day, chunk in enumerate([rows[:1000], rows[1000:2000], old]):
        scores = np.random.default_rng(day).random(len(chunk))
        write_log(chunk, start=T0 + day * DAY, probabilities=scores)
    directory = write_log([], start=T0)
    settings = MonitorSettings(window=parse_window("1d"))
    data = monitor_log(adult_reference, directory, settings=settings).to_dict()
    # realised performance and latency as the feedback and serving reports add them
    for k, window in enumerate(data["windows"]):
        window["realised"] = {"status": "ok", "labelled": 500, "metrics": {
            "accuracy": {"value": 0.8 - 0.05 * k, "low": 0.7, "high": 0.9}}}  # fmt: skip
        window["latency"] = {"p50_ms": 3.0 + k, "p99_ms": 20.0 + 10 * k}
    return data


def alert(**extra: Any) -> dict[str, Any]:
    return {
        "id": 7, "severity": "critical", "rule": "age-<drift>", "message": "psi = 0.9 > 0.2",
        "window_start": "2023-11-17T00:00:00Z", "window_end": "2023-11-18T00:00:00Z",
        "value": 0.9, "status": "open", "fired_at": "2026-01-01T00:00:00+00:00", **extra,
    }  # fmt: skip


def test_page_has_every_section_inline_svg_and_nothing_external(report: Any) -> None:
    context = [{"start": w["start"], "end": w["end"], "value": 0.1 * k}
               for k, w in enumerate(report["windows"])]  # fmt: skip
    evidence = {"quantity": "drift.age.psi", "windows": context[-1:], "context": context}
    text = render_html(report, [alert(evidence=evidence, threshold=0.15, condition="x")])
    page = Page()
    page.feed(text)
    page.close()
    assert page.sections == SECTIONS
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert not re.search(r"https?://|//[a-z]", text, re.IGNORECASE)
    assert not [(k, v) for k, v in page.attributes if k in ("src", "href")]
    charts = set(page.charts)
    assert {"drift-heatmap", "drift-latest", "prediction-drift", "estimated-roc_auc",
            "estimated-accuracy", "realised-accuracy", "latency",
            "alert-evidence"} <= charts  # fmt: skip
    # drift per feature over time: one cell per feature and window, the sorted day is drift
    cells = re.findall(r"<title>age (\S+): PSI ([\d.]+) \((\w+)\)</title>", text)
    assert [c[0][:10] for c in cells] == ["2023-11-15", "2023-11-16", "2023-11-17"]
    assert cells[-1][2] == "drift" and cells[0][2] != "drift"
    # the estimate's error band, the realised line on the same chart, the escaped alert
    assert "fill-opacity" in text and "realised roc_auc" not in text
    assert "realised accuracy" in text and "age-&lt;drift&gt;" in text


def test_page_says_what_is_missing(report: Any) -> None:
    for window in report["windows"]:
        del window["realised"], window["latency"]
        window["performance"] = None
    text = render_html(report, [])
    assert "No labelled windows yet" in text and "no latency figures" in text
    assert "No estimate: CBPE needs a binary classifier" in text and "No alert in" in text


def test_prometheus_text_is_the_latest_window(report: Any) -> None:
    text = render_prometheus(report)
    latest = report["windows"][-1]
    samples = {}
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            assert line.endswith(" gauge")
        elif not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert re.fullmatch(r'keel_monitor_\w+\{(\w+="[^"]*",?)+\}', name), name
            samples[name] = float(value)
    base = 'model="adult",version="1"'
    assert samples[f"keel_monitor_window_rows{{{base}}}"] == latest["rows"] == 1000
    age = next(c for c in latest["columns"] if c["column"] == "age")
    assert samples[f'keel_monitor_feature_psi{{{base},feature="age"}}'] == pytest.approx(age["psi"])
    assert samples[f'keel_monitor_feature_drift{{{base},feature="age"}}'] == 1
    assert samples[f"keel_monitor_estimated_accuracy{{{base}}}"] == pytest.approx(
        latest["performance"]["accuracy"], rel=1e-5
    )
    assert samples[f"keel_monitor_realised_accuracy{{{base}}}"] == pytest.approx(0.7)
    assert samples[f'keel_monitor_latency_ms{{{base},quantile="p99"}}'] == 40.0
    assert samples[f"keel_monitor_window_start_timestamp_seconds{{{base}}}"] == T0 + 2 * DAY


def test_prometheus_leaves_out_distances_of_a_window_too_small_to_judge(
    adult_reference: Any, adult_rows: list[dict[str, Any]], write_log: Writer
) -> None:
    few = sorted(adult_rows, key=lambda r: -int(r["age"]))[:5]  # five of the oldest: PSI huge
    directory = write_log(few, start=T0, probabilities=np.full(5, 0.9))
    data = monitor_log(adult_reference, directory, settings=MonitorSettings()).to_dict()
    age = next(c for c in data["columns"] if c["column"] == "age")
    assert data["verdict"] == "not_enough_data" and age["psi"] > 1  # computed, not judged
    text = render_prometheus(data)
    assert 'keel_monitor_enough_data{model="adult",version="1"} 0' in text
    assert "keel_monitor_window_rows" in text
    for gone in ("feature_psi", "feature_js", "feature_wasserstein", "prediction_psi"):
        assert f"keel_monitor_{gone}" not in text, gone
