"""Alert rules: keel.yaml's ``monitor.alerts`` parsed once into typed conditions and sinks.

A rule's ``when:`` is ``QUANTITY OP NUMBER [for N windows]``::

    drift.any_feature.psi > 0.2 for 2 windows   # the largest PSI of any input feature
    drift.age.wasserstein > 0.3                 # one feature (psi, js or wasserstein)
    prediction_drift.psi > 0.2                  # the model's output against the training target
    performance.roc_auc.estimated < 0.80        # CBPE, binary classifiers (accuracy, roc_auc)
    performance.accuracy.realised < 0.8         # from labels fed back (when a window has them)
    latency.p99_ms > 50                         # operational health (when a window has it)
    rows < 100                                  # traffic fell

A quantity is read from one window of the monitoring report (:meth:`Condition.measure`); a
window without it (not enough rows, no labels yet, no latency recorded) has no value, which is
never a breach and breaks a ``for N windows`` streak.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from keel.config.monitor import ALERT_CONDITION_HELP
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.config.monitor import AlertRuleConfig, MonitorConfig

__all__ = [
    "AlertRule",
    "CommandSink",
    "Condition",
    "LogSink",
    "Measure",
    "Quantity",
    "Sink",
    "WebhookSink",
    "parse_condition",
    "parse_duration",
    "realised_metrics",
    "rules_of",
]

DRIFT_METRICS = ("psi", "js", "wasserstein")
PREDICTION_METRICS = ("psi", "js")
ESTIMATED_METRICS = ("accuracy", "roc_auc")
REALISED_METRICS = (
    "accuracy", "roc_auc", "precision", "recall", "f1", "log_loss", "brier", "rmse", "mae", "r2",
)  # fmt: skip
LATENCY_METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_PATTERN = re.compile(
    r"^\s*(?P<path>[A-Za-z_][\w.\-]*)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<number>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)"
    r"(\s+for\s+(?P<windows>\d+)\s+windows?)?\s*$"
)
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_WINDOWS = 100


@dataclass(frozen=True, slots=True)
class Quantity:
    """A monitored quantity: ``family`` (drift, prediction_drift, performance, latency, rows),
    the feature (``any_feature`` or a name; drift only), the metric and, for performance,
    whether it is CBPE's estimate or the realised value."""

    family: Literal["drift", "prediction_drift", "performance", "latency", "rows"]
    metric: str
    feature: str | None = None
    source: Literal["estimated", "realised"] | None = None

    def describe(self) -> str:
        """The quantity as keel.yaml spells it."""
        if self.family == "rows":
            return "rows"
        if self.family == "drift":
            return f"drift.{self.feature}.{self.metric}"
        if self.family == "performance":
            return f"performance.{self.metric}.{self.source}"
        return f"{self.family}.{self.metric}"


@dataclass(frozen=True, slots=True)
class Measure:
    """A quantity's value in one window (and which feature it came from, for any_feature)."""

    value: float
    feature: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """``quantity op threshold``, true in ``windows`` consecutive windows."""

    quantity: Quantity
    op: str
    threshold: float
    windows: int = 1

    def describe(self) -> str:
        """The condition as keel.yaml spells it."""
        tail = f" for {self.windows} windows" if self.windows > 1 else ""
        return f"{self.quantity.describe()} {self.op} {self.threshold:g}{tail}"

    def breached(self, value: float) -> bool:
        """Whether ``value`` breaks the rule."""
        return _OPS[self.op](value, self.threshold)

    def measure(self, window: Mapping[str, Any]) -> Measure | None:
        """The quantity in one window of the report (``WindowReport.to_dict()``), or None."""
        q = self.quantity
        if q.family == "rows":
            return Measure(float(window.get("rows") or 0))
        if q.family == "latency":
            return _number(_get(window, "latency", q.metric))
        if q.family == "performance":
            if q.source == "estimated":
                return _number(_get(window, "performance", q.metric))
            return _number(_realised(window, q.metric))
        if window.get("verdict") == "not_enough_data":
            return None
        if q.family == "prediction_drift":
            return _number(_get(window, "prediction", q.metric))
        columns = window.get("columns") or []
        if q.feature != "any_feature":
            found = [c for c in columns if c.get("column") == q.feature]
            return _number(found[0].get(q.metric), q.feature) if found else None
        values = [(c[q.metric], c["column"]) for c in columns if c.get(q.metric) is not None]
        if not values:
            return None
        pick = min if self.op in ("<", "<=") else max
        value, feature = pick(values, key=lambda v: float(v[0]))
        return Measure(float(value), str(feature))


