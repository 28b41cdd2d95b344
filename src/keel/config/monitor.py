"""The ``monitor:`` section of keel.yaml: windows, drift thresholds per feature, FDR control."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from keel.config.base import Frozen

__all__ = [
    "ALERT_CONDITION_HELP",
    "DEFAULT_LEVELS",
    "AlertRuleConfig",
    "AlertSinkConfig",
    "CommandSinkConfig",
    "FeatureDriftConfig",
    "FeedbackConfig",
    "MonitorConfig",
    "PSIThresholds",
    "SloConfig",
    "WebhookSinkConfig",
]

#: The warn and alert levels of each drift metric when keel.yaml names none.
DEFAULT_LEVELS = {"psi": (0.1, 0.25), "js": (0.1, 0.2), "wasserstein": (0.1, 0.5)}
_WINDOW = re.compile(r"^\s*\d+\s*(mo|months?|s|m|h|d|w|rows?)\s*$")
_WINDOW_HELP = (
    "a positive number and a unit: 30m, 6h, 1d, 1w (time), 1mo (UTC calendar months) or "
    "1000rows (row count)"
)
_COLUMN = re.compile(r"^[^\x00-\x1f]{1,200}$")


class PSIThresholds(Frozen):
    """PSI verdict thresholds: below ``warn`` is stable, at or above ``alert`` is drift."""

    warn: float = Field(
        default=0.1,
        gt=0,
        description="PSI at or above which a feature's verdict is moderate.",
    )
    alert: float = Field(
        default=0.25,
        gt=0,
        description="PSI at or above which a feature's verdict is drift (keel monitor exits 1).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> PSIThresholds:
        if self.warn > self.alert:
            raise ValueError(f"warn ({self.warn}) must not exceed alert ({self.alert})")
        return self


class FeatureDriftConfig(Frozen):
    """One feature's drift rule: which effect size decides, and its levels."""

    metric: Literal["psi", "js", "wasserstein"] = Field(
        default="psi",
        description="The effect size that decides: psi, js (Jensen-Shannon distance, base 2) or "
        "wasserstein (W1 in reference standard deviations; numeric features only).",
    )
    warn: float | None = Field(
        default=None,
        gt=0,
        description="Effect at or above which a significant shift is moderate (default: psi "
        "0.1, js 0.1, wasserstein 0.1).",
    )
    alert: float | None = Field(
        default=None,
        gt=0,
        description="Effect at or above which a significant shift is drift (default: psi 0.25, "
        "js 0.2, wasserstein 0.5).",
    )
    ignore: bool = Field(default=False, description="Leave this feature out of drift monitoring.")

    def levels(self) -> tuple[float, float]:
        """``(warn, alert)`` with the metric's defaults filled in."""
        warn, alert = DEFAULT_LEVELS[self.metric]
        return (self.warn or warn, self.alert or alert)

    @model_validator(mode="after")
    def _ordered(self) -> FeatureDriftConfig:
        warn, alert = self.levels()
        if warn > alert:
            raise ValueError(f"warn ({warn}) must not exceed alert ({alert})")
        return self


class SloConfig(Frozen):
    """Service level objectives of a served model, judged per monitoring window."""

    p50_ms: float | None = Field(default=None, gt=0, description="Median latency at most this.")
    p95_ms: float | None = Field(default=None, gt=0, description="p95 latency at most this.")
    p99_ms: float | None = Field(default=None, gt=0, description="p99 latency at most this.")
    error_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of requests answered 5xx (model or server failures; never 4xx "
        "client mistakes) at most this.",
    )

    def targets(self) -> dict[str, float]:
        """The objectives set, name to bound."""
        return {k: float(v) for k, v in self.model_dump().items() if v is not None}


_DELAY = re.compile(r"^\s*\d+\s*(s|m|h|d|w)\s*$")


