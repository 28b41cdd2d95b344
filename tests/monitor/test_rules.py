"""Alert rules: keel.yaml's monitor.alerts parsed into typed conditions, bad ones refused with
the field and what is accepted, quantities read from report windows, streaks of N windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import keel
from keel.config.monitor import MonitorConfig
from keel.errors import ConfigError
from keel.monitor.alerts import evaluate
from keel.monitor.rules import (
    CommandSink,
    LogSink,
    WebhookSink,
    parse_condition,
    parse_duration,
    rules_of,
)


def window(start: int, *, age: float | None = 0.01, rows: int = 500, **extra: Any) -> Any:
    columns = [] if age is None else [
        {"column": "age", "psi": age, "js": age / 2, "wasserstein": 0.1, "verdict": "stable"},
        {"column": "education", "psi": 0.02, "js": 0.01, "wasserstein": None,
         "verdict": "stable"},
    ]  # fmt: skip
    return {
        "start": f"2024-05-0{start}T00:00:00Z",
        "end": f"2024-05-0{start + 1}T00:00:00Z",
        "rows": rows,
        "verdict": "stable" if rows >= 100 else "not_enough_data",
        "columns": columns,
        "prediction": {"psi": 0.05, "js": 0.02},
        "performance": {"accuracy": 0.84, "accuracy_error": 0.01, "roc_auc": 0.9},
        "last_request": 1_714_521_600.0 + start * 86_400,
        **extra,
    }


def config(*rules: dict[str, Any]) -> MonitorConfig:
    return MonitorConfig.model_validate({"alerts": list(rules)})


@pytest.mark.parametrize(
    ("text", "described"),
    [
        ("drift.any_feature.psi > 0.2 for 2 windows", "drift.any_feature.psi > 0.2 for 2 windows"),
        ("drift.age.wasserstein>=0.3", "drift.age.wasserstein >= 0.3"),
        ("drift.hours.per.week.js > 1e-1", "drift.hours.per.week.js > 0.1"),
        ("prediction_drift.psi > 0.2", "prediction_drift.psi > 0.2"),
        ("performance.roc_auc.estimated < 0.80", "performance.roc_auc.estimated < 0.8"),
        ("performance.accuracy.realized < .8", "performance.accuracy.realised < 0.8"),
        ("latency.p99_ms > 50 for 3 windows", "latency.p99_ms > 50 for 3 windows"),
        ("rows <= 10", "rows <= 10"),
    ],
)
def test_conditions_parse_and_describe(text: str, described: str) -> None:
    assert parse_condition(text).describe() == described


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("drift.any_feature.psi >> 0.2", "not QUANTITY OP NUMBER"),
        ("drift.any_feature.psi > high", "not QUANTITY OP NUMBER"),
        ("drift.any_feature.kl > 0.2", "'kl' is not a drift metric"),
        ("drift.psi > 0.2", "'drift.psi' is not a monitored quantity"),
        ("performance.f1.estimated < 0.5", "'f1' is not an estimated (CBPE) metric"),
        ("performance.accuracy.guessed < 0.5", "'guessed' is neither estimated nor realised"),
        ("latency.p42_ms > 5", "'p42_ms' is not a latency figure"),
        ("drift.age.psi > 0.2 for 0 windows", "must count 1 to 100 windows"),
        ("cpu > 0.2", "'cpu' is not a monitored quantity"),
    ],
)
def test_bad_conditions_name_the_field_and_what_is_accepted(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_condition(text, "monitor.alerts[0].when")
    message = caught.value.message
    assert message.startswith("monitor.alerts[0].when:") and why in message
    assert "drift.any_feature.METRIC" in message  # what is accepted
    assert caught.value.field == "monitor.alerts[0].when"


def test_rules_become_typed_with_sinks_and_cooldown() -> None:
    cfg = config(
        {"name": "age", "when": "drift.age.psi > 0.2", "severity": "critical", "cooldown": "6h",
         "sinks": ["log", {"webhook": {"url": "https://hooks.example/k", "secret_env": "S"}},
                   {"command": {"argv": ["./page.sh", "ml"], "timeout": 3}}]},
        {"name": "auc", "when": "performance.roc_auc.estimated < 0.8"},
    )  # fmt: skip
    age, auc = rules_of(cfg, inputs=["age", "education"], task="binary")
    assert age.severity == "critical" and age.cooldown == 6 * 3600
    assert age.sinks == (
        LogSink(),
        WebhookSink("https://hooks.example/k", "S"),
        CommandSink(("./page.sh", "ml"), timeout=3.0),
    )
    assert auc.sinks == (LogSink(),) and auc.cooldown == 3600 and auc.severity == "warning"
    assert parse_duration("0s", "x") == 0 and parse_duration("2w", "x") == 14 * 86_400


def test_rules_are_checked_against_the_model() -> None:
    cfg = config({"name": "x", "when": "drift.salary.psi > 0.2"})
    with pytest.raises(ConfigError, match=r"monitor.alerts\[0\].when: 'salary' .* inputs: age"):
        rules_of(cfg, inputs=["age"], task="binary")
    cfg = config({"name": "a", "when": "rows < 5"}, {"name": "b",
                 "when": "performance.accuracy.estimated < 0.8"})  # fmt: skip
    with pytest.raises(ConfigError, match=r"alerts\[1\].when: .*binary classifiers only"):
        rules_of(cfg, inputs=["age"], task="regression")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"name": "x", "when": "drift.age.psi >> 1"}], "monitor.alerts.0.when"),
        ([{"name": "x", "when": "rows < 1", "severity": "fatal"}], "monitor.alerts.0.severity"),
        ([{"name": "x", "when": "rows < 1", "cooldown": "soon"}], "monitor.alerts.0.cooldown"),
        ([{"name": "x", "when": "rows < 1", "sinks": [{"webhook": {"url": "ftp://x"}}]}],
         "monitor.alerts.0.sinks.0.webhook.url"),
        ([{"name": "x", "when": "rows < 1", "sinks": [{}]}], "a sink is one of"),
        ([{"name": "x", "when": "rows < 1"}, {"name": "x", "when": "rows < 2"}],
         "alert rule names must be unique"),
    ],
)  # fmt: skip
def test_bad_keel_yaml_is_a_config_error(
    tmp_path: Path, rules: list[dict[str, Any]], message: str
) -> None:
    root = keel.init(tmp_path / "p", example="adult")
    data = yaml.safe_load((root / "keel.yaml").read_text())
    data["monitor"]["alerts"] = rules
    (root / "keel.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        keel.load_config(root)


def test_quantities_read_from_windows() -> None:
    realised = {"status": "ok", "labelled": 300, "metrics": {"accuracy": {"value": 0.7}}}
    w = window(1, age=0.3, latency={"p99_ms": 61.0}, realised=realised)
    read = {
        "drift.any_feature.psi > 0.2": (0.3, "age"),
        "drift.any_feature.psi < 0.2": (0.02, "education"),
        "drift.education.js > 0": (0.01, "education"),
        "prediction_drift.psi > 0": (0.05, None),
        "performance.accuracy.estimated < 0.9": (0.84, None),
        "performance.accuracy.realised < 0.8": (0.7, None),
        "latency.p99_ms > 50": (61.0, None),
        "rows < 10": (500.0, None),
    }
    for text, (value, feature) in read.items():
        measure = parse_condition(text).measure(w)
        assert measure is not None and (measure.value, measure.feature) == (value, feature), text
    assert parse_condition("latency.p50_ms > 5").measure(w) is None  # not recorded
    assert parse_condition("performance.roc_auc.realised < 0.8").measure(w) is None  # no labels
    few = {"status": "not_enough_labels", "metrics": {"accuracy": {"value": 0.1}}}
    assert parse_condition("performance.accuracy.realised < 0.8").measure(
        window(1, realised=few)
    ) is None  # fmt: skip
    small = window(2, age=0.9, rows=20)  # not enough data: never a drift value
    assert parse_condition("drift.age.psi > 0.2").measure(small) is None
    assert parse_condition("rows < 100").measure(small) is not None


def test_for_n_windows_needs_consecutive_breaches() -> None:
    cfg = config(
        {"name": "one", "when": "drift.age.psi > 0.2"},
        {"name": "two", "when": "drift.age.psi > 0.2 for 2 windows"},
    )
    rules = rules_of(cfg)
    # breached in 2, 4, 5, 6; window 3 is below; the gap at 7 (too few rows) breaks the streak
    ages = {1: 0.01, 2: 0.5, 3: 0.05, 4: 0.4, 5: 0.6, 6: 0.3}
    windows = [window(d, age=a) for d, a in ages.items()]
    windows.append(window(7, age=0.9, rows=10))
    windows.append(window(8, age=0.9))
    firings = evaluate(rules, windows)
    one = [(f.start[8:10], f.end[8:10]) for f in firings if f.rule.name == "one"]
    two = [(f.start[8:10], f.end[8:10]) for f in firings if f.rule.name == "two"]
    assert one == [("02", "03"), ("04", "05"), ("05", "06"), ("06", "07"), ("08", "09")]
    assert two == [("04", "06"), ("05", "07")]
    span = next(f for f in firings if f.rule.name == "two")
    assert [w["value"] for w in span.windows] == [0.4, 0.6]
    assert span.message == "drift.age.psi = 0.6 > 0.2 in 2 consecutive windows"