@dataclass(frozen=True, slots=True)
class LogSink:
    """Write the alert to Keel's log."""

    kind: Literal["log"] = "log"

    def target(self) -> str:
        return "log"


@dataclass(frozen=True, slots=True)
class WebhookSink:
    """POST the alert as JSON to ``url``, signed when ``secret_env`` names a secret."""

    url: str
    secret_env: str | None = None
    attempts: int = 4
    backoff: float = 1.0
    timeout: float = 5.0
    kind: Literal["webhook"] = "webhook"

    def target(self) -> str:
        return self.url


@dataclass(frozen=True, slots=True)
class CommandSink:
    """Run ``argv`` with the alert as JSON on its standard input."""

    argv: tuple[str, ...]
    timeout: float = 10.0
    attempts: int = 1
    backoff: float = 1.0
    kind: Literal["command"] = "command"

    def target(self) -> str:
        return " ".join(self.argv)


Sink = LogSink | WebhookSink | CommandSink


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One parsed rule of ``monitor.alerts``."""

    name: str
    condition: Condition
    severity: Literal["info", "warning", "critical"]
    cooldown: float
    sinks: tuple[Sink, ...]


def parse_duration(text: str, field: str) -> float:
    """Seconds from ``0s``, ``30m``, ``6h``, ``1d``, ``1w``."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ConfigError(f"{field}: '{text}' is not a duration; write 0s, 30m, 6h, 1d or 1w.",
                          field=field)  # fmt: skip
    return float(int(match.group(1)) * _SECONDS[match.group(2)])


def parse_condition(text: str, field: str = "when") -> Condition:
    """A :class:`Condition` from ``when:`` text.

    Raises:
        ConfigError: Not ``QUANTITY OP NUMBER [for N windows]``, an unknown quantity or metric,
            or N outside 1..100; the message names ``field`` and what is accepted.
    """
    match = _PATTERN.match(text)
    if match is None:
        _bad(text, field, "it is not QUANTITY OP NUMBER [for N windows]")
    windows = int(match.group("windows") or 1)
    if not 1 <= windows <= MAX_WINDOWS:
        _bad(text, field, f"'for {windows} windows' must count 1 to {MAX_WINDOWS} windows")
    quantity = _quantity(text, match.group("path"), field)
    return Condition(quantity, match.group("op"), float(match.group("number")), windows)


def rules_of(
    config: MonitorConfig, *, inputs: Sequence[str] | None = None, task: str | None = None
) -> tuple[AlertRule, ...]:
    """The rules of keel.yaml's ``monitor.alerts``, checked against the model when given.

    Raises:
        ConfigError: A bad condition, a feature that is not one of ``inputs``, or a CBPE
            estimate asked of a model that is not a binary classifier.
    """
    return tuple(
        _rule(rule, f"monitor.alerts[{i}]", inputs, task) for i, rule in enumerate(config.alerts)
    )