class FeedbackConfig(Frozen):
    """Delayed labels: how they join to predictions and what a second label for one does."""

    key: list[str] = Field(
        default_factory=list,
        description="Input columns that identify a prediction, for labels sent with a key "
        "instead of a request id (e.g. [transaction_id]); empty: request ids only.",
    )
    on_duplicate: Literal["reject", "replace"] = Field(
        default="reject",
        description="A second label for the same prediction: reject it (the first stays) or "
        "replace the first (kept in the store as replaced).",
    )
    max_delay: str = Field(
        default="30d",
        description="How late a label may come: request ids are looked up in the prediction "
        "log files of this span before now (30m, 12h, 30d, 2w).",
    )

    @field_validator("max_delay")
    @classmethod
    def _delay(cls, value: str) -> str:
        if not _DELAY.match(value.lower()) or int(re.sub(r"\D", "", value)) <= 0:
            raise ValueError(
                f"'{value}' is not a delay; write a positive number and a unit: 30m, 12h, 30d, 2w"
            )
        return value


# -- alerts (keel monitor run): rules over monitored quantities, and where their alerts go ------

_CONDITION = re.compile(
    r"^\s*[A-Za-z_][\w.\-]*\s*(<=|>=|<|>)\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
    r"(\s+for\s+\d+\s+windows?)?\s*$"
)
_DURATION = re.compile(r"^\s*\d+\s*(s|m|h|d|w)\s*$")
#: What an alert rule's ``when:`` accepts (keel.monitor.rules parses it).
ALERT_CONDITION_HELP = (
    "QUANTITY OP NUMBER [for N windows] with OP one of > >= < <=, e.g. "
    "'drift.any_feature.psi > 0.2 for 2 windows'; QUANTITY is drift.any_feature.METRIC or "
    "drift.FEATURE.METRIC (METRIC: psi, js, wasserstein), prediction_drift.psi or "
    "prediction_drift.js, performance.METRIC.estimated (accuracy, roc_auc: CBPE) or "
    "performance.METRIC.realised (labelled windows), latency.p50_ms/p90_ms/p95_ms/p99_ms, or rows"
)


class WebhookSinkConfig(Frozen):
    """POST each alert as JSON, signed with HMAC-SHA256 when ``secret_env`` names a secret."""

    url: str = Field(description="The http(s) URL to POST alerts to.")
    secret_env: str | None = Field(
        default=None,
        description="Environment variable holding the signing secret: the Keel-Signature "
        "header is sha256=<hex HMAC-SHA256 of the body>.",
    )
    attempts: int = Field(default=4, ge=1, le=20, description="Attempts before giving up.")
    backoff: float = Field(
        default=1.0,
        gt=0,
        le=300,
        description="Seconds before the 2nd attempt; doubled after each failure.",
    )
    timeout: float = Field(default=5.0, gt=0, le=60, description="Seconds per attempt.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http:// or https:// URL")
        return value


class CommandSinkConfig(Frozen):
    """Run a program with the alert as JSON on its standard input."""

    argv: list[str] = Field(
        min_length=1, description="The program and its arguments (no shell): [./page.sh, ml]."
    )
    timeout: float = Field(default=10.0, gt=0, le=600, description="Seconds it may run.")
    attempts: int = Field(default=1, ge=1, le=10, description="Attempts before giving up.")
    backoff: float = Field(
        default=1.0, gt=0, le=300, description="Seconds before a retry; doubled each time."
    )


class AlertSinkConfig(Frozen):
    """One destination of a rule's alerts: ``log``, ``{webhook: ...}`` or ``{command: ...}``."""

    log: bool = Field(default=False, description="Write the alert to Keel's log (stderr).")
    webhook: WebhookSinkConfig | None = Field(default=None, description="POST it to a URL.")
    command: CommandSinkConfig | None = Field(default=None, description="Run a program.")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        return {"log": True} if value == "log" else value

    @model_validator(mode="after")
    def _one(self) -> AlertSinkConfig:
        if sum((self.log, self.webhook is not None, self.command is not None)) != 1:
            raise ValueError(
                "a sink is one of: log, {webhook: {url, secret_env}}, {command: {argv: [...]}}"
            )
        return self