def _rule(
    rule: AlertRuleConfig, where: str, inputs: Sequence[str] | None, task: str | None
) -> AlertRule:
    field = f"{where}.when"
    condition = parse_condition(rule.when, field)
    q = condition.quantity
    named = q.family == "drift" and q.feature != "any_feature"
    if named and inputs is not None and q.feature not in inputs:
        close = difflib.get_close_matches(str(q.feature), list(inputs), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        msg = (
            f"{field}: '{q.feature}' in '{rule.when}' is not an input of the model; its "
            f"inputs: {', '.join(inputs)} (or write drift.any_feature.{q.metric}).{hint}"
        )
        raise ConfigError(msg, field=field)
    if q.source == "estimated" and task is not None and task != "binary":
        msg = (
            f"{field}: '{rule.when}' asks for CBPE's estimate, which Keel computes for binary "
            f"classifiers only (this model's task is {task}); use performance.{q.metric}.realised."
        )
        raise ConfigError(msg, field=field)
    sinks: list[Sink] = []
    for sink in rule.sinks:
        if sink.webhook is not None:
            w = sink.webhook
            sinks.append(WebhookSink(w.url, w.secret_env, w.attempts, w.backoff, w.timeout))
        elif sink.command is not None:
            c = sink.command
            sinks.append(CommandSink(tuple(c.argv), c.timeout, c.attempts, c.backoff))
        else:
            sinks.append(LogSink())
    return AlertRule(
        name=rule.name,
        condition=condition,
        severity=rule.severity,
        cooldown=parse_duration(rule.cooldown, f"{where}.cooldown"),
        sinks=tuple(sinks),
    )


def _quantity(text: str, path: str, field: str) -> Quantity:
    parts = path.split(".")
    family = parts[0]
    if family == "rows" and len(parts) == 1:
        return Quantity("rows", "rows")
    if family == "drift" and len(parts) >= 3:
        metric, feature = parts[-1], ".".join(parts[1:-1])
        _one_of(text, field, metric, DRIFT_METRICS, "a drift metric")
        return Quantity("drift", metric, feature=feature)
    if family == "prediction_drift" and len(parts) == 2:
        _one_of(text, field, parts[1], PREDICTION_METRICS, "a prediction drift metric")
        return Quantity("prediction_drift", parts[1])
    if family == "performance" and len(parts) == 3:
        metric, source = parts[1], parts[2].replace("realized", "realised")
        if source == "estimated":
            _one_of(text, field, metric, ESTIMATED_METRICS, "an estimated (CBPE) metric")
            return Quantity("performance", metric, source="estimated")
        if source == "realised":
            _one_of(text, field, metric, REALISED_METRICS, "a realised metric")
            return Quantity("performance", metric, source="realised")
        _bad(text, field, f"'{parts[2]}' is neither estimated nor realised")
    if family == "latency" and len(parts) == 2:
        _one_of(text, field, parts[1], LATENCY_METRICS, "a latency figure")
        return Quantity("latency", parts[1])
    _bad(text, field, f"'{path}' is not a monitored quantity")


def _one_of(text: str, field: str, value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        _bad(text, field, f"'{value}' is not {what} (one of {', '.join(allowed)})")


def _bad(text: str, field: str, why: str) -> NoReturn:
    msg = f"{field}: '{text}' is not an alert condition: {why}. Write {ALERT_CONDITION_HELP}."
    raise ConfigError(msg, field=field)


def _get(window: Mapping[str, Any], section: str, key: str) -> Any:
    part = window.get(section)
    return part.get(key) if isinstance(part, Mapping) else None


def realised_metrics(window: Mapping[str, Any]) -> dict[str, Any]:
    """A window's realised metrics (name to value): the report's ``realised.metrics`` (with
    ``{"value", "low", "high"}`` each), empty when the window has too few labels."""
    found: dict[str, Any] = {}
    for holder in (window, window.get("performance") or {}):
        section = holder.get("realised") if isinstance(holder, Mapping) else None
        if not isinstance(section, Mapping) or section.get("status", "ok") != "ok":
            continue
        metrics = section.get("metrics", section)
        for name, value in metrics.items() if isinstance(metrics, Mapping) else ():
            number = value.get("value") if isinstance(value, Mapping) else value
            if name in REALISED_METRICS and number is not None:
                found.setdefault(str(name), number)
    return found


def _realised(window: Mapping[str, Any], metric: str) -> Any:
    return realised_metrics(window).get(metric)


def _number(value: Any, feature: str | None = None) -> Measure | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return Measure(float(value), feature)