class AlertRuleConfig(Frozen):
    """One alert rule: a condition on a monitored quantity, its severity, cooldown and sinks."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][\w.\-]{0,99}$",
        description="The rule's name (letters, digits, _ . -): alerts and events carry it.",
    )
    when: str = Field(description=f"The condition: {ALERT_CONDITION_HELP}.")
    severity: Literal["info", "warning", "critical"] = Field(
        default="warning", description="info, warning or critical."
    )
    cooldown: str = Field(
        default="1h",
        description="After an alert, the same rule on the same model, version and role stays "
        "quiet for this long (in the log's time: 0s, 30m, 6h, 1d).",
    )
    sinks: list[AlertSinkConfig] = Field(
        default_factory=lambda: ["log"],
        validate_default=True,
        description="Where alerts go: log, {webhook: {url, secret_env}}, {command: {argv}}.",
    )

    @field_validator("when")
    @classmethod
    def _when(cls, value: str) -> str:
        if not _CONDITION.match(value):
            raise ValueError(f"'{value}' is not an alert condition; write {ALERT_CONDITION_HELP}")
        return value

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        if not _DURATION.match(value.lower()):
            raise ValueError(f"'{value}' is not a duration; write 0s, 30m, 6h, 1d or 1w")
        return value


class MonitorConfig(Frozen):
    """Drift and performance monitoring of served predictions against the training statistics."""

    psi: PSIThresholds = Field(default_factory=PSIThresholds)
    min_rows: int = Field(
        default=100,
        ge=1,
        description="A window with fewer rows than this says not_enough_data: never drift or "
        "stable.",
    )
    fdr: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Benjamini-Hochberg false discovery rate across the features of a window: "
        "a feature drifts only if its adjusted p-value is at most this and its effect reaches "
        "alert.",
    )
    window: str | None = Field(
        default=None,
        description="Default window of keel monitor: 1d, 6h, 1mo (UTC calendar months), "
        "1000rows, ... (none: the whole log as one window). --window overrides.",
    )
    time_column: str | None = Field(
        default=None,
        description="A column of the training data that clients send with each row and that "
        "holds its event time (a date or ISO time as text, or a unix time: seconds, or the "
        "unit schema.yaml gives the column, e.g. unit: ms; the server logs it as sent, even "
        "when the model does not read it): time and 1mo windows are cut by it instead "
        "of the request time (as NannyML's timestamp_column). Rows whose time cannot be parsed "
        "are counted and reported, never in a window. Event-time windows read the logged rows "
        "(stored hourly sketches are by request time).",
    )
    step: str | None = Field(
        default=None,
        description="Slide windows by this (1d windows every 6h); it must divide the window. "
        "None: tumbling windows.",
    )
    features: dict[str, FeatureDriftConfig] = Field(
        default_factory=dict,
        description="Per-feature drift rules (metric, warn, alert, ignore); other features use "
        "psi with the psi thresholds.",
    )
    prediction: FeatureDriftConfig | None = Field(
        default=None,
        description="The drift rule of the model's output (predicted labels or values against "
        "the training target); default: psi with the psi thresholds.",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Delete prediction-log days (compacted Parquet and JSON Lines) that ended "
        "more than this many days ago, at keel monitor compact and keel monitor; none: keep "
        "everything.",
    )
    slo: SloConfig = Field(
        default_factory=SloConfig,
        description="Latency and error objectives (p50_ms, p95_ms, p99_ms, error_rate), "
        "reported as met or breached per window by keel monitor; none set: not judged.",
    )
    stats_retention_days: int = Field(
        default=30,
        ge=1,
        description="Servers delete their per-version traffic counts (requests, errors, "
        "latency, log drops) older than this many days.",
    )

    feedback: FeedbackConfig = Field(
        default_factory=FeedbackConfig,
        description="Delayed labels (keel feedback, POST /v1/models/NAME/feedback): join key, "
        "duplicates, how late they may come.",
    )

    alerts: list[AlertRuleConfig] = Field(
        default_factory=list,
        description="Alert rules that keel monitor run evaluates per window: name, when, "
        "severity, cooldown, sinks.",
    )

    @model_validator(mode="after")
    def _alert_names(self) -> MonitorConfig:
        names = [rule.name for rule in self.alerts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"alert rule names must be unique; repeated: {', '.join(twice)}")
        return self

    @field_validator("time_column")
    @classmethod
    def _time_column(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not _COLUMN.match(value)):
            raise ValueError(f"{value!r} is not a column name")
        return value

    @field_validator("window", "step")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None and not _WINDOW.match(value.lower()):
            raise ValueError(f"'{value}' is not a window; write {_WINDOW_HELP}")
        return value
